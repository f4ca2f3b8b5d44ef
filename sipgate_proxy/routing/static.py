"""The ``static`` router: Request-URI patterns to fixed next hops."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from twisted.plugin import IPlugin
from zope.interface import implementer

from ..config import ConfigError, check_hop_uri
from ..interfaces import IRouter, IRouterFactory
from ..sip.message import Request
from .decisions import Forward, RequestContext, Target


@dataclass(frozen=True, slots=True)
class Route:
    pattern: re.Pattern[str]
    next_hop: str
    #: when set, the Request-URI is rewritten to this (regex replacement)
    rewrite: str | None = None


@implementer(IRouter)
class StaticRouter:
    """Sends a request whose Request-URI matches a pattern to a next hop.

    The first matching route wins; a request matching none passes on.
    """

    def __init__(self, routes: tuple[Route, ...]) -> None:
        self.routes = routes

    def route(self, request: Request, context: RequestContext) -> Forward | None:
        uri = request.uri_text
        for entry in self.routes:
            match = entry.pattern.search(uri)
            if match is not None:
                target_uri = uri if entry.rewrite is None else match.expand(entry.rewrite)
                return Forward((Target(target_uri, entry.next_hop),))
        return None


def parse_static_config(config: Mapping[str, Any]) -> tuple[Route, ...]:
    """Validate the ``[routing.static]`` table."""
    unknown = set(config) - {"routes"}
    if unknown:
        raise ConfigError(f"routing.static.{sorted(unknown)[0]}", "unknown key")
    raw = config.get("routes", [])
    if not isinstance(raw, list):
        raise ConfigError("routing.static.routes", "expected a list of tables")
    routes = []
    for index, item in enumerate(raw):
        key = f"routing.static.routes[{index}]"
        if not isinstance(item, dict):
            raise ConfigError(key, "expected a table with match and next_hop")
        extra = set(item) - {"match", "next_hop", "rewrite"}
        if extra:
            raise ConfigError(f"{key}.{sorted(extra)[0]}", "unknown key")
        pattern = item.get("match")
        if not isinstance(pattern, str):
            raise ConfigError(f"{key}.match", "expected a regular expression string")
        try:
            compiled = re.compile(pattern)
        except re.error as error:
            raise ConfigError(f"{key}.match", f"not a valid regular expression: {error}") from None
        next_hop = item.get("next_hop")
        if not isinstance(next_hop, str):
            raise ConfigError(f"{key}.next_hop", "expected a SIP URI string such as 'sip:192.0.2.1:5060;transport=tcp'")
        check_hop_uri(next_hop, f"{key}.next_hop")
        rewrite = item.get("rewrite")
        if rewrite is not None and not isinstance(rewrite, str):
            raise ConfigError(f"{key}.rewrite", "expected a replacement string")
        if rewrite is not None:
            try:
                compiled.sub(rewrite, "")  # compiles the template: bad escapes, unknown groups
            except (re.error, IndexError) as error:
                raise ConfigError(f"{key}.rewrite", f"not a valid replacement for match: {error}") from None
        routes.append(Route(compiled, next_hop, rewrite))
    return tuple(routes)


@implementer(IPlugin, IRouterFactory)
class StaticRouterFactory:
    """IRouterFactory for ``static``; registered in twisted/plugins."""

    name = "static"

    def make_router(self, config: Mapping[str, Any], reactor: Any) -> StaticRouter:
        return StaticRouter(parse_static_config(config))
