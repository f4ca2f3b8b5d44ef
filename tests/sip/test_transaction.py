"""Tests for sipgate_proxy.sip.transaction: RFC 3261 section 17 machines and RFC 6026 Accepted.

Time is driven by hand: the harness fires the layer's timers in deadline order up
to a given time, recording every transmitted datagram with the time it left.
"""

from __future__ import annotations

import pytest

from sipgate_proxy.sip.errors import SIPError
from sipgate_proxy.sip.message import Request, Response, make_response
from sipgate_proxy.sip.parser import parse_datagram
from sipgate_proxy.sip.transaction import (
    ACCEPTED,
    CALLING,
    COMPLETED,
    CONFIRMED,
    PROCEEDING,
    TERMINATED,
    TRYING,
    ClientTransaction,
    Destination,
    ServerTransaction,
    TimerValues,
    TransactionLayer,
    server_key,
)

UDP = Destination("udp", "192.0.2.10", 5060)
TCP = Destination("tcp", "192.0.2.10", 5060, connection=object())
UPSTREAM = Destination("udp", "192.0.2.1", 5060)
UPSTREAM_TCP = Destination("tcp", "192.0.2.1", 5060, connection=object())

BRANCH = "z9hG4bKproxy1"


def invite(branch: str = BRANCH, method: str = "INVITE", to_tag: str = "") -> Request:
    tag = f";tag={to_tag}" if to_tag else ""
    data = (
        f"{method} sip:bob@biloxi.example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP proxy.example.net:5060;branch={branch}\r\n"
        "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKuac\r\n"
        "Route: <sip:edge.biloxi.example.com;lr>\r\n"
        "Max-Forwards: 69\r\n"
        f"To: Bob <sip:bob@biloxi.example.com>{tag}\r\n"
        "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
        "Call-ID: a84b4c76e66710\r\n"
        f"CSeq: 314159 {method}\r\n"
        "Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
        "Content-Length: 0\r\n"
        "\r\n"
    ).encode()
    message = parse_datagram(data)
    assert isinstance(message, Request)
    return message


def options(branch: str = BRANCH) -> Request:
    return invite(branch, "OPTIONS")


def answer(request: Request, status: int, to_tag: str = "bobtag") -> Response:
    """A response to ``request`` as the next hop would send it (same Via lines)."""
    response = parse_datagram(make_response(request, status, to_tag=to_tag).to_bytes())
    assert isinstance(response, Response)
    return response


def sent_response(data: bytes) -> Response:
    """A transmitted response, parsed back."""
    response = parse_datagram(data)
    assert isinstance(response, Response)
    return response


class Net:
    """The way out and the clock: records (time, bytes, destination)."""

    def __init__(self, timers: TimerValues | None = None, max_transactions: int = 200_000) -> None:
        self.now = 0.0
        self.sent: list[tuple[float, bytes, Destination]] = []
        self.layer = TransactionLayer(self.transmit, timers, max_transactions)

    def transmit(self, data: bytes, destination: Destination) -> None:
        self.sent.append((self.now, data, destination))

    def advance(self, until: float) -> None:
        """Fire every timer due up to ``until``, each at its own deadline."""
        layer = self.layer
        while True:
            deadline = layer.next_deadline()
            if deadline is None or deadline > until:
                break
            self.now = deadline
            layer.handle_timers(deadline)
        self.now = until

    def times(self) -> list[float]:
        return [round(t, 6) for t, _, _ in self.sent]

    def take(self) -> list[tuple[float, bytes, Destination]]:
        sent, self.sent = self.sent, []
        return sent


class User:
    """A ClientUser that records its callbacks."""

    def __init__(self) -> None:
        self.events: list[tuple[str, float, int]] = []

    def on_response(self, txn: ClientTransaction, response: Response, now: float) -> None:
        self.events.append(("response", now, response.status))

    def on_timeout(self, txn: ClientTransaction, now: float) -> None:
        self.events.append(("timeout", now, 0))

    def on_transport_error(self, txn: ClientTransaction, now: float) -> None:
        self.events.append(("transport error", now, 0))

    def on_retransmit(self, txn: ClientTransaction, now: float) -> None:
        self.events.append(("retransmit", now, 0))

    def kinds(self, kind: str) -> list[tuple[float, int]]:
        return [(round(now, 6), status) for name, now, status in self.events if name == kind]


