"""The stateful proxy core (RFC 3261 section 16), driven without sockets."""

from __future__ import annotations

import re
from typing import Any

import pytest
from twisted.internet.defer import Deferred

from sipgate_proxy.routing.decisions import Forward, Redirect, Reject, RequestContext, Target
from sipgate_proxy.sip.message import Request, Response
from sipgate_proxy.sip.parser import parse_datagram
from sipgate_proxy.sip.proxy import CoreSettings, Interface, ProxyCore
from sipgate_proxy.sip.transaction import Destination, TimerValues

UDP = Interface("udp:127.0.0.1:5060", "udp", "127.0.0.1", 5060, "127.0.0.1", 5060)
TCP = Interface("tcp:127.0.0.1:5060", "tcp", "127.0.0.1", 5060, "127.0.0.1", 5060)
CALLER = Destination("udp", "127.0.0.1", 5061, None, UDP.name)


class FakeRouter:
    def __init__(self, decision: Any = None) -> None:
        self.decision = decision
        self.calls: list[Request] = []

    def route(self, request: Request, context: RequestContext) -> Any:
        self.calls.append(request)
        if isinstance(self.decision, Exception):
            raise self.decision
        return self.decision


class Harness:
    def __init__(self, decision: Any = None, interfaces: list[Interface] | None = None, **settings: Any) -> None:
        self.sent: list[tuple[bytes, Destination]] = []
        self.router = FakeRouter(decision)
        self.now = 100.0
        settings.setdefault("timers", TimerValues(0.5, 4.0, 5.0))
        self.core = ProxyCore(
            interfaces or [UDP, TCP],
            CoreSettings(**settings),
            self.router,
            lambda d, dest: self.sent.append((d, dest)),
            self.clock,
        )

    def clock(self) -> float:
        return self.now

    def receive(self, data: bytes, source: Destination = CALLER) -> None:
        self.core.receive_datagram(data, source, self.now)

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while True:
            deadline = self.core.next_deadline()
            if deadline is None or deadline > end:
                break
            self.now = max(self.now, deadline)
            self.core.handle_timers(self.now)
        self.now = end

    def take(self) -> list[tuple[bytes, Destination]]:
        sent, self.sent = self.sent, []
        return sent

    def requests(self) -> list[tuple[Request, Destination]]:
        out = []
        for data, dest in self.take():
            message = parse_datagram(data)
            assert message is not None
            if isinstance(message, Request):
                out.append((message, dest))
        return out


