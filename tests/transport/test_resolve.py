"""RFC 3263 server location: ServerLocator rules, SRV order, the TTL cache, and make_resolver.

Unit tests drive the locator with a Clock and a FakeResolver answering from a zone (the
same data format as tests/dnsserver.py). The tests at the end go through real UDP and TCP
sockets on 127.0.0.1: a trial TestCase (collected by pytest) runs the in-process server and
make_resolver on the global reactor, and one test starts ``python -m tests.dnsserver``.
"""

from __future__ import annotations

import random
import socket
import struct
from collections import Counter
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.names import dns, error
from twisted.python.failure import Failure
from twisted.trial import unittest as trial

from sipgate_proxy.transport.resolve import Hop, LookupFailed, ServerLocator, make_resolver
from tests.dnsserver import DNSProcess, FakeResolver, listen_dns

ROOT = Path(__file__).resolve().parents[2]

ZONE: dict[str, Any] = {
    "example.com": [
        # DNS order differs from (order, preference) order on purpose
        ("NAPTR", 20, 10, "s", "SIP+D2U", "", "_sip._udp.example.com", 300),
        ("NAPTR", 10, 20, "s", "SIP+D2T", "", "_sip._tcp.example.com", 300),
        ("NAPTR", 10, 10, "s", "SIPS+D2T", "", "_sips._tcp.example.com", 300),
        ("NAPTR", 5, 10, "s", "SIP+D2S", "", "_sip._sctp.example.com", 300),  # SCTP: not ours
        ("NAPTR", 5, 20, "a", "SIP+D2U", "", "sip9.example.com", 300),  # not an SRV pointer
    ],
    "_sip._udp.example.com": [("SRV", 10, 0, 5060, "sip1.example.com", 300)],
    "_sip._tcp.example.com": [("SRV", 10, 0, 5062, "sip2.example.com", 300)],
    "_sips._tcp.example.com": [("SRV", 10, 0, 5061, "sip3.example.com", 300)],
    "sip1.example.com": [("A", "192.0.2.1", 300), ("AAAA", "2001:db8::1", 300)],
    "sip2.example.com": [("A", "192.0.2.2", 300)],
    "sip3.example.com": [("A", "192.0.2.3", 300)],
    # no NAPTR: SRV per transport
    "srv.example.net": [("A", "198.51.100.99", 300)],
    "_sip._tcp.srv.example.net": [("SRV", 10, 0, 5070, "b.example.net", 300)],
    "_sips._tcp.srv.example.net": [("SRV", 10, 0, 5071, "c.example.net", 300)],
    "b.example.net": [("A", "198.51.100.2", 300)],
    "c.example.net": [("A", "198.51.100.3", 300)],
    # no NAPTR, no SRV: A/AAAA with the default port
    "plain.example.org": [("A", "203.0.113.5", 120), ("AAAA", "2001:db8::5", 60)],
}


def make(
    zone: dict[str, Any] = ZONE, *, glue: bool = False, **options: Any
) -> tuple[ServerLocator, FakeResolver, Clock]:
    clock = Clock()
    resolver = FakeResolver(zone, glue=glue)
    options.setdefault("transports", ("udp", "tcp", "tls"))
    locator = ServerLocator(clock, resolver, rng=random.Random(7), **options)  # type: ignore[arg-type]
    return locator, resolver, clock


def settled(result: list[Hop] | Deferred[list[Hop]]) -> list[Hop]:
    """The hops of a plain list or of an already fired Deferred (raising its failure)."""
    if not isinstance(result, Deferred):
        return result
    outcome: list[Any] = []
    result.addBoth(outcome.append)
    assert outcome, "the lookup has not finished"
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    hops: list[Hop] = outcome[0]
    return hops


def failure_of(result: Any) -> LookupFailed:
    """The LookupFailed of a failed Deferred."""
    assert isinstance(result, Deferred)
    outcome: list[Any] = []
    result.addBoth(outcome.append)
    assert outcome and isinstance(outcome[0], Failure), outcome
    assert isinstance(outcome[0].value, LookupFailed)
    return outcome[0].value


# -- literals, hosts, transports


def test_ipv4_literal_needs_no_query_and_defaults_to_udp_5060() -> None:
    """An IPv4 literal with nothing else becomes one udp hop on 5060, as a plain list, with no DNS query."""
    locator, resolver, _ = make()
    assert locator.locate("192.0.2.10", None, None, False) == [Hop("udp", "192.0.2.10", 5060, "192.0.2.10")]
    assert resolver.queries == []