def start_client(
    net: Net, request: Request | None = None, destination: Destination = UDP
) -> tuple[ClientTransaction, User]:
    user = User()
    request = request or invite()
    txn = net.layer.new_client(request, request.top_via.branch or "", destination, user)
    txn.start(net.now)
    return txn, user


def start_server(net: Net, request: Request, source: Destination = UPSTREAM) -> ServerTransaction:
    key, found = net.layer.match_server(request)
    assert found is None
    return net.layer.new_server(key, request, source)


def receive(net: Net, txn: ClientTransaction, response: Response, at: float) -> None:
    """Deliver ``response`` at time ``at`` the way the transport would (via match_client)."""
    net.advance(at)
    assert net.layer.match_client(response) is txn
    txn.receive(response, at)


def retransmit_request(net: Net, request: Request, at: float) -> None:
    """A request (retransmission or ACK) arriving at ``at`` matched to its server transaction."""
    net.advance(at)
    _, found = net.layer.match_server(request)
    assert found is not None
    found.receive_retransmission(request, at)


def doubling(t1: float, t2: float | None, until: float) -> list[float]:
    """Cumulative fire times of a timer starting at t1, doubling, capped at t2, before ``until``."""
    times = []
    now, interval = 0.0, t1
    while now + interval < until:
        now += interval
        times.append(round(now, 6))
        interval = 2 * interval if t2 is None else min(2 * interval, t2)
    return times


# --- Destination, TimerValues --------------------------------------------------------------


def test_reliable_transports() -> None:
    """Only UDP is unreliable."""
    assert not UDP.reliable
    assert TCP.reliable
    assert Destination("tls", "h", 5061).reliable


def test_default_timer_values() -> None:
    """T1 500 ms, T2 4 s, T4 5 s (RFC 3261 table 4)."""
    assert TimerValues() == TimerValues(t1=0.5, t2=4.0, t4=5.0)


# --- INVITE client ---------------------------------------------------------------------------


def test_invite_client_udp_timer_a_and_timer_b() -> None:
    """Over UDP the INVITE goes out at 0, T1, 3T1, 7T1 ... (Timer A doubling) and Timer B ends it at 64*T1."""
    net = Net()
    txn, user = start_client(net)
    assert txn.state == CALLING
    net.advance(100.0)
    expected = [0.0, *doubling(0.5, None, 32.0)]
    assert expected == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert net.times() == expected
    assert {data for _, data, _ in net.sent} == {invite().to_bytes()}
    assert {dest for _, _, dest in net.sent} == {UDP}
    assert user.kinds("retransmit") == [(t, 0) for t in expected[1:]]
    assert user.kinds("timeout") == [(32.0, 0)]
    assert txn.state == TERMINATED
    assert net.layer.client == {}
    assert net.layer.next_deadline() is None


def test_invite_client_provisional_stops_retransmissions_and_timer_b() -> None:
    """A 1xx moves Calling to Proceeding: no more retransmissions and no Timer B timeout."""
    net = Net()
    txn, user = start_client(net)
    receive(net, txn, answer(txn.request, 100), 0.7)
    assert txn.state == PROCEEDING
    receive(net, txn, answer(txn.request, 180), 5.0)
    net.advance(200.0)
    assert net.times() == [0.0, 0.5]
    assert user.kinds("response") == [(0.7, 100), (5.0, 180)]
    assert user.kinds("timeout") == []
    assert txn.state == PROCEEDING
    assert net.layer.client == {txn.key: txn}
    receive(net, txn, answer(txn.request, 200), 201.0)
    assert user.kinds("response")[-1] == (201.0, 200)
    assert txn.state == ACCEPTED


