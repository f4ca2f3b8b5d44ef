"""RFC 3263 section 4 server location: transport, port and addresses for a SIP URI.

:class:`ServerLocator` turns a URI's host, port, transport parameter and scheme into the
ordered list of :class:`Hop` a request should be tried on (NAPTR -> SRV -> A/AAAA), asking
DNS through a ``twisted.names`` :class:`~twisted.internet.interfaces.IResolver` and keeping
the answers in a TTL cache bounded in size.

The lookup itself is written once, as a generator that yields the DNS keys it needs next
(``(name, type)`` lists) and receives their answers. One driver feeds it from the cache
(``cached()``, and the plain-list hot path of ``locate()``) and, at the first key the cache
cannot answer, from queries to the resolver (``locate()`` then returns a Deferred).

Order when a name has neither a port nor a transport (RFC 3263 4.1):

1. NAPTR: records with flag "s" and service SIP+D2U, SIP+D2T or SIPS+D2T (only SIPS+D2T
   for a sips URI) whose transport is in ``transports``, by order then preference; each
   replacement is looked up as SRV and their hops are concatenated (failover list).
2. No usable NAPTR (or none of their SRV leads to an address): SRV for each transport we
   can send on, tried one after the other as udp, tcp, tls (``_sips._tcp`` only, for a
   sips URI); the first transport with SRV records wins. UDP first follows RFC 3261's
   baseline (every element supports UDP) and what Kamailio and OpenSIPS do.
3. No SRV record at all: A/AAAA of the name with udp (tls for sips) and the default port.
   An SRV set that exists but leads nowhere (only "." targets, no addresses) does not
   fall back to A: the domain said where its SIP service is.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Generator, Iterable, Mapping
from typing import Any, NamedTuple, cast

from twisted.internet import defer
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime, IResolver
from twisted.names import client, dns, error
from twisted.python.failure import Failure

from ..sip.settings import is_ip

__all__ = ["Hop", "LookupFailed", "ServerLocator", "make_resolver"]

DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}
_SRV_PREFIX = {"udp": "_sip._udp.", "tcp": "_sip._tcp.", "tls": "_sips._tcp."}
_NAPTR_SERVICES = {"sip+d2u": "udp", "sip+d2t": "tcp", "sips+d2t": "tls"}
_TYPE_NAMES = {dns.A: "A", dns.AAAA: "AAAA", dns.SRV: "SRV", dns.NAPTR: "NAPTR"}


class Hop(NamedTuple):
    """One place to send a request: transport, IP literal and port, and the name it came from."""

    transport: str  # "udp" | "tcp" | "tls"
    host: str  # an IP literal (IPv6 without brackets)
    port: int
    name: str  # the URI's host or the SRV target (TLS SNI and identity); host for IP literals


class LookupFailed(Exception):
    """No hop could be found; ``reason`` says why in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# What the cache holds per (name, type): A/AAAA -> IP strings; SRV -> _Srv; NAPTR -> _Naptr.
Key = tuple[str, int]
Records = tuple[Any, ...]
Outcome = Records | LookupFailed
_Plan = Generator[list[Key], list[Outcome], Any]


class _Srv(NamedTuple):
    priority: int
    weight: int
    port: int
    target: str
    glue: tuple[str, ...] | None  # addresses from the additional section, if it had any


class _Naptr(NamedTuple):
    order: int
    preference: int
    flags: str
    service: str
    replacement: str


class _Pending:
    """One query in flight and the Deferreds of everyone waiting for it."""

    __slots__ = ("done", "guard", "waiters")

    def __init__(self) -> None:
        self.waiters: list[Deferred[Outcome]] = []
        self.guard: Any = None
        self.done = False


def _normalise(name: str) -> str:
    name = name.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        return name[1:-1]
    return name.rstrip(".")


def _text(value: bytes | str | dns.Name | dns.Charstr) -> str:
    if isinstance(value, dns.Name | dns.Charstr):
        value = value.name if isinstance(value, dns.Name) else value.string
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return value.lower().rstrip(".")


