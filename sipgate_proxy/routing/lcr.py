"""The ``lcr`` router: least-cost routing of numbers to gateways.

The behaviour follows Kamailio's lcr and OpenSIPS's drouting modules. The
number is the %-unescaped user part of the Request-URI (``match_on =
"ruri"``) or of the To URI (``"to"``), taken as it is: normalise it with the
dial plan first. A request without a user part passes on.

Rules are keyed by number prefix. The longest prefix of the number that has
rules is looked at first; its rules are ordered by ``priority`` (lower first)
and then by their position (TOML rules before the rules file, each in file
order). A rule applies when its ``from_user`` pattern is found in the From
user (:func:`re.search`) and the request time (``context.now``, in the rule's
timezone) falls in one of its ``time`` windows. The gateways of all applicable
rules at that prefix are joined in rule order, duplicates dropped (the first
position counts) and capped at ``max_targets``. When no rule of the prefix
applies the search goes on with the next shorter prefix, unless one of the
rules there is a ``stopper``: then there is no route.

Within a rule the gateways are tried by ``cost`` (ascending) when costs are
given, in a random order drawn by weight per request for
``weighted_gateways`` (a weight of 0 puts a gateway after all others), or as
listed. Equal costs among weighted gateways are ordered by the weighted draw.

The decision is a serial Forward: for each gateway a Request-URI
``sip:USER@ADDRESS:PORT;transport=T`` whose user is the number with the
gateway's ``strip`` characters removed from the front and its ``prefix`` put
in front; the gateway's ``headers`` are added. A gateway for which that user
would be empty is left out. The Forward's attrs name the rules used
(``lcr.rule``: ``rules[3]`` or ``lcr.csv:17``, comma-separated) and the
prefix (``lcr.prefix``). With no route the router passes on, or answers
with ``no_route = [status, "reason"]``.

Large tables go into ``rules_file``, a CSV file
``prefix,priority,gateways,from_user,cost`` (a header line first; gateway ids
separated by ``|``; cost as ``gw1:0.012|gw2:0.015``). Time windows, timezone
and stopper exist only for TOML rules.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from twisted.plugin import IPlugin
from zope.interface import implementer

from ..interfaces import IRouter, IRouterFactory
from ..sip.message import Request
from ..sip.uri import unescape
from .decisions import Forward, Reject, RequestContext, Target
from .lcr_config import (
    _BODY_MASK,
    _LINE_SHIFT,
    _STOPPED,
    PREFIX_ATTR,
    RULE_ATTR,
    Gateway,
    LcrSettings,
    Rule,
    RuleBody,
    Selection,
    parse_lcr_config,
)

# -- the router --------------------------------------------------------------------


@implementer(IRouter)
class LcrRouter:
    """Routes numbers to gateways by longest prefix, priority, time and cost."""

    def __init__(self, settings: LcrSettings, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.rng = rng if rng is not None else random.Random()

    def route(self, request: Request, context: RequestContext) -> Forward | Reject | None:
        settings = self.settings
        subject = request.uri if settings.match_on == "ruri" else request.to.uri
        if not subject.user or subject.opaque is not None:
            return None
        number = unescape(subject.user)
        from_user = ""
        if settings.uses_from:
            from_user = unescape(request.from_.uri.user or "")
        found = self.select(number, from_user, context.now)
        if found is None:
            return settings.no_route
        targets = tuple(
            Target(gateway.request_uri(number), None, gateway.headers, None, gateway.id) for gateway in found.gateways
        )
        attrs = {RULE_ATTR: ",".join(rule.label for rule in found.rules), PREFIX_ATTR: found.prefix}
        return Forward(targets, "serial", attrs)

    def select(self, number: str, from_user: str = "", now: float = 0.0) -> Selection | None:
        """The prefix, rules and gateways for ``number``, or None (no route).

        ``from_user`` is the unescaped From user; ``now`` seconds since the epoch.
        """
        clocks: dict[ZoneInfo | None, tuple[int, int]] = {}
        bodies = self.settings.bodies

        def visit(prefix: str, rules: tuple[int, ...]) -> Selection | None:
            applicable: list[Rule] = []
            stop = False
            for rule in rules:
                body = bodies[rule & _BODY_MASK]
                if (body.from_user is None or body.from_user.search(from_user) is not None) and (
                    not body.windows or _in_windows(body, now, clocks)
                ):
                    applicable.append(Rule(body, rule >> _LINE_SHIFT))
                elif body.stopper:
                    stop = True
            if applicable:
                return Selection(prefix, tuple(applicable), self._gateways(applicable, number))
            return _STOPPED if stop else None

        found = self.settings.rules.first(number, visit)
        return found if found is not None and found.gateways else None

    def _gateways(self, rules: list[Rule], number: str) -> tuple[Gateway, ...]:
        limit = self.settings.max_targets
        if len(rules) == 1:
            body = rules[0].body
            if body.inverse_weights is None and len(number) >= body.shortest and len(body.gateways) <= limit:
                return body.gateways  # the common case: nothing to draw, drop or cut
        chosen: list[Gateway] = []
        seen: set[str] = set()
        length = len(number)
        for rule in rules:
            for gateway in rule.body.ordered(self.rng):
                if gateway.id in seen or (gateway.strip >= length and not gateway.prefix):
                    continue
                seen.add(gateway.id)
                chosen.append(gateway)
                if len(chosen) >= limit:
                    return tuple(chosen)
        return tuple(chosen)


def _in_windows(body: RuleBody, now: float, clocks: dict[ZoneInfo | None, tuple[int, int]]) -> bool:
    clock = clocks.get(body.timezone)
    if clock is None:
        local = datetime.fromtimestamp(now, body.timezone or _UTC)
        clock = (local.weekday(), local.hour * 3600 + local.minute * 60 + local.second)
        clocks[body.timezone] = clock
    weekday, second = clock
    return any(window.contains(weekday, second) for window in body.windows)


_UTC = ZoneInfo("UTC")


@implementer(IPlugin, IRouterFactory)
class LcrRouterFactory:
    """IRouterFactory for ``lcr``."""

    name = "lcr"

    def make_router(self, config: Mapping[str, Any], reactor: Any) -> LcrRouter:
        return LcrRouter(parse_lcr_config(config))
