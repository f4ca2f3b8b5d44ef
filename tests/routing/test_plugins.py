"""Router discovery through twisted.plugin: the package's own plugins and operators' plugin directories."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from sipgate_proxy.config import ConfigError, parse_config
from sipgate_proxy.routing.chain import RoutingChain
from sipgate_proxy.routing.decisions import Forward, Reject, RequestContext
from sipgate_proxy.routing.plugins import build_chain, find_factories
from sipgate_proxy.routing.static import StaticRouter, StaticRouterFactory
from sipgate_proxy.sip.message import Request
from sipgate_proxy.sip.parser import parse_datagram

DENY = """
from twisted.plugin import IPlugin
from zope.interface import implementer

from sipgate_proxy.interfaces import IRouter, IRouterFactory
from sipgate_proxy.routing.decisions import Reject


@implementer(IRouter)
class DenyRouter:
    def __init__(self, reason):
        self.reason = reason

    def route(self, request, context):
        return Reject(403, self.reason)


@implementer(IPlugin, IRouterFactory)
class DenyFactory:
    name = "{name}"

    def make_router(self, config, reactor):
        return DenyRouter(config.get("reason", "Forbidden by plugin"))


deny = DenyFactory()
"""


def request(uri: str = "sip:bob@example.com") -> Request:
    message = parse_datagram(
        (
            f"INVITE {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 192.0.2.5:5061;branch=z9hG4bKplug1\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:alice@example.com>;tag=a1\r\n"
            f"To: <{uri}>\r\n"
            f"Call-ID: plugin-1\r\n"
            f"CSeq: 1 INVITE\r\n"
            f"Content-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(message, Request)
    return message


def context() -> RequestContext:
    return RequestContext("udp", "192.0.2.5", 5061, 0.0)


def plugin_dir(tmp_path: Path, files: dict[str, str]) -> str:
    directory = tmp_path / "plugins"
    directory.mkdir()
    for name, text in files.items():
        (directory / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return str(directory)


def config_error(*args: object) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        if len(args) == 1:
            find_factories(args[0])  # type: ignore[arg-type]
        else:
            build_chain(*args)  # type: ignore[arg-type]
    return info.value


# -- the package's own plugins ---------------------------------------------------


def test_builtin_static_factory_is_found_through_twisted_plugin() -> None:
    """The installed twisted/plugins drop-in provides the 'static' router factory."""
    factories = find_factories()
    assert isinstance(factories["static"], StaticRouterFactory)


def test_build_chain_makes_the_named_routers_in_order() -> None:
    """build_chain gives a RoutingChain of (name, router), each made from its own table."""
    chain = build_chain(
        ["static"], {"static": {"routes": [{"match": "^sip:bob@", "next_hop": "sip:192.0.2.20"}]}}, [], Clock()
    )
    assert isinstance(chain, RoutingChain)
    assert [name for name, _ in chain.routers] == ["static"]
    assert isinstance(chain.routers[0][1], StaticRouter)
    assert isinstance(chain.route(request(), context()), Forward)


def test_unknown_router_name_lists_the_known_ones() -> None:
    """A router name no plugin provides is a ConfigError at routing.routers listing the known names."""
    e = config_error(["static", "nosuchrouter"], {}, [], Clock())
    assert e.key == "routing.routers"
    assert "'nosuchrouter'" in e.message
    assert "known: " in e.message and "static" in e.message.split("known: ")[1]


def test_router_table_errors_come_from_the_factory() -> None:
    """A bad table for a router surfaces the factory's ConfigError, naming the key inside that table."""
    e = config_error(["static"], {"static": {"routes": [{"match": "("}]}}, [], Clock())
    assert e.key == "routing.static.routes[0].match"


def test_missing_plugin_directory_is_an_error() -> None:
    """A plugin directory that does not exist is a ConfigError at routing.plugin_dirs naming it."""
    e = config_error(["/nonexistent/sipgate-plugins"])
    assert e.key == "routing.plugin_dirs"
    assert "/nonexistent/sipgate-plugins" in e.message


# -- operator plugin directories -------------------------------------------------


def test_operator_plugin_is_loaded_and_routes(tmp_path: Path) -> None:
    """A factory in an operator directory is found by name and its router decides in the chain."""
    directory = plugin_dir(tmp_path, {"deny.py": DENY.format(name="deny")})
    factories = find_factories([directory])
    assert set(factories) >= {"static", "deny"}
    chain = build_chain(["deny"], {"deny": {"reason": "Nope"}}, [directory], Clock())
    ctx = context()
    assert chain.route(request(), ctx) == Reject(403, "Nope")
    assert ctx.decided_by == "deny"


def test_operator_plugin_runs_after_builtin_in_configured_order(tmp_path: Path) -> None:
    """With routers = ['static', 'deny'], static decides what it matches and the plugin rejects the rest."""
    directory = plugin_dir(tmp_path, {"deny.py": DENY.format(name="deny")})
    tables = {"static": {"routes": [{"match": "^sip:bob@", "next_hop": "sip:192.0.2.20"}]}}
    chain = build_chain(["static", "deny"], tables, [directory], Clock())
    ctx = context()
    assert isinstance(chain.route(request("sip:bob@example.com"), ctx), Forward)
    assert ctx.decided_by == "static"
    ctx = context()
    assert chain.route(request("sip:carol@example.com"), ctx) == Reject(403, "Forbidden by plugin")
    assert ctx.decided_by == "deny"