def test_ipv6_literal_in_brackets_with_sips_defaults_to_tls_5061() -> None:
    """A bracketed IPv6 literal in a sips URI is tls on 5061; the hop's host has no brackets."""
    locator, resolver, _ = make()
    hops = locator.locate("[2001:DB8::7]", None, None, True)
    assert hops == [Hop("tls", "2001:db8::7", 5061, "2001:db8::7")]
    assert resolver.queries == []


def test_literal_keeps_the_given_port_and_transport() -> None:
    """Port and transport parameter of a literal are used as given (transport case-insensitive)."""
    locator, _, _ = make()
    assert locator.locate("192.0.2.10", 5080, "TCP", False) == [Hop("tcp", "192.0.2.10", 5080, "192.0.2.10")]
    assert locator.locate("192.0.2.10", None, "tls", False) == [Hop("tls", "192.0.2.10", 5061, "192.0.2.10")]


def test_transport_we_cannot_send_on_is_refused_before_any_query() -> None:
    """A transport outside ``transports`` (tls without a TLS listener, sctp) raises LookupFailed at once."""
    locator, resolver, _ = make(transports=("udp", "tcp"))
    with pytest.raises(LookupFailed, match="no tls transport"):
        locator.locate("example.com", None, "tls", False)
    with pytest.raises(LookupFailed, match="no sctp transport"):
        locator.locate("192.0.2.1", None, "sctp", False)
    assert resolver.queries == []


def test_sips_needs_tls() -> None:
    """A sips URI is refused without a TLS transport, and over udp; transport=tcp means TLS (RFC 5630)."""
    locator, _, _ = make(transports=("udp", "tcp"))
    with pytest.raises(LookupFailed, match="needs TLS"):
        locator.locate("example.com", None, None, True)
    locator, _, _ = make()
    with pytest.raises(LookupFailed, match="cannot be sent over udp"):
        locator.locate("192.0.2.1", None, "udp", True)
    assert locator.locate("192.0.2.1", None, "tcp", True) == [Hop("tls", "192.0.2.1", 5061, "192.0.2.1")]


def test_default_transport_without_udp_listener_is_tcp() -> None:
    """When the proxy cannot send UDP, a literal without transport parameter goes over tcp."""
    locator, _, _ = make(transports=("tcp",))
    assert locator.locate("192.0.2.1", None, None, False) == [Hop("tcp", "192.0.2.1", 5060, "192.0.2.1")]


def test_hosts_mapping_answers_without_dns() -> None:
    """A name in ``hosts`` (matched case-insensitively) is used like a literal, with no query at all."""
    locator, resolver, _ = make(hosts={"gw.example.com": "192.0.2.50"})
    assert locator.locate("GW.example.com.", None, None, False) == [Hop("udp", "192.0.2.50", 5060, "gw.example.com")]
    assert locator.locate("gw.example.com", 5090, "tcp", False) == [Hop("tcp", "192.0.2.50", 5090, "gw.example.com")]
    assert resolver.queries == []


def test_hosts_mapping_answers_for_srv_targets() -> None:
    """An SRV target named in ``hosts`` takes its address from there instead of A/AAAA queries."""
    locator, resolver, _ = make(hosts={"sip2.example.com": "10.0.0.2"})
    hops = settled(locator.locate("example.com", None, "tcp", False))
    assert hops == [Hop("tcp", "10.0.0.2", 5062, "sip2.example.com")]
    assert resolver.queries == [("_sip._tcp.example.com", "SRV")]


def test_no_resolver_means_hosts_only() -> None:
    """With resolver None a hosts name works and any other name raises LookupFailed at once."""
    locator = ServerLocator(Clock(), None, hosts={"gw.example.com": "192.0.2.50"})
    assert locator.locate("gw.example.com", None, None, False) == [Hop("udp", "192.0.2.50", 5060, "gw.example.com")]
    with pytest.raises(LookupFailed, match=r"other\.example\.com is not in \[dns\] hosts"):
        locator.locate("other.example.com", None, None, False)
    assert locator.cached("other.example.com", None, None, False) is None


def test_empty_host_fails_without_a_query() -> None:
    """An empty host (or just brackets) is refused at once instead of asking DNS about the root."""
    locator, resolver, _ = make()
    with pytest.raises(LookupFailed, match="no host"):
        locator.locate("", None, None, False)
    assert locator.cached("[]", None, None, False) is None
    assert resolver.queries == []