def invite(
    uri: str = "sip:bob@127.0.0.1:5070",
    *,
    method: str = "INVITE",
    branch: str = "z9hG4bKcaller1",
    call_id: str = "call-1",
    extra: str = "",
    max_forwards: str | None = "70",
    via_port: int = 5061,
    to_tag: str = "",
) -> bytes:
    mf = f"Max-Forwards: {max_forwards}\r\n" if max_forwards is not None else ""
    return (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{via_port};branch={branch}\r\n"
        f"{mf}"
        f"From: <sip:alice@127.0.0.1>;tag=a1\r\n"
        f"To: <{uri}>{to_tag}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 {method}\r\n"
        f"Contact: <sip:alice@127.0.0.1:{via_port}>\r\n"
        f"{extra}"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def answer(request: Request, status: int, reason: str = "X", tag: str = "b1", extra: str = "") -> bytes:
    """A downstream response to a forwarded request (all its Vias copied)."""
    vias = "".join(f"Via: {v}\r\n" for v in request.get_all("via"))
    to = request.get("to") or ""
    if status > 100 and ";tag=" not in to:
        to += f";tag={tag}"
    return (
        f"SIP/2.0 {status} {reason}\r\n{vias}"
        f"From: {request.get('from')}\r\nTo: {to}\r\nCall-ID: {request.get('call-id')}\r\n"
        f"CSeq: {request.get('cseq')}\r\n{extra}Content-Length: 0\r\n\r\n"
    ).encode()


def statuses(sent: list[tuple[bytes, Destination]]) -> list[int]:
    return [int(d[8:11]) for d, _ in sent if d.startswith(b"SIP/2.0 ")]


def downstream(h: Harness, source: Destination | None = None) -> Destination:
    return source or Destination("udp", "127.0.0.1", 5070, None, UDP.name)


# -- forwarding ----------------------------------------------------------------


def test_invite_gets_100_and_is_forwarded_with_via_record_route_and_max_forwards() -> None:
    """An INVITE is answered 100 at once and forwarded with our Via, Record-Route and Max-Forwards - 1."""
    h = Harness()
    h.receive(invite())
    sent = h.take()
    assert statuses(sent) == [100]
    forwarded = [(parse_datagram(d), dest) for d, dest in sent if not d.startswith(b"SIP/")]
    assert len(forwarded) == 1
    request, dest = forwarded[0]
    assert isinstance(request, Request)
    assert (dest.transport, dest.host, dest.port) == ("udp", "127.0.0.1", 5070)
    assert request.vias[0].host == "127.0.0.1" and request.vias[0].port == 5060
    assert request.vias[0].branch is not None and request.vias[0].branch.startswith("z9hG4bK")
    assert request.vias[1].branch == "z9hG4bKcaller1"
    assert request.get("max-forwards") == "69"
    assert request.get_all("record-route") == ["<sip:127.0.0.1:5060;lr>"]


def test_missing_max_forwards_is_added_as_70() -> None:
    """A request without Max-Forwards leaves with Max-Forwards: 70 (16.6 step 3)."""
    h = Harness()
    h.receive(invite(method="OPTIONS", max_forwards=None))
    ((request, _),) = h.requests()
    assert request.get("max-forwards") == "70"


def test_responses_are_relayed_upstream_without_our_via() -> None:
    """180 and 200 travel back to the caller's Via address with our Via removed."""
    h = Harness()
    h.receive(invite())
    ((request, _),) = h.requests()
    h.receive(answer(request, 180, "Ringing"), downstream(h))
    h.receive(answer(request, 200, "OK"), downstream(h))
    sent = h.take()
    assert statuses(sent) == [180, 200]
    for data, dest in sent:
        assert (dest.host, dest.port) == ("127.0.0.1", 5061)
        assert data.count(b"\r\nVia: ") == 1
        assert b"branch=z9hG4bKcaller1" in data


def test_request_retransmission_is_absorbed() -> None:
    """A retransmitted INVITE is not forwarded again; the 100 is repeated."""
    h = Harness()
    h.receive(invite())
    h.take()
    h.receive(invite())
    sent = h.take()
    assert statuses(sent) == [100]
    assert all(d.startswith(b"SIP/") for d, _ in sent)


def test_via_gets_received_and_rport() -> None:
    """The top Via gets received= when sent-by differs and rport= when asked (18.2.1, RFC 3581)."""
    h = Harness()
    data = invite(method="OPTIONS").replace(
        b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKcaller1",
        b"Via: SIP/2.0/UDP client.invalid;rport;branch=z9hG4bKc",
    )
    h.receive(data, Destination("udp", "127.0.0.2", 40123, None, UDP.name))
    ((request, _),) = h.requests()
    second = request.vias[1]
    assert second.received == "127.0.0.2"
    assert second.rport == "40123"


def test_response_goes_to_rport_and_received() -> None:
    """With rport the response goes to the source address and port the request came from."""
    h = Harness(Reject(486, "Busy Here"))
    data = invite(method="OPTIONS").replace(b"127.0.0.1:5061;branch", b"client.invalid:5099;rport;branch")
    h.receive(data, Destination("udp", "127.0.0.2", 40123, None, UDP.name))
    ((data, dest),) = h.take()
    assert (dest.host, dest.port) == ("127.0.0.2", 40123)
    assert data.startswith(b"SIP/2.0 486 Busy Here")


# -- validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (invite(max_forwards="0", method="OPTIONS"), 483),
        (invite(extra="Proxy-Require: foo, bar\r\n"), 420),
        (invite(uri="mailto:bob@example.com"), 416),
        (invite(max_forwards="300"), 400),
        (invite().replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"), 400),
        (invite().replace(b"Call-ID: call-1\r\n", b""), 400),
    ],
    ids=["max-forwards-0", "proxy-require", "scheme", "max-forwards-300", "cseq-mismatch", "no-call-id"],
)
def test_invalid_requests_get_their_status(data: bytes, status: int) -> None:
    """Validation (16.3) answers with the status the fault calls for and forwards nothing."""
    h = Harness()
    h.receive(data)
    sent = h.take()
    assert [s for s in statuses(sent) if s != 100] == [status]
    assert all(d.startswith(b"SIP/") for d, _ in sent)


def test_proxy_require_lists_unsupported_tags() -> None:
    """A 420 names every Proxy-Require tag in Unsupported."""
    h = Harness()
    h.receive(invite(method="OPTIONS", extra="Proxy-Require: foo, bar\r\n"))
    ((data, _),) = h.take()
    assert b"\r\nUnsupported: foo, bar\r\n" in data


