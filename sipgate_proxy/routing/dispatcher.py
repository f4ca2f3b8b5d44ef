"""The ``dispatcher`` router: load balancing over sets of destinations, with health checks.

The equal of Kamailio's dispatcher module. The first set whose ``match``
(a regular expression searched in the Request-URI) applies, or the first set
without ``match``, decides; a request no set takes passes on. The router
answers with a serial :class:`Forward` over the set's usable destinations,
in the order of the set's algorithm, each target keeping the Request-URI and
naming the destination as its ``next_hop``. Usable destinations are the
``active`` ones; when none is active, the ``probing`` ones (suspect, or on
their way back up); when there are none of those either, the answer is 503.

Algorithms (the order after the first destination is the failover order;
``max_targets`` cuts it):

- ``round-robin``: a counter per set, advanced by every request, picks the
  start among the usable destinations (in config order); the rest follow in
  config order, wrapping round.
- ``weighted``: smooth weighted round robin (as in nginx): over any run of
  calls each usable destination is picked first in proportion to its
  ``weight``, spread out rather than in bursts, and exactly so over every
  cycle of ``sum(weights)`` calls. The rest follow by weight, heaviest first
  (config order between equals). Weight 0: only ever a failover target.
- ``random``: a uniformly random order (a shuffle).
- ``hash-callid``, ``hash-from``, ``hash-to``, ``hash-ruri``: the start is
  ``stable_hash(key) % len(enabled destinations)``, where the key is the
  Call-ID or the user part of the From, To or Request-URI (its host when it
  has no user). The rest follow in config order, wrapping round; unusable
  destinations are skipped, so a key keeps its destination for as long as
  that destination is up, and the keys of one that is down go to the next.
- ``consistent-hash``: a hash ring (:mod:`.hashring`) over the Call-ID; a
  destination that goes down hands only its own keys on, spread over the
  others.
- ``least-calls``: fewest INVITEs in flight first, config order between
  equals. A destination's count is the INVITEs routed to it whose branch
  has not ended: +1 when the router picks it first (or when the core tells
  of a failover branch to it), -1 at that branch's ``final`` event. Calls
  that are set up and running are not counted (the router sees no BYE).
- ``priority``: by ``priority``, lowest value first (like DNS SRV and the
  dialplan router), then config order.

Health: see :mod:`.health`. Passive checks come from the proxy core, which
tells the router (each target's ``observer``) how every branch went: the
first response of any kind shows a destination alive; an INVITE not
answered by Timer A makes it suspect; a branch that ends with a 503, or with
408 without having had any response, takes it down at once. A 408 after a
response (the destination's own downstream timed out) says it is alive, as
does any other final status; 487 (cancelled) says nothing.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from twisted.plugin import IPlugin
from zope.interface import implementer

from ..config import ConfigError, check_hop_uri, type_name
from ..interfaces import IBranchObserver, IRouter, IRouterFactory, IRouterLifecycle
from ..sip.errors import SIPError
from ..sip.message import Request
from ..sip.uri import URI
from .decisions import Forward, Reject, RequestContext, Target
from .hashring import HashRing, stable_hash
from .health import ACTIVE, PROBING, BranchTracker, HealthTable, ProbeMode, Prober, ProbeSettings

Algorithm = Literal[
    "round-robin",
    "weighted",
    "random",
    "hash-callid",
    "hash-from",
    "hash-to",
    "hash-ruri",
    "consistent-hash",
    "least-calls",
    "priority",
]
ALGORITHMS: tuple[str, ...] = get_args(Algorithm)
PROBE_MODES: tuple[str, ...] = get_args(ProbeMode)

#: context/Forward attributes this router sets
SET_ATTR = "dispatcher.set"
DST_ATTR = "dispatcher.dst"
DST_ATTRS_ATTR = "dispatcher.attrs"

#: the proxy's default failover statuses (routing.failover), assumed for a set without its own
DEFAULT_FAILOVER = frozenset({408, 500, 502, 503, 504})

_PREFIX = "routing.dispatcher"
_TOP_KEYS = frozenset({"sets", "probing", "passive"})
_SET_KEYS = frozenset({"id", "algorithm", "destinations", "match", "failover", "max_targets"})
_DST_KEYS = frozenset({"uri", "weight", "priority", "attrs", "disabled"})
_PROBE_KEYS = frozenset({"enabled", "interval", "timeout", "down_after", "up_after", "alive_codes", "mode"})
_PASSIVE_KEYS = frozenset({"enabled", "suspect", "fail_silent", "silent_after"})


@dataclass(frozen=True, slots=True)
class Destination:
    uri: str
    weight: int = 1
    priority: int = 0
    attrs: str = ""
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class DispatchSet:
    id: int | str
    algorithm: Algorithm
    destinations: tuple[Destination, ...]
    match: re.Pattern[str] | None = None
    failover: frozenset[int] | None = None
    max_targets: int | None = None


@dataclass(frozen=True, slots=True)
class PassiveSettings:
    enabled: bool = True
    suspect: bool = True
    fail_silent: bool = True
    #: seconds without any answer (100 Trying included) before an INVITE moves
    #: on to the next destination; 0 waits for the first retransmission (T1)
    silent_after: float = 0.2


@dataclass(frozen=True, slots=True)
class DispatcherConfig:
    """The validated ``[routing.dispatcher]`` table."""

    sets: tuple[DispatchSet, ...]
    probing: ProbeSettings = field(default_factory=ProbeSettings)
    passive: PassiveSettings = field(default_factory=PassiveSettings)


# -- per-set runtime state ---------------------------------------------------


class _SetState:
    """A set's enabled destinations and what its algorithm remembers."""

    __slots__ = (
        "by_priority",
        "by_weight",
        "config",
        "current",
        "failover",
        "label",
        "members",
        "pool",
        "pool_version",
        "ring",
        "turn",
        "uris",
        "usable",
        "weights",
    )

    def __init__(self, config: DispatchSet) -> None:
        self.config = config
        self.label = str(config.id)
        self.members = tuple(d for d in config.destinations if not d.disabled)
        self.uris = tuple(d.uri for d in self.members)
        self.weights = tuple(d.weight for d in self.members)
        count = len(self.members)
        self.by_priority = tuple(sorted(range(count), key=lambda i: (self.members[i].priority, i)))
        self.by_weight = tuple(sorted(range(count), key=lambda i: (-self.members[i].weight, i)))
        self.ring = HashRing(self.uris) if config.algorithm == "consistent-hash" else None
        self.failover = config.failover if config.failover is not None else DEFAULT_FAILOVER
        self.turn = 0
        self.current = [0] * count
        #: usable member indexes (config order), cached per HealthTable.version
        self.pool: tuple[int, ...] = ()
        self.usable: frozenset[int] = frozenset()
        self.pool_version = -1