# -- the RFC 3263 steps


def test_explicit_port_asks_only_a_and_aaaa() -> None:
    """A name with a port skips NAPTR and SRV: A then AAAA addresses, default transport udp."""
    locator, resolver, _ = make()
    hops = settled(locator.locate("sip1.example.com", 5080, None, False))
    assert hops == [
        Hop("udp", "192.0.2.1", 5080, "sip1.example.com"),
        Hop("udp", "2001:db8::1", 5080, "sip1.example.com"),
    ]
    assert sorted(resolver.queries) == [("sip1.example.com", "A"), ("sip1.example.com", "AAAA")]


def test_explicit_port_with_sips_is_tls() -> None:
    """A sips URI with a port and no transport resolves A/AAAA and sends over tls."""
    locator, _, _ = make()
    assert settled(locator.locate("sip3.example.com", 5999, None, True)) == [
        Hop("tls", "192.0.2.3", 5999, "sip3.example.com")
    ]


def test_transport_without_port_asks_that_transports_srv() -> None:
    """transport=tcp without port: _sip._tcp SRV only (no NAPTR); tls asks _sips._tcp."""
    locator, resolver, _ = make()
    assert settled(locator.locate("example.com", None, "tcp", False)) == [
        Hop("tcp", "192.0.2.2", 5062, "sip2.example.com")
    ]
    assert resolver.queries[0] == ("_sip._tcp.example.com", "SRV")
    assert ("example.com", "NAPTR") not in resolver.queries
    assert settled(locator.locate("example.com", None, "tls", False)) == [
        Hop("tls", "192.0.2.3", 5061, "sip3.example.com")
    ]
    assert ("_sips._tcp.example.com", "SRV") in resolver.queries


def test_transport_without_srv_falls_back_to_a_with_the_default_port() -> None:
    """No SRV for the given transport: A/AAAA of the name on that transport's default port."""
    locator, resolver, _ = make()
    hops = settled(locator.locate("plain.example.org", None, "tls", False))
    assert hops == [
        Hop("tls", "203.0.113.5", 5061, "plain.example.org"),
        Hop("tls", "2001:db8::5", 5061, "plain.example.org"),
    ]
    assert resolver.queries[0] == ("_sips._tcp.plain.example.org", "SRV")


def test_naptr_records_are_filtered_and_followed_in_order_then_preference() -> None:
    """Usable NAPTRs (flag s, SIP+D2U/SIP+D2T/SIPS+D2T) by order then preference: tls, tcp, then udp."""
    locator, resolver, _ = make()
    hops = settled(locator.locate("example.com", None, None, False))
    assert hops == [
        Hop("tls", "192.0.2.3", 5061, "sip3.example.com"),
        Hop("tcp", "192.0.2.2", 5062, "sip2.example.com"),
        Hop("udp", "192.0.2.1", 5060, "sip1.example.com"),
        Hop("udp", "2001:db8::1", 5060, "sip1.example.com"),
    ]
    assert resolver.queries[0] == ("example.com", "NAPTR")
    assert ("_sip._sctp.example.com", "SRV") not in resolver.queries
    assert not any(name == "sip9.example.com" for name, _ in resolver.queries)


def test_naptr_for_transports_we_lack_is_skipped() -> None:
    """Without a TLS listener the SIPS+D2T record is ignored: tcp comes first, then udp."""
    locator, resolver, _ = make(transports=("udp", "tcp"))
    hops = settled(locator.locate("example.com", None, None, False))
    assert [hop.transport for hop in hops] == ["tcp", "udp", "udp"]
    assert ("_sips._tcp.example.com", "SRV") not in resolver.queries


def test_naptr_for_sips_keeps_only_sips_d2t() -> None:
    """A sips URI follows only SIPS+D2T, and only TLS hops come back."""
    locator, resolver, _ = make()
    hops = settled(locator.locate("example.com", None, None, True))
    assert hops == [Hop("tls", "192.0.2.3", 5061, "sip3.example.com")]
    assert ("_sip._udp.example.com", "SRV") not in resolver.queries