def order_srv(records: Iterable[_Srv], rng: random.Random) -> list[_Srv]:
    """RFC 2782 order: priority ascending; inside a priority, weighted random selection.

    Weight-0 records stay usable (they are drawn with a small chance, and come last when
    everything else has been picked); their order among themselves is shuffled.
    """
    by_priority: dict[int, list[_Srv]] = {}
    for record in records:
        by_priority.setdefault(record.priority, []).append(record)
    ordered: list[_Srv] = []
    for priority in sorted(by_priority):
        group = by_priority[priority]
        rng.shuffle(group)
        group.sort(key=lambda r: r.weight != 0)  # weight 0 first, as RFC 2782 places them
        while group:
            point = rng.randint(0, sum(r.weight for r in group))
            running = 0
            for index, record in enumerate(group):
                running += record.weight
                if running >= point:
                    ordered.append(group.pop(index))
                    break
    return ordered


class ServerLocator:
    """RFC 3263 server location with a TTL cache, time from ``clock``.

    ``resolver`` None means hosts only: a name outside ``hosts`` fails at once.
    ``transports`` are those the proxy can send on ("tls" only when given). TTLs are
    clamped to [``min_ttl``, ``max_ttl``]; NXDOMAIN and empty answers are cached for
    ``negative_ttl``; timeouts and server failures are not cached. ``query_timeout`` bounds
    each query even when the resolver never answers; ``max_entries`` bounds the cache
    (oldest entries are dropped first).

    Failures known without a query (an unsupported transport, sips without TLS, a name
    outside ``hosts`` in hosts-only mode, cached negative answers) are raised as
    :class:`LookupFailed` by :meth:`locate` itself; failures found by querying fail the
    returned Deferred with it. Callers handle both.
    """

    def __init__(
        self,
        clock: IReactorTime,
        resolver: IResolver | None,
        *,
        hosts: Mapping[str, str] = {},
        transports: Iterable[str] = ("udp", "tcp"),
        min_ttl: float = 0,
        max_ttl: float = 3600,
        negative_ttl: float = 30,
        query_timeout: float = 30,
        max_entries: int = 10_000,
        rng: random.Random | None = None,
    ) -> None:
        self._clock: Any = clock
        self._resolver: Any = resolver
        self._hosts = {_normalise(name): _normalise(address) for name, address in hosts.items()}
        self._transports = frozenset(t.lower() for t in transports)
        self._min_ttl = min_ttl
        self._max_ttl = max_ttl
        self._negative_ttl = negative_ttl
        self._query_timeout = query_timeout
        self._max_entries = max_entries
        self._rng = rng if rng is not None else random.Random()
        self._cache: dict[Key, tuple[float, Records]] = {}
        self._inflight: dict[Key, _Pending] = {}
        self._srv_order = [t for t in ("udp", "tcp", "tls") if t in self._transports]

    # -- public

    def locate(
        self, host: str, port: int | None, transport: str | None, secure: bool
    ) -> list[Hop] | Deferred[list[Hop]]:
        """The hops for a URI's ``host``, ``port`` and ``transport`` parameter; ``secure`` for sips.

        A plain non-empty list when literals, ``hosts`` or the cache answer; otherwise a
        Deferred firing with one, or failing with :class:`LookupFailed`. A failure known
        without a query is raised here instead (see the class docstring).
        """
        name = _normalise(host)
        chosen = self._check_transport(transport, secure)
        direct = self._direct(name, port, chosen, secure)
        if direct is not None:
            return direct
        if self._resolver is None:
            raise LookupFailed(f"{name} is not in [dns] hosts")
        result = self._drive(self._plan(name, port, chosen, secure), None, cache_only=False)
        assert result is not None
        return result

    def cached(self, host: str, port: int | None, transport: str | None, secure: bool) -> list[Hop] | None:
        """The hops if literals, ``hosts`` and the cache answer without a query, else None.

        None too when the cached answers say the lookup fails.
        """
        try:
            name = _normalise(host)
            chosen = self._check_transport(transport, secure)
            direct = self._direct(name, port, chosen, secure)
            if direct is not None or self._resolver is None:
                return direct
            result = self._drive(self._plan(name, port, chosen, secure), None, cache_only=True)
        except LookupFailed:
            return None
        assert not isinstance(result, Deferred)
        return result

    # -- rules that need no DNS

    def _check_transport(self, transport: str | None, secure: bool) -> str | None:
        if transport is None:
            if secure and "tls" not in self._transports:
                raise LookupFailed("a sips URI needs TLS and there is no TLS transport")
            return None
        chosen = transport.lower()
        if secure:
            if chosen == "tcp":
                chosen = "tls"  # RFC 5630: sips with transport=tcp is TLS over TCP
            if chosen != "tls":
                raise LookupFailed(f"a sips URI cannot be sent over {chosen}")
        if chosen not in self._transports:
            raise LookupFailed(f"no {chosen} transport to send on")
        return chosen

    def _default_transport(self, secure: bool) -> str:
        if secure:
            return "tls"
        return self._srv_order[0] if self._srv_order else "udp"

    def _direct(self, name: str, port: int | None, transport: str | None, secure: bool) -> list[Hop] | None:
        """Hops for an IP literal or a ``hosts`` name (RFC 3263 4.1/4.2 without DNS)."""
        if not name:
            raise LookupFailed("no host to locate")
        address = name if is_ip(name) else self._hosts.get(name)
        if address is None:
            return None
        transport = transport or self._default_transport(secure)
        return [Hop(transport, address, port or DEFAULT_PORTS[transport], name)]

    # -- the lookup, as a generator of DNS keys

    def _plan(self, name: str, port: int | None, transport: str | None, secure: bool) -> _Plan:
        if port is not None:
            transport = transport or self._default_transport(secure)
            return (yield from self._address_hops(name, transport, port, f"no A or AAAA records for {name}"))
        if transport is not None:
            hops, exists, failure = yield from self._srv_hops([(_SRV_PREFIX[transport] + name, transport)])
            if hops:
                return hops
            if failure is not None:
                raise LookupFailed(failure)
            if exists:
                raise LookupFailed(f"no reachable SRV target for {name} over {transport}")
            default = DEFAULT_PORTS[transport]
            return (yield from self._address_hops(name, transport, default, f"no SRV or A records for {name}"))

        [naptr] = yield [(name, dns.NAPTR)]
        if isinstance(naptr, LookupFailed):
            raise LookupFailed(naptr.reason)
        services = self._naptr_services(naptr, secure)
        if services:
            hops, _, failure = yield from self._srv_hops(services)
            if hops:
                return hops
            if failure is not None:
                raise LookupFailed(failure)

        any_srv = False
        for transport in ["tls"] if secure else self._srv_order:
            hops, exists, failure = yield from self._srv_hops([(_SRV_PREFIX[transport] + name, transport)])
            if hops:
                return hops
            if failure is not None:
                raise LookupFailed(failure)
            any_srv = any_srv or exists
        if any_srv:
            raise LookupFailed(f"no reachable SRV target for {name}")
        transport = self._default_transport(secure)
        default = DEFAULT_PORTS[transport]
        return (yield from self._address_hops(name, transport, default, f"no SRV or A records for {name}"))

    def _naptr_services(self, records: Records, secure: bool) -> list[tuple[str, str]]:
        """(SRV name, transport) of the usable NAPTR records, by order then preference."""
        usable: list[tuple[int, int, str, str]] = []
        for record in records:
            transport = _NAPTR_SERVICES.get(record.service)
            if transport is None or transport not in self._transports or (secure and transport != "tls"):
                continue
            if record.flags != "s" or record.replacement in ("", "."):
                continue
            usable.append((record.order, record.preference, record.replacement, transport))
        usable.sort(key=lambda u: (u[0], u[1]))
        return [(replacement, transport) for _, _, replacement, transport in usable]

    def _srv_hops(self, services: list[tuple[str, str]]) -> _Plan:
        """Hops of the SRV sets ``services`` in RFC 2782 order: (hops, any SRV, first failure)."""
        outcomes = yield [(srv_name, dns.SRV) for srv_name, _ in services]
        failures: list[str] = []
        exists = False
        ordered: list[tuple[str, _Srv]] = []
        for (_, transport), outcome in zip(services, outcomes, strict=True):
            if isinstance(outcome, LookupFailed):
                failures.append(outcome.reason)
                continue
            exists = exists or bool(outcome)
            ordered.extend((transport, r) for r in order_srv(outcome, self._rng) if r.target not in ("", "."))
        targets = list(dict.fromkeys(r.target for _, r in ordered if r.glue is None))
        addresses = yield from self._addresses(targets)
        hops: list[Hop] = []
        for transport, record in ordered:
            found = self._hosts_or_literal(record.target) or record.glue or addresses[record.target]
            if isinstance(found, LookupFailed):
                failures.append(found.reason)
                continue
            hops.extend(Hop(transport, address, record.port, record.target) for address in found)
        return list(dict.fromkeys(hops)), exists, (failures[0] if failures else None)

    def _address_hops(self, name: str, transport: str, port: int, empty: str) -> _Plan:
        found = (yield from self._addresses([name]))[name]
        if isinstance(found, LookupFailed):
            raise LookupFailed(found.reason)
        if not found:
            raise LookupFailed(empty)
        return [Hop(transport, address, port, name) for address in found]

    def _hosts_or_literal(self, name: str) -> tuple[str, ...] | None:
        if name in self._hosts:
            return (self._hosts[name],)
        if is_ip(name):
            return (name,)
        return None

    def _addresses(self, names: list[str]) -> _Plan:
        """name -> its addresses (A first, then AAAA) or the LookupFailed that hid them."""
        result: dict[str, tuple[str, ...] | LookupFailed] = {}
        asked: list[str] = []
        for name in names:
            known = self._hosts_or_literal(name)
            if known is not None:
                result[name] = known
            else:
                asked.append(name)
        if asked:
            outcomes = yield [(name, rtype) for name in asked for rtype in (dns.A, dns.AAAA)]
            for index, name in enumerate(asked):
                v4, v6 = outcomes[2 * index], outcomes[2 * index + 1]
                found = (() if isinstance(v4, LookupFailed) else v4) + (() if isinstance(v6, LookupFailed) else v6)
                failed = v4 if isinstance(v4, LookupFailed) else v6 if isinstance(v6, LookupFailed) else None
                result[name] = failed if failed is not None and not found else found
        return result

    # -- the driver: cache first, then queries

    def _drive(self, plan: _Plan, outcomes: list[Outcome] | None, cache_only: bool) -> Any:
        """Run ``plan`` to its hops: a list, a Deferred (a key was not cached) or None (cache_only)."""
        while True:
            try:
                keys = next(plan) if outcomes is None else plan.send(outcomes)
            except StopIteration as stop:
                hops: list[Hop] = stop.value
                return hops
            now = self._clock.seconds()
            cached = [self._cache_get(key, now) for key in keys]
            missing = [index for index, outcome in enumerate(cached) if outcome is None]
            if not missing:
                outcomes = [outcome for outcome in cached if outcome is not None]
                continue
            if cache_only:
                plan.close()
                return None
            return self._resume_after(plan, keys, cached, missing)

    def _resume_after(
        self, plan: _Plan, keys: list[Key], cached: list[Records | None], missing: list[int]
    ) -> Deferred[list[Hop]]:
        def resume(answers: list[Outcome]) -> Any:
            outcomes: list[Any] = list(cached)
            for index, answer in zip(missing, answers, strict=True):
                outcomes[index] = answer
            return self._drive(plan, outcomes, cache_only=False)

        waiting: Deferred[list[Outcome]] = gatherResults([self._query(keys[index]) for index in missing])
        return waiting.addCallback(resume)

    def _cache_get(self, key: Key, now: float) -> Records | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        if entry[0] <= now:
            del self._cache[key]
            return None
        return entry[1]

    def _cache_put(self, key: Key, records: Records, ttl: float) -> None:
        self._cache.pop(key, None)
        if ttl <= 0:
            return
        self._cache[key] = (self._clock.seconds() + ttl, records)
        while len(self._cache) > self._max_entries:
            del self._cache[next(iter(self._cache))]

    def _query(self, key: Key) -> Deferred[Outcome]:
        """The answer for ``key`` as records or a LookupFailed value; one query per key in flight."""
        waiter: Deferred[Outcome] = Deferred()
        pending = self._inflight.get(key)
        if pending is not None:
            pending.waiters.append(waiter)
            return waiter
        pending = self._inflight[key] = _Pending()
        pending.waiters.append(waiter)
        name, rtype = key
        try:
            answer: Deferred[Any] = self._resolver.query(dns.Query(name, rtype, dns.IN))
        except Exception as exc:  # a resolver that raises instead of failing its Deferred
            self._finish(key, pending, self._failure(Failure(exc), key))
            return waiter

        def expire() -> None:
            typename = _TYPE_NAMES.get(rtype, str(rtype))
            self._finish(key, pending, LookupFailed(f"DNS timeout for {name} {typename}"))
            answer.cancel()

        pending.guard = self._clock.callLater(self._query_timeout, expire)
        answer.addCallback(self._parse, key).addErrback(self._failure, key)
        answer.addCallback(lambda outcome: self._finish(key, pending, outcome))
        return waiter

    def _finish(self, key: Key, pending: _Pending, outcome: Outcome) -> None:
        if pending.done:
            return
        pending.done = True
        if pending.guard is not None and pending.guard.active():
            pending.guard.cancel()
        if self._inflight.get(key) is pending:
            del self._inflight[key]
        for waiter in pending.waiters:
            waiter.callback(outcome)

    def _parse(self, answer: tuple[list[dns.RRHeader], Any, list[dns.RRHeader]], key: Key) -> Outcome:
        """Records of the asked type from a resolver answer, cached for their TTL."""
        answers, _, additional = answer
        _, rtype = key
        matching = [rr for rr in answers if rr.type == rtype]
        records = tuple(self._record(rr.payload, additional) for rr in matching)
        if not records:
            self._cache_put(key, (), self._negative_ttl)
            return ()
        ttl = min(rr.ttl for rr in matching)
        if rtype == dns.SRV:  # glue is good for as long as the shortest of its records
            glue_ttls = [rr.ttl for rr in additional if rr.type in (dns.A, dns.AAAA)]
            if any(r.glue for r in records) and glue_ttls:
                ttl = min(ttl, *glue_ttls)
        self._cache_put(key, records, min(max(ttl, self._min_ttl), self._max_ttl))
        return records

    @staticmethod
    def _record(payload: Any, additional: list[dns.RRHeader]) -> Any:
        if isinstance(payload, dns.Record_A):
            return payload.dottedQuad()
        if isinstance(payload, dns.Record_AAAA):
            return socket.inet_ntop(socket.AF_INET6, payload.address)
        if isinstance(payload, dns.Record_SRV):
            target = _text(payload.target)
            glue = [rr for rr in additional if rr.type in (dns.A, dns.AAAA) and _text(rr.name) == target]
            glue.sort(key=lambda rr: rr.type != dns.A)  # A before AAAA, as for queried targets
            addresses = tuple(ServerLocator._record(rr.payload, []) for rr in glue)
            return _Srv(payload.priority, payload.weight, payload.port, target, addresses or None)
        if isinstance(payload, dns.Record_NAPTR):
            flags, service = _text(payload.flags), _text(payload.service)
            return _Naptr(payload.order, payload.preference, flags, service, _text(payload.replacement))
        raise TypeError(f"unexpected record {payload!r}")

    def _failure(self, failure: Failure, key: Key) -> Outcome:
        """Negative answers become an empty (cached) result; everything else a LookupFailed."""
        name, rtype = key
        typename = _TYPE_NAMES.get(rtype, str(rtype))
        if failure.check(defer.TimeoutError):
            return LookupFailed(f"DNS timeout for {name} {typename}")
        if failure.check(error.DNSServerError):
            return LookupFailed(f"DNS server failure for {name} {typename}")
        if failure.check(error.DNSQueryRefusedError):
            return LookupFailed(f"DNS query refused for {name} {typename}")
        if failure.check(error.DNSNameError, error.AuthoritativeDomainError) or failure.type is error.DomainError:
            self._cache_put(key, (), self._negative_ttl)  # NXDOMAIN, or a local resolver's "no such name"
            return ()
        return LookupFailed(f"DNS error for {name} {typename}: {failure.getErrorMessage() or failure.type.__name__}")


def make_resolver(servers: list[tuple[str, int]], timeout: float, *, reactor: Any = None) -> IResolver:
    """A twisted.names client that asks only ``servers`` (never resolv.conf).

    ``timeout`` is the total time for one query; it is spent on three attempts (1/7, 2/7,
    4/7 of it), rotating through the servers. ``reactor`` defaults to the global one.
    """
    if not servers:
        raise ValueError("make_resolver needs at least one DNS server")
    attempts = (timeout / 7, 2 * timeout / 7, 4 * timeout / 7)
    resolver: Any = client.Resolver(resolv=None, servers=list(servers), timeout=attempts, reactor=reactor)
    return cast(IResolver, resolver)