def test_invite_client_non_2xx_sends_ack() -> None:
    """A 486 completes the transaction and the transaction ACKs it (RFC 3261 17.1.1.3)."""
    net = Net()
    txn, user = start_client(net)
    busy = answer(txn.request, 486, to_tag="busytag")
    receive(net, txn, busy, 0.2)
    assert txn.state == COMPLETED
    assert user.kinds("response") == [(0.2, 486)]
    when, data, dest = net.sent[-1]
    assert (when, dest) == (0.2, UDP)
    ack = parse_datagram(data)
    assert isinstance(ack, Request)
    assert ack.method == "ACK"
    assert ack.uri_text == "sip:bob@biloxi.example.com"
    assert [str(via) for via in ack.vias] == ["SIP/2.0/UDP proxy.example.net:5060;branch=z9hG4bKproxy1"]
    assert ack.to_tag == "busytag"
    assert ack.get("to") == busy.get("to")
    assert ack.get("from") == txn.request.get("from")
    assert ack.call_id == "a84b4c76e66710"
    assert ack.cseq == (314159, "ACK")
    assert ack.get_all("route") == ["<sip:edge.biloxi.example.com;lr>"]
    assert not ack.has("contact")
    assert ack.body == b""


def test_invite_client_final_retransmission_resends_ack() -> None:
    """Each retransmission of the non-2xx final re-sends the ACK and is not passed up."""
    net = Net()
    txn, user = start_client(net)
    busy = answer(txn.request, 486)
    receive(net, txn, busy, 0.2)
    first_ack = net.sent[-1][1]
    receive(net, txn, busy, 0.9)
    receive(net, txn, busy, 2.9)
    acks = [(t, data) for t, data, _ in net.sent if data.startswith(b"ACK ")]
    assert acks == [(0.2, first_ack), (0.9, first_ack), (2.9, first_ack)]
    assert user.kinds("response") == [(0.2, 486)]
    # no INVITE retransmissions after the final response
    assert [t for t, data, _ in net.sent if data.startswith(b"INVITE")] == [0.0]


def test_invite_client_timer_d_on_udp() -> None:
    """Timer D keeps the Completed state 32 s on UDP, then the transaction is gone."""
    net = Net()
    txn, _ = start_client(net)
    receive(net, txn, answer(txn.request, 603), 1.0)
    net.advance(32.9)
    assert txn.state == COMPLETED
    net.advance(33.0)
    assert txn.state == TERMINATED
    assert net.layer.client == {}


def test_invite_client_timer_d_ignores_custom_t1() -> None:
    """Timer D is a fixed 32 s (RFC 3261 table 4), not a multiple of T1."""
    net = Net(TimerValues(t1=0.1, t2=0.4, t4=0.5))
    txn, _ = start_client(net)
    receive(net, txn, answer(txn.request, 404), 0.05)
    net.advance(31.0)
    assert txn.state == COMPLETED
    net.advance(32.05)
    assert txn.state == TERMINATED


def test_invite_client_tcp_no_retransmissions() -> None:
    """Over TCP the INVITE is sent once; Timer B still ends it at 64*T1."""
    net = Net()
    txn, user = start_client(net, destination=TCP)
    net.advance(100.0)
    assert net.times() == [0.0]
    assert net.sent[0][2] is TCP
    assert user.kinds("retransmit") == []
    assert user.kinds("timeout") == [(32.0, 0)]
    assert txn.state == TERMINATED


def test_invite_client_tcp_non_2xx_acks_once_and_ends_at_once() -> None:
    """Over TCP the ACK is sent once and Timer D is zero."""
    net = Net()
    txn, user = start_client(net, destination=TCP)
    receive(net, txn, answer(txn.request, 500), 0.3)
    assert user.kinds("response") == [(0.3, 500)]
    assert [data[:4] for _, data, _ in net.sent] == [b"INVI", b"ACK "]
    assert net.sent[1][2] is TCP
    net.advance(0.3)
    assert txn.state == TERMINATED
    assert net.layer.client == {}


def test_invite_client_2xx_accepted_then_timer_m() -> None:
    """A 2xx moves to Accepted; later 2xx go to the user; Timer M ends it after 64*T1."""
    net = Net()
    txn, user = start_client(net)
    receive(net, txn, answer(txn.request, 200, to_tag="one"), 0.2)
    assert txn.state == ACCEPTED
    receive(net, txn, answer(txn.request, 200, to_tag="one"), 0.7)
    receive(net, txn, answer(txn.request, 202, to_tag="two"), 1.0)
    receive(net, txn, answer(txn.request, 180), 1.1)
    receive(net, txn, answer(txn.request, 486), 1.2)
    assert user.kinds("response") == [(0.2, 200), (0.7, 200), (1.0, 202)]
    # the transaction sends no ACK for 2xx (that is the TU's job) and no retransmission
    assert net.times() == [0.0]
    net.advance(32.1)
    assert txn.state == ACCEPTED
    net.advance(32.2)
    assert txn.state == TERMINATED
    assert net.layer.client == {}
    assert user.kinds("timeout") == []