def test_without_naptr_srv_is_tried_udp_then_tcp_then_tls_and_the_first_found_wins() -> None:
    """No NAPTR: _sip._udp (none), then _sip._tcp answers, so tcp hops only; _sips._tcp is not asked."""
    locator, resolver, _ = make()
    hops = settled(locator.locate("srv.example.net", None, None, False))
    assert hops == [Hop("tcp", "198.51.100.2", 5070, "b.example.net")]
    assert resolver.queries[:3] == [
        ("srv.example.net", "NAPTR"),
        ("_sip._udp.srv.example.net", "SRV"),
        ("_sip._tcp.srv.example.net", "SRV"),
    ]
    assert ("_sips._tcp.srv.example.net", "SRV") not in resolver.queries
    assert ("srv.example.net", "A") not in resolver.queries


def test_without_naptr_sips_asks_only_sips_tcp() -> None:
    """No NAPTR and a sips URI: only _sips._tcp is asked."""
    locator, resolver, _ = make()
    hops = settled(locator.locate("srv.example.net", None, None, True))
    assert hops == [Hop("tls", "198.51.100.3", 5071, "c.example.net")]
    srv_queries = [name for name, rtype in resolver.queries if rtype == "SRV"]
    assert srv_queries == ["_sips._tcp.srv.example.net"]


def test_naptr_without_usable_records_falls_back_to_srv() -> None:
    """NAPTR records that are all unusable (SCTP only) lead to the SRV queries, as if absent."""
    zone = {
        "x.example": [("NAPTR", 10, 10, "s", "SIP+D2S", "", "_sip._sctp.x.example", 60)],
        "_sip._udp.x.example": [("SRV", 1, 0, 5060, "a.x.example", 60)],
        "a.x.example": [("A", "192.0.2.9", 60)],
    }
    locator, _, _ = make(zone)
    assert settled(locator.locate("x.example", None, None, False)) == [Hop("udp", "192.0.2.9", 5060, "a.x.example")]


def test_no_naptr_no_srv_uses_a_and_aaaa_with_udp_5060() -> None:
    """Without NAPTR and SRV the name's own A then AAAA records are used with udp on 5060."""
    locator, resolver, _ = make()
    hops = settled(locator.locate("plain.example.org", None, None, False))
    assert hops == [
        Hop("udp", "203.0.113.5", 5060, "plain.example.org"),
        Hop("udp", "2001:db8::5", 5060, "plain.example.org"),
    ]
    assert resolver.queries[:4] == [
        ("plain.example.org", "NAPTR"),
        ("_sip._udp.plain.example.org", "SRV"),
        ("_sip._tcp.plain.example.org", "SRV"),
        ("_sips._tcp.plain.example.org", "SRV"),
    ]


def test_no_records_at_all_fails_with_a_reason() -> None:
    """A name without any record fails the Deferred with LookupFailed naming the host."""
    locator, _, _ = make()
    failed = failure_of(locator.locate("nowhere.example.com", None, None, False))
    assert failed.reason == "no SRV or A records for nowhere.example.com"


# -- SRV order and targets


def test_srv_priority_orders_and_every_address_of_a_target_comes_before_the_next() -> None:
    """Lower priority first; each target expands to all its addresses (A, then AAAA) in place."""
    zone = {
        "_sip._udp.p.example": [
            ("SRV", 20, 0, 5062, "backup.p.example", 60),
            ("SRV", 10, 0, 5060, "main.p.example", 60),
        ],
        "main.p.example": [("A", "192.0.2.1", 60), ("A", "192.0.2.2", 60), ("AAAA", "2001:db8::1", 60)],
        "backup.p.example": [("A", "192.0.2.3", 60)],
    }
    locator, _, _ = make(zone)
    assert settled(locator.locate("p.example", None, "udp", False)) == [
        Hop("udp", "192.0.2.1", 5060, "main.p.example"),
        Hop("udp", "192.0.2.2", 5060, "main.p.example"),
        Hop("udp", "2001:db8::1", 5060, "main.p.example"),
        Hop("udp", "192.0.2.3", 5062, "backup.p.example"),
    ]


