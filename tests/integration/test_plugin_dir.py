"""Operator plugins: a router file dropped into a directory is loaded by twistd and routes calls."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.harness import (
    LOOPBACK,
    ProxyProcess,
    Sipp,
    explain,
    free_port,
    proxy_config,
    run_sipp_pair,
    send_options,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

FORWARDING_PLUGIN = '''
"""Sends every call whose Request-URI user starts with "service" to a fixed callee."""
from twisted.plugin import IPlugin
from zope.interface import implementer

from sipgate_proxy.interfaces import IRouter, IRouterFactory
from sipgate_proxy.routing.decisions import Forward, Target


@implementer(IRouter)
class ToCallee:
    def __init__(self, hop):
        self.hop = hop

    def route(self, request, context):
        if (request.uri.user or "").startswith("service"):
            return Forward((Target(request.uri_text, self.hop),))
        return None


@implementer(IPlugin, IRouterFactory)
class Factory:
    name = "tocallee"

    def make_router(self, config, reactor):
        return ToCallee(config["next_hop"])


tocallee = Factory()
'''


def _config(proxy_port: int, callee_port: int, plugins: Path) -> str:
    text = proxy_config([("udp", proxy_port)], [])
    text = text.replace('routers = ["static"]', f'routers = ["blocklist", "tocallee"]\nplugin_dirs = ["{plugins}"]')
    return text + (
        "\n[routing.blocklist]\n"
        'prefixes = ["+49900"]\n'
        "\n[routing.tocallee]\n"
        f'next_hop = "sip:{LOOPBACK}:{callee_port}"\n'
    )


def test_dropped_plugins_are_loaded_by_twistd_and_route_calls(
    tmp_path: Path, start_proxy: Callable[..., ProxyProcess], sipp: Callable[..., Sipp]
) -> None:
    """The shipped example (block list) and a test-written router load from a directory; calls go through them."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    shutil.copy(ROOT / "etc" / "plugins" / "blocklist_router.py", plugins)
    (plugins / "tocallee_router.py").write_text(FORWARDING_PLUGIN)
    proxy_port, callee_port = free_port(), free_port()
    proxy = start_proxy(_config(proxy_port, callee_port, plugins))

    # the block list answers a premium number itself
    blocked = send_options(proxy_port, "udp", timeout=2.0, uri="sip:+4990012345@127.0.0.1:5999")
    assert blocked is not None and blocked.status == 403, explain(proxy)

    # the forwarding plugin sends the calls to the callee, which is not the Request-URI's host
    uas = sipp("uas_call.xml", name="callee", transport="udp", local_port=callee_port, calls=20)
    uac = sipp(
        "uac_call.xml",
        name="caller",
        transport="udp",
        remote=(LOOPBACK, free_port()),
        send_to=(LOOPBACK, proxy_port),
        calls=20,
        rate=20,
    )
    caller, callee = run_sipp_pair(uac, uas)
    assert (caller.returncode, caller.successful, caller.failed) == (0, 20, 0), explain(proxy, caller, callee)
    invites = proxy.wait_for_txn_lines(20, "INVITE", status="200")
    assert all(line.get("decision", "").startswith("tocallee:forward") for line in invites), invites