@implementer(IRouter, IBranchObserver, IRouterLifecycle)
class DispatcherRouter:
    """Spreads requests over sets of destinations and steps around dead ones."""

    def __init__(self, config: DispatcherConfig, reactor: Any, rng: random.Random | None = None) -> None:
        self.config = config
        self.reactor = reactor
        self.passive = config.passive
        self.rng = rng if rng is not None else random.Random()
        probing = config.probing
        self.health = HealthTable(probing.down_after, probing.up_after)
        enabled: dict[str, bool] = {}
        for dispatch_set in config.sets:
            for dst in dispatch_set.destinations:
                enabled[dst.uri] = enabled.get(dst.uri, False) or not dst.disabled
        now = reactor.seconds() if reactor is not None else 0.0
        for uri, on in enabled.items():
            self.health.add(uri, disabled=not on, now=now)
        self.prober = Prober(reactor, self.health, probing)
        self._sets = tuple(_SetState(s) for s in config.sets)
        #: the branches of requests under way; INVITEs in flight per destination
        self.tracker = BranchTracker()
        self.calls = self.tracker.calls

    # -- IRouter -----------------------------------------------------------

    def route(self, request: Request, context: RequestContext) -> Forward | Reject | None:
        uri_text = request.uri_text
        for state in self._sets:
            pattern = state.config.match
            if pattern is None or pattern.search(uri_text) is not None:
                break
        else:
            return None
        self.tracker.sweep(context.now)
        order = self._order(state, request)
        if not order:
            return Reject(503, "Service Unavailable (no destination available)")
        members = state.members
        first = members[order[0]]
        targets = tuple(Target(uri_text, next_hop=members[i].uri, observer=self, label=members[i].uri) for i in order)
        attrs = {SET_ATTR: state.label, DST_ATTR: first.uri}
        if first.attrs:
            attrs[DST_ATTRS_ATTR] = first.attrs
        self.tracker.start(targets, request.method == "INVITE", state.failover, context.now)
        return Forward(
            targets,
            mode="serial",
            attrs=attrs,
            failover=state.config.failover,
            fail_silent=self.passive.fail_silent,
            silent_after=self.passive.silent_after or None,
        )

    def _order(self, state: _SetState, request: Request) -> list[int]:
        """The set's usable destinations (member indexes) in the order of its algorithm."""
        pool = self._pool(state)
        if not pool:
            return []
        usable = state.usable
        algorithm = state.config.algorithm
        if algorithm == "round-robin":
            start = state.turn % len(pool)
            state.turn += 1
            order = [*pool[start:], *pool[:start]]
        elif algorithm == "weighted":
            order = self._weighted(state)
        elif algorithm == "random":
            order = self.rng.sample(pool, len(pool))
        elif algorithm == "consistent-hash":
            assert state.ring is not None
            order = [i for i in state.ring.order(request.call_id) if i in usable]
        elif algorithm == "least-calls":
            calls = self.calls
            uris = state.uris
            order = sorted(pool, key=lambda i: calls.get(uris[i], 0))
        elif algorithm == "priority":
            order = [i for i in state.by_priority if i in usable]
        else:  # hash-*
            count = len(state.members)
            start = stable_hash(_hash_key(algorithm, request)) % count
            order = [i % count for i in range(start, start + count) if i % count in usable]
        limit = state.config.max_targets
        return order if limit is None else order[:limit]

    def _pool(self, state: _SetState) -> tuple[int, ...]:
        health = self.health
        if state.pool_version != health.version:
            states = [health.state(uri) for uri in state.uris]
            pool = tuple(i for i, s in enumerate(states) if s == ACTIVE)
            if not pool:
                pool = tuple(i for i, s in enumerate(states) if s == PROBING)
            state.pool = pool
            state.usable = frozenset(pool)
            state.pool_version = health.version
        return state.pool

    @staticmethod
    def _weighted(state: _SetState) -> list[int]:
        weights = state.weights
        current = state.current
        total = 0
        best = -1
        usable = state.usable
        for i in range(len(current)):
            if i not in usable:
                current[i] = 0  # back from down: starts without credit or debt
                continue
            current[i] += weights[i]
            total += weights[i]
            if best < 0 or current[i] > current[best]:
                best = i
        if total == 0:  # only weight-0 destinations are usable
            return [i for i in state.by_weight if i in usable]
        current[best] -= total
        return [best, *(i for i in state.by_weight if i in usable and i != best)]

    # -- IBranchObserver ---------------------------------------------------

    def branch_event(self, target: Target, event: str, status: int, now: float) -> None:
        uri = target.label or target.next_hop
        if uri is None:
            return
        responded = self.tracker.event(target, uri, event, status)
        health = self.health
        if event == "response":
            health.alive(uri, now, status)
        elif event == "suspect":
            if self.passive.suspect:
                health.suspect(uri, now)
        elif event == "final":
            if status == 503 or (status == 408 and not responded):
                if self.passive.enabled:
                    why = "a call met 503" if status == 503 else "a call timed out without any answer"
                    health.down(uri, now, status, why)
            elif status != 487 and not responded:
                health.alive(uri, now, status)  # a final the core did not announce as a response

    # -- IRouterLifecycle ----------------------------------------------------

    def attach(self, sender: Any) -> None:
        """Start probing through ``sender`` (an IRequestSender)."""
        self.prober.start(sender)

    def take_over(self, previous: Any) -> None:
        """Carry over the health of destinations ``previous`` also had (same URI)."""
        table = getattr(previous, "health", None)
        if isinstance(table, HealthTable):
            self.health.take_over(table)

    def stop(self) -> None:
        """Stop probing."""
        self.prober.stop()

    # -- operators -----------------------------------------------------------

    def set_disabled(self, uri: str, disabled: bool) -> None:
        """Disable or re-enable a destination by hand (KeyError for an unknown URI)."""
        now = self.reactor.seconds() if self.reactor is not None else 0.0
        self.health.set_disabled(uri, disabled, now)

    def states(self) -> dict[str, str]:
        """Every destination's state, by URI."""
        return self.health.states()