def test_options_to_the_proxy_itself_is_answered() -> None:
    """OPTIONS whose Request-URI is the proxy gets 200 with Allow and Supported; the router is not asked."""
    h = Harness()
    h.receive(invite(uri="sip:127.0.0.1:5060", method="OPTIONS"))
    ((data, _),) = h.take()
    assert data.startswith(b"SIP/2.0 200 OK\r\n")
    assert b"\r\nAllow: INVITE, ACK, CANCEL, BYE, OPTIONS" in data
    assert b"\r\nSupported:" in data
    assert h.router.calls == []


def test_loop_is_detected_but_a_spiral_is_not() -> None:
    """A request coming back with our Via and unchanged R-URI is a loop (482); a changed R-URI spirals on."""
    h = Harness()
    h.receive(invite(method="OPTIONS"))
    ((request, _),) = h.requests()
    looped = request.to_bytes()
    h.receive(looped, Destination("udp", "127.0.0.1", 5060, None, UDP.name))
    assert [s for s in statuses(h.take())] == [482]
    spiral = looped.replace(b"OPTIONS sip:bob@127.0.0.1:5070", b"OPTIONS sip:carol@127.0.0.1:5070", 1)
    # on its way round, the request passed another proxy that added its Via
    spiral = spiral.replace(b"\r\nVia: ", b"\r\nVia: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKother\r\nVia: ", 1)
    h.receive(spiral, Destination("udp", "127.0.0.1", 5060, None, UDP.name))
    assert len(h.requests()) == 1


# -- routing decisions -------------------------------------------------------------


def test_unknown_user_of_our_domain_gets_404_when_no_router_decides() -> None:
    """A Request-URI that is ours with no router decision is answered 404."""
    h = Harness()
    h.receive(invite(uri="sip:nobody@127.0.0.1:5060", method="MESSAGE"))
    assert statuses(h.take()) == [404]


def test_reject_and_redirect_decisions() -> None:
    """Reject answers with its status and reason; Redirect answers 302 with the contacts."""
    h = Harness(Reject(403, "Forbidden (blocked number)"))
    h.receive(invite(method="MESSAGE"))
    ((data, _),) = h.take()
    assert data.startswith(b"SIP/2.0 403 Forbidden (blocked number)\r\n")
    h = Harness(Redirect(("sip:bob@192.0.2.1",)))
    h.receive(invite(method="MESSAGE"))
    ((data, _),) = h.take()
    assert data.startswith(b"SIP/2.0 302 ")
    assert b"\r\nContact: <sip:bob@192.0.2.1>\r\n" in data


def test_router_exception_gives_500() -> None:
    """A router that raises yields 500 and the proxy goes on."""
    h = Harness(RuntimeError("boom"))
    h.receive(invite(method="MESSAGE"))
    ((data, _),) = h.take()
    assert data.startswith(b"SIP/2.0 500 ")


def test_deferred_decision_is_applied_when_it_fires() -> None:
    """A router may answer with a Deferred; the request is forwarded once it fires."""
    d: Deferred[Any] = Deferred()
    h = Harness(d)
    woken = []
    h.core.on_wakeup = lambda: woken.append(True)
    h.receive(invite(method="MESSAGE"))
    assert h.take() == []
    d.callback(Forward((Target("sip:bob@127.0.0.1:5080"),)))
    ((_, dest),) = h.requests()
    assert dest.port == 5080
    assert woken == [True]


@pytest.mark.parametrize(
    ("first", "second", "best"),
    [(500, 404, 404), (404, 500, 404), (486, 603, 603), (302, 404, 302), (503, 480, 480)],
)
def test_parallel_fork_picks_best_response(first: int, second: int, best: int) -> None:
    """With two parallel branches the caller gets the best final response (16.7 step 6)."""
    h = Harness(Forward((Target("sip:b@127.0.0.1:5070"), Target("sip:c@127.0.0.1:5071"))))
    h.receive(invite(method="MESSAGE"))
    branches = h.requests()
    assert [dest.port for _, dest in branches] == [5070, 5071]
    h.receive(answer(branches[0][0], first))
    h.receive(answer(branches[1][0], second))
    assert statuses(h.take()) == [best]


def test_lone_503_becomes_500() -> None:
    """A 503 from downstream is not passed on as such: the caller gets 500."""
    h = Harness()
    h.receive(invite(method="MESSAGE"))
    ((request, _),) = h.requests()
    h.receive(answer(request, 503))
    assert statuses(h.take()) == [500]


