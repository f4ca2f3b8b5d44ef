"""SIGHUP reloads the routing tables of a running twistd without dropping anything."""

from __future__ import annotations

import os
import shutil
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.harness import LOOPBACK, ProxyProcess, explain, free_port, proxy_config, send_options, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BLOCKED = "sip:+4990012345@127.0.0.1:5999"


def _blocking_config(port: int, plugins: Path, prefix: str) -> str:
    text = proxy_config([("udp", port)], [])
    text = text.replace('routers = ["static"]', f'routers = ["blocklist"]\nplugin_dirs = ["{plugins}"]')
    return text + f'\n[routing.blocklist]\nprefixes = ["{prefix}"]\n'


def test_sighup_swaps_routes_and_a_bad_file_changes_nothing(
    tmp_path: Path, start_proxy: Callable[..., ProxyProcess]
) -> None:
    """After SIGHUP a new table applies; a later SIGHUP with a broken file keeps it and logs why."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    shutil.copy(ROOT / "etc" / "plugins" / "blocklist_router.py", plugins)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind((LOOPBACK, 0))
    sink.settimeout(5)
    port = free_port()
    first = proxy_config([("udp", port)], [(".", f"sip:{LOOPBACK}:{sink.getsockname()[1]}")])
    proxy = start_proxy(first)
    try:
        # before: the static route forwards the request to the sink
        send_options(port, "udp", timeout=0.5, uri=BLOCKED)
        data, _ = sink.recvfrom(65535)
        assert data.startswith(b"OPTIONS sip:+4990012345@")

        proxy.config_path.write_text(_blocking_config(port, plugins, "+49900"))
        os.kill(proxy.pid, signal.SIGHUP)
        wait_until(lambda: "routing reloaded" in proxy.log_text(), 10, what="the reload log line")
        answer = send_options(port, "udp", timeout=2.0, uri=BLOCKED)
        assert answer is not None and answer.status == 403, explain(proxy)

        proxy.config_path.write_text(_blocking_config(port, plugins, "+49900").replace("prefixes", "prefixez"))
        os.kill(proxy.pid, signal.SIGHUP)
        wait_until(lambda: "reload failed" in proxy.log_text(), 10, what="the failed reload log line")
        assert "routing.blocklist.prefixez" in proxy.log_text()
        answer = send_options(port, "udp", timeout=2.0, uri=BLOCKED)
        assert answer is not None and answer.status == 403, explain(proxy)
        assert proxy.process is not None and proxy.process.poll() is None
    finally:
        sink.close()