def test_invite_client_transport_error() -> None:
    """A transport error in Calling terminates the transaction and tells the user."""
    net = Net()
    txn, user = start_client(net)
    net.advance(0.6)
    txn.transport_error(0.6)
    assert txn.state == TERMINATED
    assert user.kinds("transport error") == [(0.6, 0)]
    net.advance(100.0)
    assert net.times() == [0.0, 0.5]
    assert user.kinds("timeout") == []


def test_transport_error_during_start() -> None:
    """A transport error raised synchronously while sending leaves no timers armed."""
    user = User()
    holder: list[ClientTransaction] = []

    def failing(data: bytes, destination: Destination) -> None:
        holder[0].transport_error(0.0)

    layer = TransactionLayer(failing)
    txn = layer.new_client(invite(), BRANCH, UDP, user)
    holder.append(txn)
    txn.start(0.0)
    assert txn.state == TERMINATED
    assert user.kinds("transport error") == [(0.0, 0)]
    assert layer.next_deadline() is None
    assert layer.client == {}


def test_transport_error_after_final_is_ignored() -> None:
    """Once a final response arrived, a transport error changes nothing."""
    net = Net()
    txn, user = start_client(net)
    receive(net, txn, answer(txn.request, 200), 0.1)
    txn.transport_error(0.2)
    assert txn.state == ACCEPTED
    assert user.kinds("transport error") == []


def test_stop_retransmissions_keeps_the_timeout() -> None:
    """stop_retransmissions() (a silent branch given up) stops Timer A; Timer B still ends the transaction."""
    net = Net()
    txn, user = start_client(net)
    net.advance(0.6)
    txn.stop_retransmissions()
    net.advance(100.0)
    assert net.times() == [0.0, 0.5]
    assert user.kinds("timeout") == [(32.0, 0)]


def test_expire_in_ends_the_transaction_as_a_timeout() -> None:
    """expire_in() (after our CANCEL, or Timer C) ends a pending transaction after the given time."""
    net = Net()
    txn, user = start_client(net)
    net.advance(0.1)
    txn.expire_in(0.1, 2.0)
    net.advance(100.0)
    assert net.times() == [0.0]
    assert user.kinds("timeout") == [(2.1, 0)]


def test_invite_client_custom_timer_values() -> None:
    """A custom T1 drives Timer A and Timer B."""
    net = Net(TimerValues(t1=0.1, t2=0.4, t4=0.5))
    _, user = start_client(net)
    net.advance(10.0)
    assert net.times() == [0.0, *doubling(0.1, None, 6.4)]
    assert net.times() == [0.0, 0.1, 0.3, 0.7, 1.5, 3.1, 6.3]
    assert user.kinds("timeout") == [(6.4, 0)]


# --- non-INVITE client ------------------------------------------------------------------------


def test_non_invite_client_timer_e_and_timer_f() -> None:
    """Timer E doubles from T1 up to T2 and stays there; Timer F ends it at 64*T1."""
    net = Net()
    txn, user = start_client(net, options())
    assert txn.state == TRYING
    net.advance(100.0)
    expected = [0.0, *doubling(0.5, 4.0, 32.0)]
    assert expected == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert net.times() == expected
    assert user.kinds("timeout") == [(32.0, 0)]
    assert user.kinds("retransmit") == []
    assert txn.state == TERMINATED
    assert net.layer.client == {}


def test_non_invite_client_proceeding_retransmits_at_t2() -> None:
    """After a 1xx, Timer E fires at T2 intervals; Timer F still times out in Proceeding."""
    net = Net()
    txn, user = start_client(net, options())
    receive(net, txn, answer(txn.request, 100), 0.7)
    assert txn.state == PROCEEDING
    net.advance(100.0)
    # armed at 0.5 for 1.0 s: fires at 1.5, then every T2
    assert net.times() == [0.0, 0.5, 1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5]
    assert user.kinds("response") == [(0.7, 100)]
    assert user.kinds("timeout") == [(32.0, 0)]
    assert txn.state == TERMINATED