def test_srv_weights_pick_the_first_target_in_proportion_and_weight_zero_stays_usable() -> None:
    """Within a priority the first pick follows weight/(sum+1) (RFC 2782); every target is always listed."""
    zone = {
        "_sip._udp.w.example": [
            ("SRV", 10, 60, 5060, "a.w.example", 3600),
            ("SRV", 10, 30, 5060, "b.w.example", 3600),
            ("SRV", 10, 10, 5060, "c.w.example", 3600),
            ("SRV", 10, 0, 5060, "z.w.example", 3600),
        ],
        "a.w.example": [("A", "192.0.2.1", 3600)],
        "b.w.example": [("A", "192.0.2.2", 3600)],
        "c.w.example": [("A", "192.0.2.3", 3600)],
        "z.w.example": [("A", "192.0.2.4", 3600)],
    }
    locator, _, _ = make(zone)
    settled(locator.locate("w.example", None, "udp", False))  # fill the cache
    draws = 5000
    first: Counter[str] = Counter()
    for _ in range(draws):
        hops = locator.locate("w.example", None, "udp", False)
        assert isinstance(hops, list)
        assert sorted(hop.name for hop in hops) == ["a.w.example", "b.w.example", "c.w.example", "z.w.example"]
        first[hops[0].name] += 1
    for name, weight in (("a.w.example", 60), ("b.w.example", 30), ("c.w.example", 10)):
        assert abs(first[name] / draws - weight / 101) < 0.03, (name, first)
    assert 0 < first["z.w.example"] < draws * 0.03


def test_srv_dot_target_is_skipped() -> None:
    """A "." target is not a server: the other records are used."""
    zone = {
        "_sip._udp.d.example": [("SRV", 1, 0, 0, ".", 60), ("SRV", 2, 0, 5060, "ok.d.example", 60)],
        "ok.d.example": [("A", "192.0.2.8", 60)],
    }
    locator, _, _ = make(zone)
    assert settled(locator.locate("d.example", None, "udp", False)) == [Hop("udp", "192.0.2.8", 5060, "ok.d.example")]


def test_srv_with_only_dot_target_fails_without_falling_back_to_a() -> None:
    """An SRV set saying "not available here" fails the lookup; the name's A record is not used."""
    zone = {"_sip._udp.d.example": [("SRV", 0, 0, 0, ".", 60)], "d.example": [("A", "192.0.2.8", 60)]}
    locator, resolver, _ = make(zone)
    failed = failure_of(locator.locate("d.example", None, "udp", False))
    assert "no reachable SRV target" in failed.reason
    assert ("d.example", "A") not in resolver.queries


def test_additional_section_addresses_are_used_without_queries() -> None:
    """SRV answers carrying the targets' A/AAAA in the additional section need no address query."""
    locator, resolver, _ = make(glue=True)
    hops = settled(locator.locate("example.com", None, "udp", False))
    assert hops == [
        Hop("udp", "192.0.2.1", 5060, "sip1.example.com"),
        Hop("udp", "2001:db8::1", 5060, "sip1.example.com"),
    ]
    assert resolver.queries == [("_sip._udp.example.com", "SRV")]


def test_srv_targets_without_glue_are_queried_in_parallel() -> None:
    """The A and AAAA queries of all SRV targets go out together, not one after the other."""
    locator, resolver, _ = make()
    resolver.hold = True
    result = locator.locate("example.com", None, None, False)
    resolver.release()  # NAPTR
    resolver.release()  # the three SRV sets at once
    waiting = sorted((query.name.name.decode(), dns.QUERY_TYPES[query.type]) for query, _ in resolver.held)
    assert waiting == [(f"sip{i}.example.com", rtype) for i in (1, 2, 3) for rtype in ("A", "AAAA")]
    resolver.release()
    assert len(settled(result)) == 4


def test_a_failing_target_is_skipped_when_another_answers() -> None:
    """One SRV target whose address lookup fails (SERVFAIL) is left out; the others remain."""
    locator, resolver, _ = make()
    resolver.failures[("sip3.example.com", "A")] = error.DNSServerError()
    resolver.failures[("sip3.example.com", "AAAA")] = error.DNSServerError()
    hops = settled(locator.locate("example.com", None, None, False))
    assert [hop.name for hop in hops] == ["sip2.example.com", "sip1.example.com", "sip1.example.com"]


def test_aaaa_failure_does_not_hide_a_records() -> None:
    """A server failure on AAAA alone still yields the A addresses."""
    locator, resolver, _ = make()
    resolver.failures[("sip1.example.com", "AAAA")] = error.DNSServerError()
    assert settled(locator.locate("sip1.example.com", 5060, None, False)) == [
        Hop("udp", "192.0.2.1", 5060, "sip1.example.com")
    ]


# -- failures


def test_servfail_becomes_lookup_failed_and_is_not_cached() -> None:
    """SERVFAIL on the NAPTR query fails the lookup with a reason; the next call asks again."""
    locator, resolver, _ = make()
    resolver.failures[("example.com", "NAPTR")] = error.DNSServerError()
    failed = failure_of(locator.locate("example.com", None, None, False))
    assert failed.reason == "DNS server failure for example.com NAPTR"
    failure_of(locator.locate("example.com", None, None, False))
    assert resolver.queries.count(("example.com", "NAPTR")) == 2


