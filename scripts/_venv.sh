# Sourced by scripts/run and scripts/test: make .venv and install the package.
# $1: pip extras to install ("" or "test").
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
extras="${1:-}"
stamp="$VENV/.installed-${extras:-base}"
# reinstall when setup.cfg changed since the last install
if [ ! -e "$stamp" ] || [ "$ROOT/setup.cfg" -nt "$stamp" ]; then
    "$VENV/bin/pip" install -q --upgrade pip >/dev/null
    if [ -n "$extras" ]; then
        "$VENV/bin/pip" install -q -e "$ROOT[$extras]"
    else
        "$VENV/bin/pip" install -q -e "$ROOT"
    fi
    touch "$stamp"
fi
# twistd finds plugins through twisted.plugins; refresh the dropin cache
"$VENV/bin/python" -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))" 2>/dev/null || true
