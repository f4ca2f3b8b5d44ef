"""Next hops by name (RFC 3263) and over TLS (RFC 5630) in the proxy core, driven without sockets."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from sipgate_proxy.routing.decisions import Forward, Target
from sipgate_proxy.sip.forwarding import NextHop
from sipgate_proxy.sip.message import Request
from sipgate_proxy.sip.parser import parse_datagram
from sipgate_proxy.sip.proxy import Interface
from sipgate_proxy.sip.transaction import Destination
from tests.sip.test_proxy import CALLER, TCP, UDP, Harness, answer, invite, statuses

TLS = Interface("tls:127.0.0.1:5061", "tls", "127.0.0.1", 5061, "127.0.0.1", 5061)

FIRST = Destination("udp", "192.0.2.1", 5060)
SECOND = Destination("udp", "192.0.2.2", 5062)


class Locator:
    """Answers every name with ``answer`` (a list, or a Deferred made per call)."""

    def __init__(self, answer: Any = None) -> None:
        self.answer = answer if answer is not None else [FIRST, SECOND]
        self.asked: list[NextHop] = []
        self.pending: list[Deferred[list[Destination]]] = []

    def __call__(self, hop: NextHop) -> Any:
        self.asked.append(hop)
        if self.answer == "later":
            d: Deferred[list[Destination]] = Deferred()
            self.pending.append(d)
            return d
        return list(self.answer)


def harness(decision: Any, interfaces: list[Interface] | None = None, locate: Any = None) -> Harness:
    h = Harness(decision, interfaces)
    h.core.locate = locate
    return h


def sent_requests(h: Harness) -> list[tuple[Request, Destination]]:
    """Every request sent so far (kept, unlike Harness.requests)."""
    out = []
    for data, dest in h.sent:
        message = parse_datagram(data)
        if isinstance(message, Request):
            out.append((message, dest))
    return out


def upstream(h: Harness) -> list[int]:
    return statuses([(d, dest) for d, dest in h.sent if dest.port == CALLER.port])


def forward(uri: str, next_hop: str | None = None) -> Forward:
    return Forward((Target(uri, next_hop=next_hop),))


def test_a_name_is_located_and_the_request_goes_to_its_first_destination() -> None:
    """A next hop named by host goes to the first destination server location returned."""
    locator = Locator()
    c = harness(forward("sip:bob@example.com"), locate=locator)
    c.receive(invite("sip:bob@example.com"))
    assert locator.asked == [NextHop("example.com", None, None, False)]
    [(request, dest)] = sent_requests(c)
    assert dest[:3] == ("udp", "192.0.2.1", 5060)
    assert request.uri_text == "sip:bob@example.com"


def test_ip_literals_are_not_looked_up() -> None:
    """An IP address with or without port needs no server location (RFC 3263 4.2)."""
    locator = Locator()
    c = harness(forward("sip:bob@192.0.2.9"), locate=locator)
    c.receive(invite("sip:bob@192.0.2.9"))
    assert locator.asked == []
    assert [dest[:3] for _, dest in sent_requests(c)] == [("udp", "192.0.2.9", 5060)]


def test_a_dead_first_destination_fails_over_to_the_second_within_the_transaction() -> None:
    """No answer from the first destination: after Timer B the INVITE goes to the second, with a new branch."""
    c = harness(forward("sip:bob@example.com"), locate=Locator())
    c.receive(invite("sip:bob@example.com"))
    first = sent_requests(c)[0][0]
    c.sent.clear()
    c.advance(32.5)
    sent = sent_requests(c)
    assert [dest[:3] for _, dest in sent][-1] == ("udp", "192.0.2.2", 5062)
    second = sent[-1][0]
    assert second.vias[0].branch != first.vias[0].branch
    assert len(second.vias) == 2 and second.get_all("record-route") == ["<sip:127.0.0.1:5060;lr>"]
    c.receive(answer(second, 200, "OK"), Destination("udp", "192.0.2.2", 5062, None, UDP.name))
    assert upstream(c)[-1] == 200


def test_a_503_moves_on_to_the_next_destination_and_is_not_passed_upstream() -> None:
    """RFC 3263 4.3: a 503 from one destination of a hop means trying the next one."""
    c = harness(forward("sip:bob@example.com"), locate=Locator())
    c.receive(invite("sip:bob@example.com"))
    first = sent_requests(c)[0][0]
    c.sent.clear()
    c.receive(answer(first, 503, "Service Unavailable"), Destination("udp", "192.0.2.1", 5060, None, UDP.name))
    second = [(r, d) for r, d in sent_requests(c) if r.method == "INVITE"]
    assert [d[:3] for _, d in second] == [("udp", "192.0.2.2", 5062)]
    assert 503 not in upstream(c) and 500 not in upstream(c)
    c.receive(answer(second[0][0], 486, "Busy Here"), Destination("udp", "192.0.2.2", 5062, None, UDP.name))
    assert upstream(c)[-1] == 486


def test_transport_errors_move_on_and_the_last_failure_is_answered() -> None:
    """Both destinations unreachable: each is tried once, then the caller gets the proxy's answer."""
    c = harness(forward("sip:bob@example.com"), locate=Locator())
    c.receive(invite("sip:bob@example.com"))
    c.core.connection_failed(Destination("udp", "192.0.2.1", 5060), c.now)
    c.core.connection_failed(Destination("udp", "192.0.2.2", 5062), c.now)
    tried = [d[:3] for r, d in sent_requests(c) if r.method == "INVITE"]
    assert tried == [("udp", "192.0.2.1", 5060), ("udp", "192.0.2.2", 5062)]
    assert upstream(c)[-1] == 500  # a lone 503 of ours becomes 500 (16.7 step 6)