def test_resolver_timeout_becomes_lookup_failed() -> None:
    """A resolver's own timeout (DNSQueryTimeoutError) fails the lookup with LookupFailed."""
    locator, resolver, _ = make()
    resolver.failures[("_sip._tcp.example.com", "SRV")] = error.DNSQueryTimeoutError(1)
    failed = failure_of(locator.locate("example.com", None, "tcp", False))
    assert failed.reason == "DNS timeout for _sip._tcp.example.com SRV"


def test_a_resolver_that_never_answers_times_out_on_the_clock() -> None:
    """No answer within query_timeout: LookupFailed, and the resolver's Deferred is cancelled."""
    locator, resolver, clock = make(query_timeout=5)
    resolver.hold = True
    result = locator.locate("example.com", None, None, False)
    assert isinstance(result, Deferred) and not result.called
    clock.advance(4.9)
    assert not result.called
    clock.advance(0.1)
    assert failure_of(result).reason == "DNS timeout for example.com NAPTR"
    assert resolver.held[0][1].called
    assert clock.getDelayedCalls() == []


def test_other_resolver_errors_become_lookup_failed() -> None:
    """Refused and unexpected errors fail with LookupFailed too, never an unhandled error."""
    locator, resolver, _ = make()
    resolver.failures[("a.example", "A")] = error.DNSQueryRefusedError()
    resolver.failures[("a.example", "AAAA")] = OSError("network down")
    failed = failure_of(locator.locate("a.example", 5060, None, False))
    assert failed.reason == "DNS query refused for a.example A"
    resolver.failures[("a.example", "A")] = OSError("network down")
    failed = failure_of(locator.locate("a.example", 5060, None, False))
    assert failed.reason == "DNS error for a.example A: network down"


# -- the cache


def test_fresh_cache_answers_with_a_plain_list_and_no_query() -> None:
    """Once looked up, the same URI is answered from the cache as a plain list (the hot path)."""
    locator, resolver, _ = make()
    first = settled(locator.locate("example.com", None, None, False))
    asked = len(resolver.queries)
    again = locator.locate("example.com", None, None, False)
    assert again == first
    assert len(resolver.queries) == asked


def test_cached_never_queries() -> None:
    """cached() is None before a lookup (without asking DNS) and the hops afterwards."""
    locator, resolver, _ = make()
    assert locator.cached("example.com", None, None, False) is None
    assert resolver.queries == []
    hops = settled(locator.locate("example.com", None, None, False))
    assert locator.cached("example.com", None, None, False) == hops
    assert locator.cached("192.0.2.1", None, None, False) == [Hop("udp", "192.0.2.1", 5060, "192.0.2.1")]


def test_entries_expire_after_their_ttl() -> None:
    """A record is reused until its TTL passes on the clock; then it is asked again."""
    locator, resolver, clock = make()
    settled(locator.locate("plain.example.org", 5060, None, False))  # A ttl 120, AAAA ttl 60
    clock.advance(59)
    assert isinstance(locator.locate("plain.example.org", 5060, None, False), list)
    assert len(resolver.queries) == 2
    clock.advance(1)
    settled(locator.locate("plain.example.org", 5060, None, False))
    assert resolver.queries[2:] == [("plain.example.org", "AAAA")]
    clock.advance(60)
    settled(locator.locate("plain.example.org", 5060, None, False))
    assert sorted(resolver.queries[3:]) == [("plain.example.org", "A"), ("plain.example.org", "AAAA")]


def test_ttls_are_clamped_to_min_and_max() -> None:
    """A TTL below min_ttl is kept for min_ttl; one above max_ttl only for max_ttl."""
    zone = {"short.example": [("A", "192.0.2.1", 1)], "long.example": [("A", "192.0.2.2", 999999)]}
    locator, _, clock = make(zone, min_ttl=30, max_ttl=100, negative_ttl=1000)
    settled(locator.locate("short.example", 5060, None, False))
    settled(locator.locate("long.example", 5060, None, False))
    clock.advance(29)
    assert isinstance(locator.locate("short.example", 5060, None, False), list)
    clock.advance(1)
    assert locator.cached("short.example", 5060, None, False) is None
    clock.advance(69)
    assert isinstance(locator.locate("long.example", 5060, None, False), list)
    clock.advance(1)
    assert locator.cached("long.example", 5060, None, False) is None