def test_non_invite_client_final_then_timer_k() -> None:
    """A final response completes it: no more retransmissions, retransmitted finals absorbed, Timer K = T4."""
    net = Net()
    txn, user = start_client(net, options())
    ok = answer(txn.request, 200)
    receive(net, txn, ok, 0.6)
    assert txn.state == COMPLETED
    receive(net, txn, ok, 1.0)
    receive(net, txn, answer(txn.request, 100), 1.1)
    assert user.kinds("response") == [(0.6, 200)]
    net.advance(5.5)
    assert txn.state == COMPLETED
    net.advance(5.6)
    assert txn.state == TERMINATED
    assert net.times() == [0.0, 0.5]
    assert net.layer.client == {}
    assert user.kinds("timeout") == []


def test_non_invite_client_tcp() -> None:
    """Over TCP: one send, no Timer E, Timer K zero."""
    net = Net()
    txn, user = start_client(net, options(), TCP)
    net.advance(10.0)
    assert net.times() == [0.0]
    receive(net, txn, answer(txn.request, 404), 10.0)
    net.advance(10.0)
    assert txn.state == TERMINATED
    assert user.kinds("response") == [(10.0, 404)]


def test_non_invite_client_custom_timer_values() -> None:
    """Custom T1, T2, T4 drive Timers E, F and K."""
    net = Net(TimerValues(t1=0.1, t2=0.4, t4=0.5))
    _, user = start_client(net, options())
    net.advance(10.0)
    assert net.times() == [0.0, *doubling(0.1, 0.4, 6.4)]
    assert net.times()[:6] == [0.0, 0.1, 0.3, 0.7, 1.1, 1.5]
    assert user.kinds("timeout") == [(6.4, 0)]

    net = Net(TimerValues(t1=0.1, t2=0.4, t4=0.5))
    txn, _ = start_client(net, options())
    receive(net, txn, answer(txn.request, 200), 0.05)
    net.advance(0.54)
    assert txn.state == COMPLETED
    net.advance(0.55)
    assert txn.state == TERMINATED


def test_match_client() -> None:
    """Responses match by top Via branch and CSeq method; CANCEL has its own transaction."""
    net = Net()
    txn, _ = start_client(net)
    assert net.layer.match_client(answer(txn.request, 180)) is txn
    assert net.layer.match_client(answer(invite(method="CANCEL"), 200)) is None
    assert net.layer.match_client(answer(invite("z9hG4bKother"), 180)) is None
    no_branch = parse_datagram(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP proxy.example.net\r\nCSeq: 1 INVITE\r\n\r\n")
    assert isinstance(no_branch, Response)
    assert net.layer.match_client(no_branch) is None
    cancel, _ = start_client(net, invite(method="CANCEL"))
    assert net.layer.match_client(answer(cancel.request, 200)) is cancel
    assert net.layer.match_client(answer(txn.request, 487)) is txn


# --- INVITE server ------------------------------------------------------------------------------


def test_invite_server_starts_proceeding_and_absorbs_retransmission() -> None:
    """An INVITE server transaction starts in Proceeding; a retransmission before any response sends nothing."""
    net = Net()
    txn = start_server(net, invite())
    assert txn.state == PROCEEDING
    retransmit_request(net, invite(), 0.5)
    assert net.sent == []


def test_invite_server_retransmission_resends_last_provisional() -> None:
    """A retransmitted INVITE makes the transaction re-send its latest provisional."""
    net = Net()
    request = invite()
    txn = start_server(net, request)
    txn.send_response(make_response(request, 100), UPSTREAM, 0.0)
    net.advance(0.1)
    ringing = make_response(request, 180, to_tag="t")
    txn.send_response(ringing, UPSTREAM, 0.1)
    retransmit_request(net, invite(), 0.5)
    sent = net.take()
    assert [(t, sent_response(d).status, dest) for t, d, dest in sent] == [
        (0.0, 100, UPSTREAM),
        (0.1, 180, UPSTREAM),
        (0.5, 180, UPSTREAM),
    ]
    assert sent[2][1] == ringing.to_bytes()
    assert net.layer.next_deadline() is None


def test_invite_server_non_2xx_timer_g_until_ack() -> None:
    """A non-2xx final is retransmitted by Timer G (T1, 2T1, ... capped at T2) until the ACK comes."""
    net = Net()
    request = invite()
    txn = start_server(net, request)
    busy = make_response(request, 486, to_tag="t")
    txn.send_response(busy, UPSTREAM, 0.0)
    assert txn.state == COMPLETED
    net.advance(20.0)
    assert net.times() == [0.0, *doubling(0.5, 4.0, 20.0)]
    assert net.times() == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5]
    assert {d for _, d, _ in net.sent} == {busy.to_bytes()}
    ack = invite(method="ACK", to_tag="t")
    assert server_key(ack) == txn.key
    retransmit_request(net, ack, 20.0)
    assert txn.state == CONFIRMED
    net.take()
    net.advance(24.9)
    assert net.sent == []
    assert net.layer.server == {txn.key: txn}
    # Timer I = T4: ACK and INVITE retransmissions are absorbed until it fires
    retransmit_request(net, ack, 24.0)
    retransmit_request(net, invite(), 24.5)
    assert net.sent == []
    net.advance(25.0)
    assert txn.state == TERMINATED
    assert net.layer.server == {}