def test_a_provisional_answer_ends_server_location_failover() -> None:
    """A destination that answered 180 is alive: its later failure is the branch's answer."""
    c = harness(forward("sip:bob@example.com"), locate=Locator())
    c.receive(invite("sip:bob@example.com"))
    first = sent_requests(c)[0][0]
    c.receive(answer(first, 180, "Ringing"), Destination("udp", "192.0.2.1", 5060, None, UDP.name))
    c.sent.clear()
    c.receive(answer(first, 503, "Service Unavailable"), Destination("udp", "192.0.2.1", 5060, None, UDP.name))
    assert [r for r, _ in sent_requests(c) if r.method == "INVITE"] == []
    assert upstream(c)[-1] == 500


def test_a_lookup_in_flight_holds_the_branch_until_it_answers() -> None:
    """A Deferred from server location: nothing is sent until it fires, then the request goes."""
    locator = Locator("later")
    c = harness(forward("sip:bob@example.com"), locate=locator)
    c.receive(invite("sip:bob@example.com"))
    assert sent_requests(c) == [] and upstream(c) == [100]
    locator.pending[0].callback([SECOND])
    assert [d[:3] for _, d in sent_requests(c)] == [("udp", "192.0.2.2", 5062)]


def test_a_failed_lookup_fails_the_branch_and_the_caller_hears_of_it() -> None:
    """A name that cannot be resolved ends the request with a final answer, not silence."""
    locator = Locator("later")
    c = harness(forward("sip:bob@nowhere.example"), locate=locator)
    c.receive(invite("sip:bob@nowhere.example"))
    locator.pending[0].errback(Exception("no such name"))
    assert upstream(c)[-1] == 500
    assert sent_requests(c) == []


def test_sips_requests_leave_only_over_tls_and_record_route_a_sips_uri() -> None:
    """RFC 5630: a sips Request-URI is sent over TLS (port 5061) and our Record-Route is a sips URI."""
    c = harness(forward("sips:bob@192.0.2.7"), interfaces=[UDP, TCP, TLS])
    c.receive(invite("sips:bob@192.0.2.7"))
    [(request, dest)] = sent_requests(c)
    assert dest[:3] == ("tls", "192.0.2.7", 5061)
    assert request.vias[0].transport == "TLS" and request.vias[0].port == 5061
    assert request.get_all("record-route") == ["<sips:127.0.0.1:5061;lr;r2=on>", "<sip:127.0.0.1:5060;lr;r2=on>"]


def test_sips_with_transport_tcp_still_goes_over_tls() -> None:
    """sips;transport=tcp means TLS over TCP (RFC 5630 3.1.3): never plain TCP."""
    c = harness(forward("sips:bob@192.0.2.7;transport=tcp"), interfaces=[UDP, TCP, TLS])
    c.receive(invite("sips:bob@192.0.2.7;transport=tcp"))
    assert [d.transport for _, d in sent_requests(c)] == ["tls"]


def test_sips_without_a_tls_listener_is_refused() -> None:
    """No TLS listener: a sips request gets 503 rather than leaving over UDP or TCP."""
    c = harness(forward("sips:bob@192.0.2.7"))
    c.receive(invite("sips:bob@192.0.2.7"))
    assert sent_requests(c) == []
    assert upstream(c)[-1] in (500, 503)


def test_transport_tls_on_a_sip_uri_selects_tls_and_names_the_peer() -> None:
    """sip:...;transport=tls goes over TLS, and the destination carries the name to verify."""
    locator = Locator([Destination("tls", "192.0.2.5", 5061, server_name="gw.example.net")])
    c = harness(forward("sip:+4930123@gw.example.net;transport=tls"), interfaces=[UDP, TLS], locate=locator)
    c.receive(invite("sip:+4930123@gw.example.net;transport=tls"))
    assert locator.asked == [NextHop("gw.example.net", None, "tls", False)]
    [(request, dest)] = sent_requests(c)
    assert (dest.transport, dest.server_name) == ("tls", "gw.example.net")
    assert request.get_all("record-route") == [
        "<sip:127.0.0.1:5061;transport=tls;lr;r2=on>",
        "<sip:127.0.0.1:5060;lr;r2=on>",
    ]
