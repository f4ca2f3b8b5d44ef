"""Reloading the routing tables without a restart (SIGHUP and ProxyService.reload)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from twisted.logger import LogLevel, globalLogPublisher

from sipgate_proxy.config import load_config
from sipgate_proxy.service import ProxyService
from tests.test_service import CALLER, FakeUDPTransport, Reactor

INVITE = (
    b"MESSAGE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.5:5061;branch=z9hG4bK{n}\r\n"
    b"Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a\r\nTo: <sip:bob@example.com>\r\n"
    b"Call-ID: reload-{n}\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
)

BASE = """
[[listen]]
transport = "udp"
address = "127.0.0.1"
port = 5060

[log]
level = "warn"

[routing]
routers = {routers}
plugin_dirs = {plugin_dirs}

[routing.static]
routes = [{{ match = "^sip:bob@", next_hop = "sip:192.0.2.{host}:5070" }}]
"""

STATEFUL_PLUGIN = """
from twisted.plugin import IPlugin
from zope.interface import implementer
from sipgate_proxy.interfaces import IRouter, IRouterFactory

@implementer(IRouter)
class Router:
    def __init__(self, marker, journal):
        self.marker = marker
        self.journal = journal
        self.health = {{}}
    def note(self, *words):
        with open(self.journal, "a") as handle:
            handle.write(" ".join(words) + "\\n")
    def route(self, request, context):
        return None
    def attach(self, sender):
        self.note("attach", self.marker)
    def take_over(self, previous):
        self.health = previous.health
        self.note("take_over", self.marker, previous.marker)
    def stop(self):
        self.note("stop", self.marker)

@implementer(IPlugin, IRouterFactory)
class Factory:
    name = "stateful"
    def make_router(self, config, reactor):
        return Router(config["marker"], config.path("journal.txt"))

stateful = Factory()
"""


def write(path: Path, host: int, routers: str = '["static"]', plugin_dirs: str = "[]", extra: str = "") -> None:
    path.write_text(BASE.format(host=host, routers=routers, plugin_dirs=plugin_dirs) + extra)


class Proxy:
    def __init__(self, path: Path) -> None:
        self.reactor = Reactor()
        self.service = ProxyService(load_config(str(path)), self.reactor)
        self.service.startService()
        self.wire = FakeUDPTransport()
        self.reactor.udpPorts[0][1].makeConnection(self.wire)
        self.count = 0

    def next_hop(self) -> tuple[str, int]:
        self.count += 1
        self.wire.written.clear()
        self.reactor.udpPorts[0][1].datagramReceived(INVITE.replace(b"{n}", str(self.count).encode()), CALLER)
        forwarded = [addr for data, addr in self.wire.written if data.startswith(b"MESSAGE ")]
        assert len(forwarded) == 1
        return forwarded[0]


def test_reload_switches_routes(tmp_path: Path) -> None:
    """After the file changes, reload() makes new requests follow the new tables."""
    path = tmp_path / "proxy.toml"
    write(path, 10)
    proxy = Proxy(path)
    assert proxy.next_hop() == ("192.0.2.10", 5070)
    write(path, 11)
    assert proxy.service.reload() is True
    assert proxy.next_hop() == ("192.0.2.11", 5070)


def test_reload_applies_new_dns_names_and_keeps_the_cache_otherwise(tmp_path: Path) -> None:
    """A changed [dns] table takes effect for new lookups; a reload that leaves [dns]
    alone keeps the server locator (and what it has cached)."""
    path = tmp_path / "proxy.toml"

    def write_named(address: str) -> None:
        text = BASE.format(host=10, routers='["static"]', plugin_dirs="[]")
        text = text.replace("sip:192.0.2.10:5070", "sip:gw.example.net:5070")
        path.write_text(text + f'\n[dns]\nmode = "hosts"\n[dns.hosts]\n"gw.example.net" = "{address}"\n')

    write_named("192.0.2.20")
    proxy = Proxy(path)
    assert proxy.next_hop() == ("192.0.2.20", 5070)
    locator = proxy.service.locator
    write_named("192.0.2.20")  # reloaded with the same [dns]
    assert proxy.service.reload() is True
    assert proxy.service.locator is locator
    write_named("192.0.2.21")
    assert proxy.service.reload() is True
    assert proxy.next_hop() == ("192.0.2.21", 5070)


def test_failed_reload_keeps_the_old_tables_and_says_why(tmp_path: Path) -> None:
    """A reload whose config is invalid changes nothing and logs the file, key and reason."""
    path = tmp_path / "proxy.toml"
    write(path, 10)
    proxy = Proxy(path)
    path.write_text(path.read_text().replace('next_hop = "sip:192.0.2.10:5070"', 'next_hop = "mailto:x"'))
    errors: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_level") == LogLevel.error:
            errors.append(str(event.get("error")))

    globalLogPublisher.addObserver(observe)
    try:
        assert proxy.service.reload() is False
    finally:
        globalLogPublisher.removeObserver(observe)
    assert proxy.next_hop() == ("192.0.2.10", 5070)
    assert any(str(path) in e and "routing.static.routes[0].next_hop" in e for e in errors), errors


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Any:
    directory = tmp_path / "plugins"
    directory.mkdir()
    (directory / "stateful_router.py").write_text(STATEFUL_PLUGIN.format())
    yield directory
    for name in [m for m in sys.modules if m.endswith(".stateful_router")]:
        del sys.modules[name]


def _calls(tmp_path: Path) -> list[tuple[str, ...]]:
    return [tuple(line.split()) for line in (tmp_path / "journal.txt").read_text().splitlines()]


def test_routers_are_attached_taken_over_and_stopped(tmp_path: Path, plugin_dir: Path) -> None:
    """A stateful router is attached at start; on reload its successor takes over its state, then it stops."""
    path = tmp_path / "proxy.toml"
    table = '\n[routing.stateful]\nmarker = "{}"\n'
    write(path, 10, '["stateful", "static"]', f'["{plugin_dir}"]', table.format("one"))
    proxy = Proxy(path)
    first = proxy.service.router.get("stateful")
    first.health["gw1"] = "down"
    write(path, 10, '["stateful", "static"]', f'["{plugin_dir}"]', table.format("two"))
    assert proxy.service.reload() is True
    second = proxy.service.router.get("stateful")
    assert second.health == {"gw1": "down"}
    assert _calls(tmp_path) == [("attach", "one"), ("take_over", "two", "one"), ("attach", "two"), ("stop", "one")]


def test_reload_can_drop_state(tmp_path: Path, plugin_dir: Path) -> None:
    """reload(keep_state=False) (or routing.keep_state_on_reload = false) starts routers afresh."""
    path = tmp_path / "proxy.toml"
    table = '\n[routing.stateful]\nmarker = "{}"\n'
    write(path, 10, '["stateful", "static"]', f'["{plugin_dir}"]', table.format("one"))
    proxy = Proxy(path)
    proxy.service.router.get("stateful").health["gw1"] = "down"
    assert proxy.service.reload(keep_state=False) is True
    assert proxy.service.router.get("stateful").health == {}