def test_invite_server_completed_resends_final_on_invite_retransmission() -> None:
    """In Completed a retransmitted INVITE gets the final response again."""
    net = Net()
    request = invite()
    txn = start_server(net, request)
    txn.send_response(make_response(request, 404, to_tag="t"), UPSTREAM, 0.0)
    retransmit_request(net, invite(), 0.2)
    assert net.times() == [0.0, 0.2]
    assert net.sent[0][1] == net.sent[1][1]


def test_invite_server_timer_h_without_ack() -> None:
    """Without an ACK, Timer H ends the transaction at 64*T1; Timer G stops with it."""
    net = Net()
    request = invite()
    txn = start_server(net, request)
    txn.send_response(make_response(request, 480, to_tag="t"), UPSTREAM, 0.0)
    net.advance(31.9)
    assert txn.state == COMPLETED
    net.advance(32.0)
    assert txn.state == TERMINATED
    assert net.layer.server == {}
    assert net.times() == [0.0, *doubling(0.5, 4.0, 32.0)]
    net.advance(100.0)
    assert net.times()[-1] < 32.0
    assert net.layer.next_deadline() is None


def test_invite_server_tcp_no_timer_g_and_timer_i_zero() -> None:
    """Over TCP the final is sent once and the ACK ends the transaction at once."""
    net = Net()
    request = invite()
    txn = start_server(net, request, UPSTREAM_TCP)
    txn.send_response(make_response(request, 486, to_tag="t"), UPSTREAM_TCP, 0.0)
    net.advance(10.0)
    assert net.times() == [0.0]
    retransmit_request(net, invite(method="ACK", to_tag="t"), 10.0)
    net.advance(10.0)
    assert txn.state == TERMINATED
    assert net.layer.server == {}


def test_invite_server_2xx_accepted_then_timer_l() -> None:
    """A 2xx moves to Accepted: INVITE retransmissions are absorbed, more 2xx go out, Timer L ends it."""
    net = Net()
    request = invite()
    txn = start_server(net, request)
    ok = make_response(request, 200, to_tag="one")
    txn.send_response(ok, UPSTREAM, 0.0)
    assert txn.state == ACCEPTED
    retransmit_request(net, invite(), 0.5)
    assert net.times() == [0.0]
    net.advance(1.0)
    txn.send_response(ok, UPSTREAM, 1.0)
    txn.send_response(make_response(request, 200, to_tag="two"), UPSTREAM, 1.0)
    txn.send_response(make_response(request, 486, to_tag="three"), UPSTREAM, 1.0)
    txn.send_response(make_response(request, 180, to_tag="four"), UPSTREAM, 1.0)
    assert [sent_response(d).to_tag for _, d, _ in net.sent] == ["one", "one", "two"]
    net.advance(31.9)
    assert txn.state == ACCEPTED
    net.advance(32.0)
    assert txn.state == TERMINATED
    assert net.layer.server == {}
    assert net.times() == [0.0, 1.0, 1.0]


