"""The proxy as operators start it: twistd lists it, bad configs stop it with one line."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _twistd(twistd_binary: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(twistd_binary), *args], cwd=cwd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


def test_twistd_help_lists_the_plugin(twistd_binary: Path, tmp_path: Path) -> None:
    """`twistd --help` names the sipgate-proxy service maker (the plugin is installed and found)."""
    result = _twistd(twistd_binary, "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "sipgate-proxy" in result.stdout


@pytest.mark.parametrize(
    ("config", "key", "expected"),
    [
        ("[timers]\nt1 = 0\n", "timers.t1", "expected a number from 0.01"),
        ("[proxy]\nrecord_route = 1\n", "proxy.record_route", "expected true or false"),
        ("[proxy]\ncolour = 'blue'\n", "proxy.colour", "unknown key"),
        ("[[listen]]\ntransport = 'sctp'\n", "listen[0].transport", "expected one of udp, tcp"),
        ("[routing]\nrouters = ['nope']\n", "routing.routers", "unknown router 'nope'"),
        (
            "[routing.static]\nroutes = [{ match = '(', next_hop = 'sip:192.0.2.1' }]\n",
            "routing.static.routes[0].match",
            "not a valid regular expression",
        ),
        ("[timers\n", "(syntax)", "not valid TOML"),
    ],
    ids=["range", "type", "unknown-key", "transport", "router", "router-table", "syntax"],
)
def test_bad_config_stops_twistd_with_one_line(
    twistd_binary: Path, tmp_path: Path, config: str, key: str, expected: str
) -> None:
    """A wrong config makes twistd exit non-zero with one stderr line naming the file, the key and the fault."""
    path = tmp_path / "bad.toml"
    path.write_text(config)
    result = _twistd(twistd_binary, "-n", "--pidfile=", "sipgate-proxy", "--config", str(path), cwd=tmp_path)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0]
    assert f": {key}: " in lines[0]
    assert expected in lines[0]


def test_missing_config_file_is_named(twistd_binary: Path, tmp_path: Path) -> None:
    """A config path that does not exist is reported with that path."""
    path = tmp_path / "nowhere.toml"
    result = _twistd(twistd_binary, "-n", "--pidfile=", "sipgate-proxy", "--config", str(path), cwd=tmp_path)
    assert result.returncode != 0
    assert str(path) in result.stderr and "cannot read" in result.stderr


def test_shipped_config_is_valid() -> None:
    """etc/sipgate-proxy.toml, the config scripts/run uses, loads without error."""
    from sipgate_proxy.config import load_config

    config = load_config(str(ROOT / "etc" / "sipgate-proxy.toml"))
    assert [(lst.transport, lst.port) for lst in config.listeners] == [("udp", 5060), ("tcp", 5060)]


def test_busy_port_stops_twistd_with_one_line(twistd_binary: Path, tmp_path: Path) -> None:
    """A listen address already in use stops the start with a line naming the listener, not a traceback."""
    import socket

    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", 0))
    port = blocker.getsockname()[1]
    try:
        path = tmp_path / "busy.toml"
        path.write_text(f'[[listen]]\ntransport = "udp"\naddress = "127.0.0.1"\nport = {port}\n')
        result = _twistd(twistd_binary, "-n", "--pidfile=", "sipgate-proxy", "--config", str(path), cwd=tmp_path)
    finally:
        blocker.close()
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"listen[0]: cannot listen on udp 127.0.0.1:{port}" in output
    assert "Traceback" not in output