def test_401_and_407_challenges_are_aggregated() -> None:
    """All WWW-Authenticate values of the branches' 401s go into the one 401 forwarded (16.7 step 7)."""
    h = Harness(Forward((Target("sip:b@127.0.0.1:5070"), Target("sip:c@127.0.0.1:5071"))))
    h.receive(invite(method="MESSAGE"))
    (a, _), (b, _) = h.requests()
    h.receive(answer(a, 401, extra='WWW-Authenticate: Digest realm="a", nonce="1"\r\n'))
    h.receive(answer(b, 401, extra='WWW-Authenticate: Digest realm="b", nonce="2"\r\n'))
    ((data, _),) = h.take()
    assert data.count(b"WWW-Authenticate:") == 2


def test_2xx_cancels_other_branches() -> None:
    """When one branch answers 200, the others that rang get a CANCEL (16.7 step 10)."""
    h = Harness(Forward((Target("sip:b@127.0.0.1:5070"), Target("sip:c@127.0.0.1:5071"))))
    h.receive(invite())
    (a, _), (b, _) = h.requests()
    h.receive(answer(b, 180))
    h.receive(answer(a, 200))
    sent = h.take()
    cancels = [(d, dest) for d, dest in sent if d.startswith(b"CANCEL ")]
    assert len(cancels) == 1
    assert cancels[0][1].port == 5071
    assert b"Reason: SIP;cause=200" in cancels[0][0]
    assert 200 in statuses(sent)


def test_serial_failover_moves_on_after_503_but_not_after_486() -> None:
    """Serial targets are tried in order after a failover status; 486 ends the search."""
    h = Harness(Forward((Target("sip:b@127.0.0.1:5070"), Target("sip:c@127.0.0.1:5071")), mode="serial"))
    h.receive(invite(method="MESSAGE"))
    ((first, dest),) = h.requests()
    assert dest.port == 5070
    h.receive(answer(first, 503))
    ((second, dest),) = h.requests()
    assert dest.port == 5071
    h.receive(answer(second, 200))
    assert statuses(h.take()) == [200]

    h = Harness(Forward((Target("sip:b@127.0.0.1:5070"), Target("sip:c@127.0.0.1:5071")), mode="serial"))
    h.receive(invite(method="MESSAGE"))
    ((first, _),) = h.requests()
    h.receive(answer(first, 486))
    sent = h.take()
    assert statuses(sent) == [486]
    assert not [d for d, _ in sent if d.startswith(b"MESSAGE")]


def test_serial_failover_on_timeout() -> None:
    """A target that never answers (Timer F) makes the request go to the next one."""
    h = Harness(Forward((Target("sip:b@127.0.0.1:5070"), Target("sip:c@127.0.0.1:5071")), mode="serial"))
    h.receive(invite(method="MESSAGE"))
    h.take()
    h.advance(32.5)
    sent = h.take()
    assert [dest.port for d, dest in sent if d.startswith(b"MESSAGE")][-1] == 5071


# -- CANCEL and timeouts -------------------------------------------------------------


def test_cancel_before_and_after_provisional() -> None:
    """CANCEL gets 200 at once; it is sent downstream only once the branch sent a provisional (9.1)."""
    h = Harness()
    h.receive(invite())
    ((request, _),) = h.requests()
    cancel = invite(method="CANCEL").replace(b"CSeq: 1 CANCEL", b"CSeq: 1 CANCEL")
    h.receive(cancel)
    sent = h.take()
    assert statuses(sent) == [200]
    assert not [d for d, _ in sent if d.startswith(b"CANCEL")]
    h.receive(answer(request, 180))
    sent = h.take()
    cancels = [d for d, _ in sent if d.startswith(b"CANCEL ")]
    assert len(cancels) == 1
    assert re.search(rb"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=" + request.vias[0].branch.encode(), cancels[0])
    h.receive(answer(request, 487, "Request Terminated"))
    assert 487 in statuses(h.take())


def test_cancel_without_transaction_gets_481() -> None:
    """A CANCEL that matches no INVITE is answered 481."""
    h = Harness()
    h.receive(invite(method="CANCEL"))
    assert statuses(h.take()) == [481]


def test_unanswered_invite_times_out_with_408() -> None:
    """A downstream that never answers gives the caller 408 after Timer B (64*T1)."""
    h = Harness(timers=TimerValues(0.1, 4.0, 5.0))
    h.receive(invite())
    h.take()
    h.advance(6.3)
    assert 408 not in statuses(h.take())
    h.advance(0.2)
    assert 408 in statuses(h.take())