def test_invite_server_responses_after_completed_are_dropped() -> None:
    """Once a non-2xx final was sent, further responses from the TU are not sent."""
    net = Net()
    request = invite()
    txn = start_server(net, request)
    txn.send_response(make_response(request, 486, to_tag="t"), UPSTREAM, 0.0)
    txn.send_response(make_response(request, 200, to_tag="t"), UPSTREAM, 0.1)
    assert net.times() == [0.0]
    assert txn.state == COMPLETED


def test_invite_server_custom_timer_values() -> None:
    """Custom T1/T2/T4 drive Timers G, H and I."""
    net = Net(TimerValues(t1=0.1, t2=0.4, t4=0.5))
    request = invite()
    txn = start_server(net, request)
    txn.send_response(make_response(request, 486, to_tag="t"), UPSTREAM, 0.0)
    net.advance(2.0)
    assert net.times() == [0.0, 0.1, 0.3, 0.7, 1.1, 1.5, 1.9]
    retransmit_request(net, invite(method="ACK", to_tag="t"), 2.0)
    net.advance(2.49)
    assert txn.state == CONFIRMED
    net.advance(2.5)
    assert txn.state == TERMINATED

    net = Net(TimerValues(t1=0.1, t2=0.4, t4=0.5))
    txn = start_server(net, request)
    txn.send_response(make_response(request, 486, to_tag="t"), UPSTREAM, 0.0)
    net.advance(6.39)
    assert txn.state == COMPLETED
    net.advance(6.4)
    assert txn.state == TERMINATED


# --- non-INVITE server ----------------------------------------------------------------------------


def test_non_invite_server_trying_absorbs_retransmissions() -> None:
    """In Trying a retransmitted request is absorbed; after a 1xx it gets the 1xx again."""
    net = Net()
    request = options()
    txn = start_server(net, request)
    assert txn.state == TRYING
    retransmit_request(net, options(), 0.5)
    assert net.sent == []
    net.advance(0.6)
    txn.send_response(make_response(request, 100), UPSTREAM, 0.6)
    assert txn.state == PROCEEDING
    retransmit_request(net, options(), 1.5)
    assert net.times() == [0.6, 1.5]
    assert net.sent[0][1] == net.sent[1][1]


def test_non_invite_server_final_resent_then_timer_j() -> None:
    """A retransmitted request gets the final response again until Timer J (64*T1) ends it."""
    net = Net()
    request = options()
    txn = start_server(net, request)
    ok = make_response(request, 200, to_tag="t")
    txn.send_response(ok, UPSTREAM, 0.0)
    assert txn.state == COMPLETED
    retransmit_request(net, options(), 0.5)
    retransmit_request(net, options(), 10.0)
    assert net.times() == [0.0, 0.5, 10.0]
    assert {d for _, d, _ in net.sent} == {ok.to_bytes()}
    # no Timer G for non-INVITE: nothing goes out on its own
    net.advance(31.9)
    assert net.times() == [0.0, 0.5, 10.0]
    assert net.layer.server == {txn.key: txn}
    net.advance(32.0)
    assert txn.state == TERMINATED
    assert net.layer.server == {}
    txn.send_response(ok, UPSTREAM, 40.0)
    assert len(net.sent) == 3


def test_non_invite_server_second_final_is_dropped() -> None:
    """Only the first final response is sent."""
    net = Net()
    request = options()
    txn = start_server(net, request)
    txn.send_response(make_response(request, 200, to_tag="t"), UPSTREAM, 0.0)
    txn.send_response(make_response(request, 500, to_tag="t"), UPSTREAM, 0.0)
    assert len(net.sent) == 1


def test_non_invite_server_tcp_ends_at_once() -> None:
    """Over TCP Timer J is zero: the transaction is gone after the final response."""
    net = Net()
    request = options()
    txn = start_server(net, request, UPSTREAM_TCP)
    txn.send_response(make_response(request, 200, to_tag="t"), UPSTREAM_TCP, 0.0)
    assert txn.state == TERMINATED
    assert net.layer.server == {}


def test_non_invite_server_custom_timer_j() -> None:
    """Timer J follows a custom T1."""
    net = Net(TimerValues(t1=0.1, t2=0.4, t4=0.5))
    request = options()
    txn = start_server(net, request)
    txn.send_response(make_response(request, 200, to_tag="t"), UPSTREAM, 0.0)
    net.advance(6.39)
    assert txn.state == COMPLETED
    net.advance(6.4)
    assert txn.state == TERMINATED