def test_plugin_with_a_syntax_error_names_the_file(tmp_path: Path) -> None:
    """A plugin file that does not compile stops the start with a ConfigError naming that file."""
    directory = plugin_dir(tmp_path, {"good.py": DENY.format(name="deny"), "broken.py": "def route(:\n"})
    e = config_error([directory])
    assert e.key == "routing.plugin_dirs"
    assert str(Path(directory) / "broken.py") in e.message
    assert "SyntaxError" in e.message


def test_plugin_with_an_import_error_names_the_file(tmp_path: Path) -> None:
    """A plugin file importing a missing module stops the start with a ConfigError naming that file."""
    directory = plugin_dir(tmp_path, {"needs.py": "import sipgate_no_such_module\n"})
    e = config_error([directory])
    assert e.key == "routing.plugin_dirs"
    assert str(Path(directory) / "needs.py") in e.message
    assert "sipgate_no_such_module" in e.message


def test_plugin_object_without_irouterfactory_names_the_file(tmp_path: Path) -> None:
    """An object providing IPlugin but not IRouterFactory is a ConfigError naming the file and the object."""
    text = """
    from twisted.plugin import IPlugin
    from zope.interface import implementer

    @implementer(IPlugin)
    class Thing:
        name = "thing"

    thing = Thing()
    """
    directory = plugin_dir(tmp_path, {"thing.py": text})
    e = config_error([directory])
    assert e.key == "routing.plugin_dirs"
    assert str(Path(directory) / "thing.py") in e.message
    assert "thing" in e.message and "IRouterFactory" in e.message


def test_plugin_factory_missing_make_router_is_refused(tmp_path: Path) -> None:
    """A factory that declares IRouterFactory but lacks make_router fails verifyObject: a ConfigError."""
    text = """
    from twisted.plugin import IPlugin
    from zope.interface import implementer

    from sipgate_proxy.interfaces import IRouterFactory

    @implementer(IPlugin, IRouterFactory)
    class Hollow:
        name = "hollow"

    hollow = Hollow()
    """
    directory = plugin_dir(tmp_path, {"hollow.py": text})
    e = config_error([directory])
    assert e.key == "routing.plugin_dirs"
    assert "make_router" in e.message


def test_factory_duplicating_the_builtin_name_is_refused(tmp_path: Path) -> None:
    """An operator factory named 'static' clashes with the built-in one: ConfigError at routing.routers."""
    directory = plugin_dir(tmp_path, {"mine.py": DENY.format(name="static")})
    e = config_error([directory])
    assert e.key == "routing.routers"
    assert "'static'" in e.message and "twice" in e.message
    assert directory in e.message


def test_factory_making_a_non_router_is_refused(tmp_path: Path) -> None:
    """A factory whose make_router returns something that is not an IRouter is a ConfigError at routing.<name>."""
    text = """
    from twisted.plugin import IPlugin
    from zope.interface import implementer

    from sipgate_proxy.interfaces import IRouterFactory

    @implementer(IPlugin, IRouterFactory)
    class Bad:
        name = "bad"

        def make_router(self, config, reactor):
            return object()

    bad = Bad()
    """
    directory = plugin_dir(tmp_path, {"bad.py": text})
    e = config_error(["bad"], {}, [directory], Clock())
    assert e.key == "routing.bad"
    assert "IRouter" in e.message


def test_factory_receives_the_reactor(tmp_path: Path) -> None:
    """make_router gets the reactor passed to build_chain (for routers that need time)."""
    text = """
    from twisted.plugin import IPlugin
    from zope.interface import implementer

    from sipgate_proxy.interfaces import IRouter, IRouterFactory

    @implementer(IRouter)
    class Timed:
        def __init__(self, reactor):
            self.reactor = reactor

        def route(self, request, context):
            return None

    @implementer(IPlugin, IRouterFactory)
    class TimedFactory:
        name = "timed"

        def make_router(self, config, reactor):
            return Timed(reactor)

    timed = TimedFactory()
    """
    directory = plugin_dir(tmp_path, {"timed.py": text})
    clock = Clock()
    chain = build_chain(["timed"], {}, [directory], clock)
    assert chain.routers[0][1].reactor is clock


def test_operator_directory_is_found_again_from_its_dropin_cache(tmp_path: Path) -> None:
    """A second discovery of the same directory (dropin.cache now written) finds the same router names."""
    directory = plugin_dir(tmp_path, {"deny.py": DENY.format(name="deny")})
    first = find_factories([directory])
    assert (Path(directory) / "dropin.cache").exists()
    second = find_factories([directory])
    assert set(first) == set(second)
    chain = build_chain(["deny"], {}, [directory], Clock())
    assert chain.route(request(), context()) == Reject(403, "Forbidden by plugin")


def test_plugin_dirs_from_the_config_file_are_relative_to_it(tmp_path: Path) -> None:
    """routing.plugin_dirs in a config is resolved against the config file's directory and its routers load."""
    plugin_dir(tmp_path, {"deny.py": DENY.format(name="deny")})
    config = parse_config(
        {"routing": {"routers": ["deny"], "plugin_dirs": ["plugins"], "deny": {"reason": "Closed"}}},
        str(tmp_path / "proxy.toml"),
    )
    routing = config.routing
    chain = build_chain(routing.routers, routing.tables, routing.plugin_dirs, Clock())
    assert chain.route(request(), context()) == Reject(403, "Closed")