def test_timer_c_cancels_a_ringing_branch() -> None:
    """Timer C fires on a branch that only rang: it is cancelled and the caller gets the 487."""
    h = Harness(timer_c=10.0)
    h.receive(invite())
    ((request, _),) = h.requests()
    h.receive(answer(request, 180))
    h.take()
    h.advance(10.5)
    sent = h.take()
    assert [d for d, _ in sent if d.startswith(b"CANCEL ")]
    h.receive(answer(request, 487))
    assert 487 in statuses(h.take())


def test_ack_for_non_2xx_is_absorbed_and_ack_for_2xx_is_forwarded() -> None:
    """The proxy ACKs a downstream 486 itself and swallows the caller's ACK; an ACK for 200 is forwarded."""
    h = Harness()
    h.receive(invite())
    ((request, _),) = h.requests()
    h.receive(answer(request, 486))
    sent = h.take()
    assert [d for d, _ in sent if d.startswith(b"ACK ")]  # our ACK downstream
    ack = invite(method="ACK", to_tag=";tag=b1")
    h.receive(ack)
    assert h.take() == []

    h = Harness()
    h.receive(invite(call_id="call-2"))
    ((request, _),) = h.requests()
    h.receive(answer(request, 200))
    h.take()
    route = "Route: <sip:127.0.0.1:5060;lr>\r\n"
    ack = invite(
        uri="sip:bob@127.0.0.1:5070", method="ACK", call_id="call-2", branch="z9hG4bKack", to_tag=";tag=b1", extra=route
    )
    h.receive(ack)
    ((forwarded, dest),) = h.requests()
    assert forwarded.method == "ACK" and dest.port == 5070
    assert not forwarded.has("route")


# -- route processing ------------------------------------------------------------------


def test_our_route_entry_is_popped_and_the_next_one_followed() -> None:
    """Loose routing: our Route value is removed and the request goes to the next Route (16.4, 16.6 step 7)."""
    h = Harness()
    route = "Route: <sip:127.0.0.1:5060;lr>, <sip:127.0.0.1:5090;lr>\r\n"
    h.receive(invite(method="BYE", extra=route, to_tag=";tag=b1"))
    ((request, dest),) = h.requests()
    assert dest.port == 5090
    assert request.values("route") == ["<sip:127.0.0.1:5090;lr>"]
    assert request.uri_text == "sip:bob@127.0.0.1:5070"
    assert h.router.calls == []


def test_strict_router_before_us_is_undone() -> None:
    """An R-URI holding our Record-Route URI is replaced by the last Route value (16.4)."""
    h = Harness()
    data = invite(
        uri="sip:127.0.0.1:5060;lr", method="BYE", to_tag=";tag=b1", extra="Route: <sip:bob@127.0.0.1:5070>\r\n"
    )
    h.receive(data)
    ((request, dest),) = h.requests()
    assert request.uri_text == "sip:bob@127.0.0.1:5070"
    assert dest.port == 5070
    assert not request.has("route")


def test_strict_next_hop_gets_the_request_uri() -> None:
    """A next-hop Route without lr becomes the R-URI and the old R-URI goes last (16.6 step 6)."""
    h = Harness()
    h.receive(invite(method="BYE", to_tag=";tag=b1", extra="Route: <sip:127.0.0.1:5095>\r\n"))
    ((request, dest),) = h.requests()
    assert request.uri_text == "sip:127.0.0.1:5095"
    assert request.values("route") == ["<sip:bob@127.0.0.1:5070>"]
    assert dest.port == 5095


def test_transport_change_records_the_route_twice() -> None:
    """UDP in, TCP out: two Record-Route values with r2=on, the outbound (TCP) one on top."""
    h = Harness(Forward((Target("sip:bob@127.0.0.1:5070", "sip:127.0.0.1:5070;transport=tcp"),)))
    h.receive(invite())
    ((request, dest),) = h.requests()
    assert dest.transport == "tcp"
    assert request.get_all("record-route") == [
        "<sip:127.0.0.1:5060;transport=tcp;lr;r2=on>",
        "<sip:127.0.0.1:5060;lr;r2=on>",
    ]
    assert request.vias[0].transport == "TCP"


def test_large_request_switches_to_tcp() -> None:
    """A request over the UDP MTU allowance goes over TCP (18.1.1) and its Via says so."""
    h = Harness()
    h.receive(invite(method="MESSAGE", extra="X-Big: " + "a" * 1400 + "\r\n"))
    ((request, dest),) = h.requests()
    assert dest.transport == "tcp"
    assert request.vias[0].transport == "TCP"