# --- server_key, matching, limits ------------------------------------------------------------------


def test_server_key_rfc3261() -> None:
    """With the magic cookie the key is branch, sent-by and method; ACK counts as INVITE."""
    request = invite()
    assert server_key(request) == (BRANCH, "proxy.example.net", "5060", "INVITE")
    assert server_key(invite(method="ACK", to_tag="x")) == server_key(request)
    assert server_key(invite(method="CANCEL")) != server_key(request)
    assert server_key(invite("z9hG4bKother")) != server_key(request)


def test_server_key_sent_by_matters() -> None:
    """Two requests with the same branch from different sent-by are different transactions."""
    first = invite()
    second = invite()
    second.set("via", f"SIP/2.0/UDP other.example.net:5060;branch={BRANCH}")
    assert server_key(first) != server_key(second)
    third = invite()
    third.set("via", f"SIP/2.0/UDP proxy.example.net;branch={BRANCH}")
    assert server_key(third) == (BRANCH, "proxy.example.net", "", "INVITE")


def rfc2543(method: str = "INVITE", to_tag: str = "", call_id: str = "c2543", cseq: int = 1) -> Request:
    """A request without the magic cookie in its branch (RFC 2543 style)."""
    tag = f";tag={to_tag}" if to_tag else ""
    data = (
        f"{method} sip:bob@biloxi.example.com SIP/2.0\r\n"
        "Via: SIP/2.0/UDP old.example.com:5060\r\n"
        f"To: <sip:bob@biloxi.example.com>{tag}\r\n"
        "From: <sip:alice@atlanta.example.com>;tag=ftag\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "\r\n"
    ).encode()
    message = parse_datagram(data)
    assert isinstance(message, Request)
    return message


def test_server_key_rfc2543_fallback() -> None:
    """Without the cookie, the key is built from R-URI, Call-ID, tags, CSeq number, top Via and method."""
    request = rfc2543()
    key = server_key(request)
    assert key[0] == "2543"
    assert key == server_key(rfc2543())
    assert server_key(rfc2543("ACK", to_tag="bobtag")) == key
    assert server_key(rfc2543(call_id="other")) != key
    assert server_key(rfc2543(cseq=2)) != key
    assert server_key(rfc2543("OPTIONS")) != key
    assert server_key(rfc2543(to_tag="t1")) != key


def test_bare_cookie_branch_falls_back_to_rfc2543() -> None:
    """A branch that is only the magic cookie does not count as RFC 3261 style."""
    assert server_key(invite("z9hG4bK"))[0] == "2543"
    assert server_key(invite("abc123"))[0] == "2543"


def test_match_server_finds_invite_for_its_ack() -> None:
    """layer.match_server() finds the INVITE transaction for its ACK (both styles)."""
    net = Net()
    txn = start_server(net, invite())
    key, found = net.layer.match_server(invite(method="ACK", to_tag="t"))
    assert found is txn and key == txn.key
    old = start_server(net, rfc2543())
    _, found = net.layer.match_server(rfc2543("ACK", to_tag="bobtag"))
    assert found is old
    _, found = net.layer.match_server(options())
    assert found is None


def test_max_transactions_is_503() -> None:
    """New server transactions beyond max_transactions are refused with a 503; room returns when one ends."""
    net = Net(max_transactions=2)
    first = start_server(net, options("z9hG4bKa"))
    start_server(net, options("z9hG4bKb"))
    with pytest.raises(SIPError) as info:
        start_server(net, options("z9hG4bKc"))
    assert info.value.status == 503
    first.send_response(make_response(first.request, 200, to_tag="t"), UPSTREAM_TCP, 0.0)
    assert first.state == TERMINATED
    start_server(net, options("z9hG4bKc"))
    assert len(net.layer.server) == 2


def test_user_data_slot() -> None:
    """Both transaction kinds carry a user_data slot for the proxy core."""
    net = Net()
    client, _ = start_client(net)
    server = start_server(net, invite())
    assert client.user_data is None and server.user_data is None
    client.user_data = server.user_data = "branch"
    assert client.user_data == server.user_data == "branch"