def _user_or_host(uri: URI) -> str:
    return uri.user if uri.user is not None else uri.host


def _hash_key(algorithm: str, request: Request) -> str:
    try:
        if algorithm == "hash-callid":
            return request.call_id
        if algorithm == "hash-from":
            return _user_or_host(request.from_.uri)
        if algorithm == "hash-to":
            return _user_or_host(request.to.uri)
        return _user_or_host(request.uri)
    except SIPError:
        return ""


# -- config ------------------------------------------------------------------


def _table(value: Any, key: str, allowed: frozenset[str], what: str = "a table") -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(key, f"expected {what}, got {type_name(value)}")
    extra = set(value) - allowed
    if extra:
        raise ConfigError(f"{key}.{sorted(extra)[0]}", "unknown key")
    return value


def _boolean(table: Mapping[str, Any], name: str, key: str, default: bool) -> bool:
    value = table.get(name, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{key}.{name}", f"expected true or false, got {type_name(value)}")
    return value


def _integer(table: Mapping[str, Any], name: str, key: str, default: int, low: int, high: int) -> int:
    value = table.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}.{name}", f"expected an integer, got {type_name(value)}")
    if not low <= value <= high:
        raise ConfigError(f"{key}.{name}", f"expected an integer from {low} to {high}, got {value}")
    return value