def test_record_route_off_and_not_on_register() -> None:
    """No Record-Route when disabled, and never on REGISTER."""
    h = Harness(record_route=False)
    h.receive(invite())
    ((request, _),) = h.requests()
    assert not request.has("record-route")
    h = Harness()
    h.receive(invite(method="REGISTER"))
    ((request, _),) = h.requests()
    assert not request.has("record-route")


# -- responses without a transaction --------------------------------------------------


def test_stray_responses_are_dropped() -> None:
    """A response whose top Via is not ours is dropped."""
    h = Harness()
    data = (
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\n"
        b"To: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    h.receive(data)
    assert h.take() == []


def test_retransmitted_2xx_without_transaction_is_forwarded_statelessly() -> None:
    """A 2xx to INVITE for which no transaction is left goes on to the next Via."""
    h = Harness()
    data = (
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKgone\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKcaller\r\nFrom: <sip:a@b>;tag=1\r\n"
        b"To: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    h.receive(data)
    ((out, dest),) = h.take()
    assert dest.port == 5061
    assert out.count(b"Via:") == 1


def test_transport_error_on_the_only_branch_gives_500() -> None:
    """When the next hop cannot be reached the caller gets a 5xx, not silence."""
    h = Harness()
    h.receive(invite(method="MESSAGE"))
    ((_, dest),) = h.requests()
    h.core.connection_failed(dest, h.now)
    ((data, _),) = h.take()
    assert data.startswith(b"SIP/2.0 500 ")


def test_response_parse_helpers_match() -> None:
    """The test helper's responses are valid SIP (sanity check of this module)."""
    h = Harness()
    h.receive(invite(method="MESSAGE"))
    ((request, _),) = h.requests()
    response = parse_datagram(answer(request, 200))
    assert isinstance(response, Response) and response.status == 200


def test_in_dialog_request_routed_by_our_record_route_skips_the_routers() -> None:
    """A BYE whose only Route is ours goes to its Request-URI; routers must not reroute a dialog."""
    h = Harness(Reject(403, "Forbidden"))
    h.receive(invite(method="BYE", to_tag=";tag=b1", extra="Route: <sip:127.0.0.1:5060;lr>\r\n"))
    ((request, dest),) = h.requests()
    assert request.method == "BYE" and dest.port == 5070
    assert h.router.calls == []


def test_initial_request_preloaded_with_our_route_is_routed() -> None:
    """An initial INVITE whose Route names only us (outbound proxy) goes through the routers."""
    h = Harness(Reject(403, "Forbidden"))
    h.receive(invite(method="MESSAGE", extra="Route: <sip:127.0.0.1:5060;lr>\r\n"))
    assert statuses(h.take()) == [403]
    assert len(h.router.calls) == 1


# -- routing hooks: observers, silent destinations, redirects, failover sets ------


class Observer:
    def __init__(self) -> None:
        self.events: list[tuple[str | None, str, int]] = []

    def branch_event(self, target: Target, event: str, status: int, now: float) -> None:
        self.events.append((target.label, event, status))


def test_observer_hears_response_and_final() -> None:
    """A target's observer learns of the first response (alive) and of the final status."""
    seen = Observer()
    h = Harness(Forward((Target("sip:b@127.0.0.1:5070", observer=seen, label="gw1"),)))
    h.receive(invite())
    ((request, _),) = h.requests()
    h.receive(answer(request, 100))
    h.receive(answer(request, 180))
    h.receive(answer(request, 486))
    assert seen.events == [("gw1", "response", 100), ("gw1", "final", 486)]


def test_observer_hears_suspect_timeout_and_transport_error() -> None:
    """Timer A without any answer is 'suspect'; Timer B gives final 408; a broken transport final 503."""
    seen = Observer()
    h = Harness(Forward((Target("sip:b@127.0.0.1:5070", observer=seen, label="gw1"),)))
    h.receive(invite())
    h.take()
    h.advance(0.6)
    assert seen.events == [("gw1", "suspect", 0)]
    h.advance(40.0)
    assert seen.events[-1] == ("gw1", "final", 408)

    seen = Observer()
    h = Harness(Forward((Target("sip:b@127.0.0.1:5070", observer=seen, label="gw2"),)))
    h.receive(invite(method="MESSAGE"))
    ((_, dest),) = h.requests()
    h.core.connection_failed(dest, h.now)
    assert seen.events == [("gw2", "final", 503)]


def test_fail_silent_moves_on_at_timer_a() -> None:
    """With fail_silent, a destination that has not answered by Timer A is abandoned for the next target."""
    targets = (Target("sip:b@127.0.0.1:5070"), Target("sip:c@127.0.0.1:5071"))
    h = Harness(Forward(targets, mode="serial", fail_silent=True))
    h.receive(invite())
    first = [dest.port for _, dest in h.requests()]
    assert first == [5070]
    h.advance(0.6)
    sent = h.requests()
    # the silent one is not retransmitted to any more; the next one gets the INVITE
    assert [dest.port for _, dest in sent] == [5071]
    (second, _) = sent[0]
    h.receive(answer(second, 200))
    assert 200 in statuses(h.take())
    h.advance(5.0)
    assert not [d for d, dest in h.take() if dest.port == 5070 and d.startswith(b"INVITE")]


def test_late_provisional_from_an_abandoned_branch_is_cancelled() -> None:
    """A destination given up at Timer A that answers 180 later gets a CANCEL."""
    targets = (Target("sip:b@127.0.0.1:5070"), Target("sip:c@127.0.0.1:5071"))
    h = Harness(Forward(targets, mode="serial", fail_silent=True))
    h.receive(invite())
    ((first, _),) = h.requests()
    h.advance(0.6)
    h.take()
    h.receive(answer(first, 180))
    sent = h.take()
    assert [dest.port for d, dest in sent if d.startswith(b"CANCEL ")] == [5070]
    assert 180 not in statuses(sent)


def test_decision_failover_set_overrides_the_default() -> None:
    """A Forward with its own failover set moves on after 486 too."""
    targets = (Target("sip:b@127.0.0.1:5070"), Target("sip:c@127.0.0.1:5071"))
    h = Harness(Forward(targets, mode="serial", failover=frozenset({486})))
    h.receive(invite(method="MESSAGE"))
    ((first, _),) = h.requests()
    h.receive(answer(first, 486))
    ((_, dest),) = h.requests()
    assert dest.port == 5071


def test_redirect_is_followed_when_enabled() -> None:
    """With follow_redirects, a 302's Contacts are tried by q-value, and the caller gets the final answer."""
    h = Harness(Forward((Target("sip:b@127.0.0.1:5070"),)), follow_redirects=True)
    h.receive(invite(method="MESSAGE"))
    ((first, _),) = h.requests()
    contacts = "Contact: <sip:low@127.0.0.1:5081>;q=0.2, <sip:high@127.0.0.1:5082>;q=0.9\r\n"
    h.receive(answer(first, 302, extra=contacts))
    ((second, dest),) = h.requests()
    assert dest.port == 5082 and second.uri_text == "sip:high@127.0.0.1:5082"
    h.receive(answer(second, 404))
    ((third, dest),) = h.requests()
    assert dest.port == 5081
    h.receive(answer(third, 200))
    assert statuses(h.take()) == [200]


def test_redirect_passes_upstream_when_not_followed_or_too_deep() -> None:
    """Without follow_redirects the 302 goes to the caller; with it, recursion stops at max_redirects."""
    h = Harness(Forward((Target("sip:b@127.0.0.1:5070"),)))
    h.receive(invite(method="MESSAGE"))
    ((first, _),) = h.requests()
    h.receive(answer(first, 302, extra="Contact: <sip:x@127.0.0.1:5081>\r\n"))
    assert statuses(h.take()) == [302]

    h = Harness(Forward((Target("sip:b@127.0.0.1:5070"),)), follow_redirects=True, max_redirects=1)
    h.receive(invite(method="MESSAGE"))
    ((first, _),) = h.requests()
    h.receive(answer(first, 302, extra="Contact: <sip:x@127.0.0.1:5081>\r\n"))
    ((second, _),) = h.requests()
    h.receive(answer(second, 302, extra="Contact: <sip:y@127.0.0.1:5082>\r\n"))
    assert statuses(h.take()) == [302]


def test_log_line_names_the_decision_and_router() -> None:
    """The transaction log line says which router decided and what (forward, mode, target count)."""
    from twisted.logger import formatEvent, globalLogPublisher

    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "sipgate_proxy.core":
            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    try:
        h = Harness(Forward((Target("sip:b@127.0.0.1:5070"), Target("sip:c@127.0.0.1:5071")), mode="serial"))
        h.router.route = lambda request, context: (setattr(context, "decided_by", "lcr"), h.router.decision)[1]
        h.receive(invite(method="MESSAGE"))
        ((first, _),) = h.requests()
        h.receive(answer(first, 200))
    finally:
        globalLogPublisher.removeObserver(observe)
    txn = [line for line in lines if line.startswith("txn ")]
    assert txn and "status=200" in txn[-1] and "decision=lcr:forward/serial/2" in txn[-1]


def test_silent_after_moves_on_before_timer_a() -> None:
    """With silent_after, a branch without any answer is abandoned after that time, not at Timer A."""
    seen = Observer()
    targets = (Target("sip:b@127.0.0.1:5070", observer=seen, label="a"), Target("sip:c@127.0.0.1:5071"))
    h = Harness(Forward(targets, mode="serial", fail_silent=True, silent_after=0.2))
    h.receive(invite())
    h.take()
    h.advance(0.15)
    assert h.requests() == []
    h.advance(0.1)
    assert [dest.port for _, dest in h.requests()] == [5071]
    assert seen.events[0] == ("a", "suspect", 0)


def test_silent_after_is_disarmed_by_a_100_trying() -> None:
    """A destination that answers 100 Trying in time keeps the call however long it rings."""
    targets = (Target("sip:b@127.0.0.1:5070"), Target("sip:c@127.0.0.1:5071"))
    h = Harness(Forward(targets, mode="serial", fail_silent=True, silent_after=0.2))
    h.receive(invite())
    ((first, _),) = h.requests()
    h.receive(answer(first, 100))
    h.advance(5.0)
    assert h.requests() == []


def test_one_silent_branch_moves_the_others_waiting_on_that_destination() -> None:
    """When one INVITE to a destination goes silent, later INVITEs still waiting on it move on at once."""
    targets = (Target("sip:b@127.0.0.1:5070"), Target("sip:c@127.0.0.1:5071"))
    h = Harness(Forward(targets, mode="serial", fail_silent=True, silent_after=0.2))
    h.receive(invite(call_id="first", branch="z9hG4bKone"))
    h.advance(0.1)
    h.receive(invite(call_id="second", branch="z9hG4bKtwo"))
    h.take()
    h.advance(0.11)  # the first call's silence timer fires; the second has waited only 0.1 s
    moved = [(r.call_id, dest.port) for r, dest in h.requests()]
    assert sorted(moved) == [("first", 5071), ("second", 5071)]


def test_grouped_targets_ring_group_by_group() -> None:
    """Grouped mode: the first group rings in parallel; the next starts only when all of it failed."""
    targets = (
        Target("sip:a@127.0.0.1:5070", group=0),
        Target("sip:b@127.0.0.1:5071", group=0),
        Target("sip:c@127.0.0.1:5072", group=1),
    )
    h = Harness(Forward(targets, mode="grouped"))
    h.receive(invite())
    (a, _), (b, _) = h.requests()
    h.receive(answer(a, 486))
    assert [r.method for r, _ in h.requests()] == ["ACK"]  # b still rings: nothing new starts
    h.receive(answer(b, 480))
    ((c, dest),) = [(r, d) for r, d in h.requests() if r.method == "INVITE"]
    assert dest.port == 5072
    h.receive(answer(c, 200))
    assert 200 in statuses(h.take())


def test_grouped_targets_stop_at_6xx() -> None:
    """A 6xx in a group ends the search: later groups never ring."""
    targets = (Target("sip:a@127.0.0.1:5070", group=0), Target("sip:c@127.0.0.1:5072", group=1))
    h = Harness(Forward(targets, mode="grouped"))
    h.receive(invite(method="MESSAGE"))
    ((a, _),) = h.requests()
    h.receive(answer(a, 603))
    sent = h.take()
    assert statuses(sent) == [603]
    assert not [d for d, _ in sent if d.startswith(b"MESSAGE")]


def test_answer_decision_replies_with_its_status_and_headers() -> None:
    """An Answer (a registrar's 200, a 401 challenge) is sent as given, with a To tag."""
    from sipgate_proxy.routing.decisions import Answer

    h = Harness(
        Answer(200, "OK", (("Contact", "<sip:a@192.0.2.1>;expires=60"), ("Date", "Sun, 22 Nov 2026 02:00:00 GMT")))
    )
    h.receive(invite(method="REGISTER"))
    ((data, _),) = h.take()
    assert data.startswith(b"SIP/2.0 200 OK\r\n")
    assert b"\r\nContact: <sip:a@192.0.2.1>;expires=60\r\n" in data
    assert b"\r\nDate: Sun, 22 Nov 2026 02:00:00 GMT\r\n" in data
    assert b";tag=" in data.split(b"\r\nTo: ")[1].split(b"\r\n")[0]