def test_ttl_zero_is_not_cached() -> None:
    """A TTL of 0 (with min_ttl 0) is used for this lookup only."""
    locator, _, _ = make({"z.example": [("A", "192.0.2.1", 0)]})
    assert settled(locator.locate("z.example", 5060, None, False)) == [Hop("udp", "192.0.2.1", 5060, "z.example")]
    assert locator.cached("z.example", 5060, None, False) is None


def test_negative_answers_are_cached_for_negative_ttl() -> None:
    """NXDOMAIN and empty answers are remembered for negative_ttl: the failure is raised without a query."""
    locator, resolver, clock = make(negative_ttl=30)
    failure_of(locator.locate("nowhere.example.com", None, None, False))
    asked = len(resolver.queries)
    clock.advance(29)
    with pytest.raises(LookupFailed, match="no SRV or A records"):
        locator.locate("nowhere.example.com", None, None, False)
    assert len(resolver.queries) == asked
    assert locator.cached("nowhere.example.com", None, None, False) is None
    clock.advance(1)
    failure_of(locator.locate("nowhere.example.com", None, None, False))
    assert len(resolver.queries) == 2 * asked


def test_cache_is_bounded_and_drops_the_oldest() -> None:
    """With max_entries the cache never grows beyond it; the oldest entries go first."""
    zone = {f"h{i}.example": [("A", f"192.0.2.{i}", 3600)] for i in range(10)}
    locator, _, _ = make(zone, max_entries=4)
    for i in range(10):
        settled(locator.locate(f"h{i}.example", 5060, None, False))
    assert locator.cached("h0.example", 5060, None, False) is None
    assert locator.cached("h9.example", 5060, None, False) == [Hop("udp", "192.0.2.9", 5060, "h9.example")]
    assert len(locator._cache) == 4


def test_identical_lookups_in_flight_share_one_query() -> None:
    """Two lookups needing the same records while a query is out make one query, and both get hops."""
    locator, resolver, _ = make()
    resolver.hold = True
    first = locator.locate("sip1.example.com", 5060, None, False)
    second = locator.locate("sip1.example.com", 5070, "tcp", False)
    assert sorted(resolver.queries) == [("sip1.example.com", "A"), ("sip1.example.com", "AAAA")]
    resolver.release()
    assert [hop.port for hop in settled(first)] == [5060, 5060]
    assert [hop.transport for hop in settled(second)] == ["tcp", "tcp"]
    assert len(resolver.queries) == 2


# -- make_resolver


def test_make_resolver_uses_only_the_given_servers() -> None:
    """The client has exactly the given servers, no resolv.conf to read, and splits the timeout in three tries."""
    resolver: Any = make_resolver([("127.0.0.1", 5353), ("::1", 5353)], 7.0, reactor=Clock())
    assert resolver.servers == [("127.0.0.1", 5353), ("::1", 5353)]
    assert resolver.resolv is None
    assert list(resolver.dynServers) == []
    assert resolver.timeout == (1.0, 2.0, 4.0)


def test_make_resolver_refuses_an_empty_server_list() -> None:
    """Without servers there is nothing to ask: ValueError rather than falling back to resolv.conf."""
    with pytest.raises(ValueError, match="at least one DNS server"):
        make_resolver([], 5.0, reactor=Clock())


# -- real sockets on 127.0.0.1

LOOPBACK_ZONE: dict[str, Any] = {
    "example.test": [
        ("NAPTR", 10, 10, "s", "SIP+D2T", "", "_sip._tcp.example.test", 300),
        ("NAPTR", 20, 10, "s", "SIP+D2U", "", "_sip._udp.example.test", 300),
    ],
    "_sip._tcp.example.test": [("SRV", 10, 10, 5062, "sip1.example.test", 300)],
    "_sip._udp.example.test": [
        ("SRV", 10, 10, 5060, "sip1.example.test", 300),
        ("SRV", 20, 10, 5060, "sip2.example.test", 300),
    ],
    "sip1.example.test": [("A", "127.0.0.1", 300), ("AAAA", "::1", 300)],
    "sip2.example.test": [("A", "127.0.0.2", 300)],
    "broken.example.test": "SERVFAIL",
    "silent.example.test": "DROP",
}


