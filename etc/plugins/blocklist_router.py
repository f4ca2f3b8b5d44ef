"""An example operator router: reject calls to numbers on a block list.

Drop a file like this one into a directory named in ``routing.plugin_dirs``
and name the router in ``routing.routers``:

    [routing]
    routers = ["blocklist", "dialplan", "lcr"]
    plugin_dirs = ["plugins"]          # relative to the config file

    [routing.blocklist]
    numbers = ["+4930123456"]         # exact Request-URI users
    prefixes = ["+49900", "+49137"]   # premium and mass-call ranges
    status = 403
    reason = "Forbidden (number blocked)"

The module needs one object that provides both ``IPlugin`` and
``IRouterFactory``; ``make_router`` validates the router's own table and
returns an ``IRouter``. ``route`` returns a decision, or None to let the next
router decide. Everything here runs in the reactor thread: keep ``route``
fast, and return a Deferred if you must wait for something.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.plugin import IPlugin
from zope.interface import implementer

from sipgate_proxy.config import ConfigError
from sipgate_proxy.interfaces import IRouter, IRouterFactory
from sipgate_proxy.routing.decisions import Reject, RequestContext
from sipgate_proxy.sip.message import Request
from sipgate_proxy.sip.uri import unescape


@implementer(IRouter)
class BlocklistRouter:
    def __init__(self, numbers: frozenset[str], prefixes: tuple[str, ...], status: int, reason: str) -> None:
        self.numbers = numbers
        self.prefixes = prefixes
        self.status = status
        self.reason = reason

    def route(self, request: Request, context: RequestContext) -> Reject | None:
        user = request.uri.user
        if user is None:
            return None
        number = unescape(user)
        if number in self.numbers or number.startswith(self.prefixes):
            context.attrs["blocklist.hit"] = number
            return Reject(self.status, self.reason)
        return None


def _strings(config: Mapping[str, Any], key: str) -> list[str]:
    value = config.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"routing.blocklist.{key}", "expected a list of strings")
    return value


@implementer(IPlugin, IRouterFactory)
class BlocklistRouterFactory:
    name = "blocklist"

    def make_router(self, config: Mapping[str, Any], reactor: Any) -> BlocklistRouter:
        unknown = set(config) - {"numbers", "prefixes", "status", "reason"}
        if unknown:
            raise ConfigError(f"routing.blocklist.{sorted(unknown)[0]}", "unknown key")
        status = config.get("status", 403)
        if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 699:
            raise ConfigError("routing.blocklist.status", "expected a final status from 400 to 699")
        reason = config.get("reason", "Forbidden (number blocked)")
        if not isinstance(reason, str) or not reason or "\n" in reason:
            raise ConfigError("routing.blocklist.reason", "expected a one-line reason phrase")
        return BlocklistRouter(
            frozenset(_strings(config, "numbers")), tuple(_strings(config, "prefixes")), status, reason
        )


blocklist = BlocklistRouterFactory()