def _seconds(table: Mapping[str, Any], name: str, key: str, default: float, low: float, high: float) -> float:
    value = table.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key}.{name}", f"expected a number of seconds, got {type_name(value)}")
    if not low <= value <= high:
        raise ConfigError(f"{key}.{name}", f"expected a number of seconds from {low} to {high}, got {value}")
    return float(value)


def _statuses(value: Any, key: str, low: int, what: str) -> frozenset[int]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(code, int) and not isinstance(code, bool) and low <= code <= 699 for code in value)
    ):
        raise ConfigError(key, f"expected a non-empty list of {what} from {low} to 699")
    return frozenset(value)


def _destination_uri(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(key, "required: a SIP URI string such as 'sip:192.0.2.1:5060;transport=udp'")
    return check_hop_uri(value, key)


def _destination(item: Any, key: str) -> Destination:
    table = _table(item, key, _DST_KEYS, "a table with at least uri")
    attrs = table.get("attrs", "")
    if not isinstance(attrs, str):
        raise ConfigError(f"{key}.attrs", f"expected a string, got {type_name(attrs)}")
    return Destination(
        uri=_destination_uri(table.get("uri"), f"{key}.uri"),
        weight=_integer(table, "weight", key, 1, 0, 10_000),
        priority=_integer(table, "priority", key, 0, 0, 1_000_000),
        attrs=attrs,
        disabled=_boolean(table, "disabled", key, False),
    )


def _set(item: Any, key: str) -> DispatchSet:
    table = _table(item, key, _SET_KEYS, "a table with id and destinations")
    set_id = table.get("id")
    if isinstance(set_id, bool) or not isinstance(set_id, int | str) or set_id == "":
        raise ConfigError(f"{key}.id", "required: an integer or a non-empty string naming the set")
    algorithm = table.get("algorithm", "round-robin")
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"{key}.algorithm", f"expected one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    match = table.get("match")
    pattern = None
    if match is not None:
        if not isinstance(match, str):
            raise ConfigError(f"{key}.match", f"expected a regular expression string, got {type_name(match)}")
        try:
            pattern = re.compile(match)
        except re.error as error:
            raise ConfigError(f"{key}.match", f"not a valid regular expression: {error}") from None
    failover = None
    if "failover" in table:
        failover = _statuses(table["failover"], f"{key}.failover", 300, "final statuses")
    max_targets = None
    if "max_targets" in table:
        max_targets = _integer(table, "max_targets", key, 1, 1, 1000)
    raw = table.get("destinations")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{key}.destinations", "required: a non-empty list of destination tables")
    destinations: list[Destination] = []
    seen: set[str] = set()
    for index, entry in enumerate(raw):
        dst = _destination(entry, f"{key}.destinations[{index}]")
        if dst.uri in seen:
            raise ConfigError(f"{key}.destinations[{index}].uri", f"{dst.uri} is listed twice in this set")
        seen.add(dst.uri)
        destinations.append(dst)
    if algorithm == "weighted" and not any(d.weight > 0 for d in destinations if not d.disabled):
        raise ConfigError(f"{key}.destinations", "a weighted set needs an enabled destination with weight above 0")
    return DispatchSet(set_id, algorithm, tuple(destinations), pattern, failover, max_targets)


def _probing(value: Any) -> ProbeSettings:
    key = f"{_PREFIX}.probing"
    table = _table(value, key, _PROBE_KEYS)
    mode = table.get("mode", "always")
    if mode not in PROBE_MODES:
        raise ConfigError(f"{key}.mode", f"expected one of {', '.join(PROBE_MODES)}, got {mode!r}")
    alive = None
    if "alive_codes" in table:
        alive = _statuses(table["alive_codes"], f"{key}.alive_codes", 200, "final statuses")
    return ProbeSettings(
        enabled=_boolean(table, "enabled", key, True),
        interval=_seconds(table, "interval", key, 10.0, 0.1, 86400.0),
        timeout=_seconds(table, "timeout", key, 2.0, 0.1, 600.0),
        down_after=_integer(table, "down_after", key, 2, 1, 100),
        up_after=_integer(table, "up_after", key, 1, 1, 100),
        alive_codes=alive,
        mode=mode,
    )


def _passive(value: Any) -> PassiveSettings:
    key = f"{_PREFIX}.passive"
    table = _table(value, key, _PASSIVE_KEYS)
    return PassiveSettings(
        enabled=_boolean(table, "enabled", key, True),
        suspect=_boolean(table, "suspect", key, True),
        fail_silent=_boolean(table, "fail_silent", key, True),
        silent_after=_seconds(table, "silent_after", key, 0.2, 0.0, 60.0),
    )


def parse_dispatcher_config(config: Mapping[str, Any]) -> DispatcherConfig:
    """Validate the ``[routing.dispatcher]`` table; raise ConfigError naming the key."""
    table = _table(config, _PREFIX, _TOP_KEYS)
    raw = table.get("sets")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{_PREFIX}.sets", "required: a non-empty list of set tables ([[routing.dispatcher.sets]])")
    sets: list[DispatchSet] = []
    ids: set[str] = set()
    for index, item in enumerate(raw):
        dispatch_set = _set(item, f"{_PREFIX}.sets[{index}]")
        label = str(dispatch_set.id)
        if label in ids:
            raise ConfigError(f"{_PREFIX}.sets[{index}].id", f"set {label!r} is defined twice")
        ids.add(label)
        sets.append(dispatch_set)
    return DispatcherConfig(
        sets=tuple(sets),
        probing=_probing(table.get("probing", {})),
        passive=_passive(table.get("passive", {})),
    )


@implementer(IPlugin, IRouterFactory)
class DispatcherRouterFactory:
    """IRouterFactory for ``dispatcher``."""

    name = "dispatcher"

    def make_router(self, config: Mapping[str, Any], reactor: Any) -> DispatcherRouter:
        return DispatcherRouter(parse_dispatcher_config(config), reactor)