class LoopbackDNSTests(trial.TestCase):
    """ServerLocator and make_resolver against tests/dnsserver.py over real loopback sockets."""

    timeout = 20

    def setUp(self) -> None:
        from twisted.internet import reactor

        self.reactor: Any = reactor
        self.server = listen_dns(reactor, LOOPBACK_ZONE, glue=False)
        self.addCleanup(self.server.stop)
        self.resolver = make_resolver([("127.0.0.1", self.server.number)], 0.7, reactor=reactor)
        self.locator = ServerLocator(reactor, self.resolver, transports=("udp", "tcp"))

    @defer.inlineCallbacks
    def test_naptr_srv_and_addresses_over_udp(self) -> Generator[Any, Any, None]:
        """The whole chain over real UDP: NAPTR -> SRV -> A/AAAA, in order; a second call is served from the cache."""
        hops = yield self.locator.locate("example.test", None, None, False)
        assert hops == [
            Hop("tcp", "127.0.0.1", 5062, "sip1.example.test"),
            Hop("tcp", "::1", 5062, "sip1.example.test"),
            Hop("udp", "127.0.0.1", 5060, "sip1.example.test"),
            Hop("udp", "::1", 5060, "sip1.example.test"),
            Hop("udp", "127.0.0.2", 5060, "sip2.example.test"),
        ]
        asked = len(self.server.authority.queries)
        assert self.locator.locate("example.test", None, None, False) == hops
        assert len(self.server.authority.queries) == asked

    @defer.inlineCallbacks
    def test_nxdomain_and_servfail_become_lookup_failed(self) -> Generator[Any, Any, None]:
        """An unknown name (NXDOMAIN) and a SERVFAIL name both fail with LookupFailed and a reason."""
        with pytest.raises(LookupFailed, match=r"no SRV or A records for nothing\.example\.test"):
            yield self.locator.locate("nothing.example.test", None, None, False)
        with pytest.raises(LookupFailed, match=r"DNS server failure for broken\.example\.test NAPTR"):
            yield self.locator.locate("broken.example.test", None, None, False)

    @defer.inlineCallbacks
    def test_unanswered_query_times_out(self) -> Generator[Any, Any, None]:
        """A server that never answers makes the client time out; that becomes LookupFailed."""
        with pytest.raises(LookupFailed, match=r"DNS timeout for silent\.example\.test A"):
            yield self.locator.locate("silent.example.test", 5060, None, False)


def _ask(sock: socket.socket, name: bytes, rtype: int, *, tcp: bool) -> dns.Message:
    """One DNS query on a blocking socket (TCP with its length prefix), and the answer."""
    query = dns.Message(id=4242, recDes=True)
    query.addQuery(name, rtype)
    data = query.toStr()
    if tcp:
        sock.sendall(struct.pack("!H", len(data)) + data)
        size = struct.unpack("!H", sock.recv(2, socket.MSG_WAITALL))[0]
        reply = sock.recv(size, socket.MSG_WAITALL)
    else:
        sock.send(data)
        reply = sock.recv(4096)
    answer = dns.Message()
    answer.fromStr(reply)
    assert answer.id == 4242
    return answer


def test_dnsserver_runs_as_a_process_from_a_json_zone(tmp_path: Path) -> None:
    """``python -m tests.dnsserver --port 0 --zone z.json`` prints its address and answers over UDP and TCP."""
    server = DNSProcess(LOOPBACK_ZONE, tmp_path)
    port = server.port
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as tcp:
            answer = _ask(tcp, b"sip2.example.test", dns.A, tcp=True)
        assert [rr.payload.dottedQuad() for rr in answer.answers] == ["127.0.0.2"]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.settimeout(10)
            udp.connect(("127.0.0.1", port))
            answer = _ask(udp, b"_sip._udp.example.test", dns.SRV, tcp=False)
            assert answer.rCode == dns.OK and answer.auth
            targets = sorted(rr.payload.target.name for rr in answer.answers)
            assert targets == [b"sip1.example.test", b"sip2.example.test"]
            glue = sorted(rr.name.name for rr in answer.additional)  # glue is on by default
            assert glue == [b"sip1.example.test", b"sip1.example.test", b"sip2.example.test"]
            assert _ask(udp, b"sip2.example.test", dns.AAAA, tcp=False).answers == []  # known name: NOERROR
            assert _ask(udp, b"nothing.example.test", dns.A, tcp=False).rCode == dns.ENAME
    finally:
        server.stop()
