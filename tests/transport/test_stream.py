"""SIP over TCP: SIPStreamProtocol framing, pings, idle timeout, and the ConnectionTable."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import IProtocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from sipgate_proxy.sip.message import Message, Request, Response
from sipgate_proxy.sip.parser import ParseError, ParseLimits
from sipgate_proxy.sip.transaction import Destination
from sipgate_proxy.transport.stream import ConnectionTable, SIPStreamProtocol

LOCAL = "tcp:127.0.0.1:5060"
PEER = ("192.0.2.7", 40000)

OPTIONS = (
    b"OPTIONS sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 192.0.2.7:40000;branch=z9hG4bKopt1\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:alice@example.com>;tag=a1\r\n"
    b"To: <sip:bob@example.com>\r\n"
    b"Call-ID: opt-1\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)
MESSAGE = (
    b"MESSAGE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 192.0.2.7:40000;branch=z9hG4bKmsg1\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:alice@example.com>;tag=a1\r\n"
    b"To: <sip:bob@example.com>\r\n"
    b"Call-ID: msg-1\r\n"
    b"CSeq: 1 MESSAGE\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: 12\r\n"
    b"\r\n"
    b"hello\r\n\r\nbob"
)
OK = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKout1\r\n"
    b"From: <sip:alice@example.com>;tag=a1\r\n"
    b"To: <sip:bob@example.com>;tag=b1\r\n"
    b"Call-ID: out-1\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


class Harness:
    """A ConnectionTable on a MemoryReactorClock, recording what it hands up."""

    def __init__(self, **options: Any) -> None:
        self.reactor = MemoryReactorClock()
        self.delivered: list[tuple[Message | ParseError, Destination]] = []
        self.failed: list[Destination] = []
        self.table = ConnectionTable(
            self.reactor,
            self.reactor,
            ParseLimits(),
            lambda message, source: self.delivered.append((message, source)),
            self.failed.append,
            **options,
        )

    def accept(self, peer: tuple[str, int] = PEER) -> tuple[SIPStreamProtocol, StringTransport]:
        """An inbound connection from ``peer``, as the listening port would make it."""
        address = IPv4Address("TCP", *peer)
        protocol = self.table.inbound_factory(LOCAL).buildProtocol(address)
        assert isinstance(protocol, SIPStreamProtocol)
        transport = StringTransport(peerAddress=address)
        protocol.makeConnection(transport)
        return protocol, transport

    def complete_connect(self, index: int = -1) -> tuple[SIPStreamProtocol, StringTransport, Any]:
        """Let the outbound connection recorded at ``index`` succeed."""
        host, port, factory, _timeout, _bind = self.reactor.tcpClients[index]
        address = IPv4Address("TCP", host, port)
        protocol = factory.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        protocol.makeConnection(transport)
        return protocol, transport, factory


def lose(protocol: SIPStreamProtocol) -> None:
    protocol.connectionLost(Failure(ConnectionDone()))


# -- SIPStreamProtocol -------------------------------------------------------


def test_protocol_provides_iprotocol() -> None:
    """SIPStreamProtocol is a complete Twisted IProtocol."""
    h = Harness()
    protocol, _ = h.accept()
    assert verifyObject(IProtocol, protocol)


def test_two_messages_in_one_chunk_are_delivered_with_the_connection_as_source() -> None:
    """Two messages in one dataReceived both reach deliver, each with Destination('tcp', peer, connection, local)."""
    h = Harness()
    protocol, transport = h.accept()
    protocol.dataReceived(OPTIONS + MESSAGE)
    assert [type(m) for m, _ in h.delivered] == [Request, Request]
    assert [m.method for m, _ in h.delivered] == ["OPTIONS", "MESSAGE"]  # type: ignore[union-attr]
    expected = Destination("tcp", "192.0.2.7", 40000, protocol, LOCAL)
    assert [source for _, source in h.delivered] == [expected, expected]
    assert h.delivered[0][1].connection is protocol
    assert not transport.disconnecting


def test_one_message_fed_byte_by_byte_arrives_once_with_its_body() -> None:
    """A message trickled one byte per dataReceived is delivered exactly once, body intact."""
    h = Harness()
    protocol, _ = h.accept()
    for index in range(len(MESSAGE)):
        protocol.dataReceived(MESSAGE[index : index + 1])
    assert len(h.delivered) == 1
    message = h.delivered[0][0]
    assert isinstance(message, Request)
    assert message.body == b"hello\r\n\r\nbob"


def test_double_crlf_ping_is_answered_with_a_single_crlf() -> None:
    """An RFC 5626 keep-alive ping (CRLFCRLF) gets one CRLF pong and delivers nothing."""
    h = Harness()
    protocol, transport = h.accept()
    protocol.dataReceived(b"\r\n\r\n")
    assert transport.value() == b"\r\n"
    assert h.delivered == []
    assert not transport.disconnecting


def test_ping_split_across_chunks_and_followed_by_a_message() -> None:
    """A ping split over two chunks is answered once; the message after it is still delivered."""
    h = Harness()
    protocol, transport = h.accept()
    protocol.dataReceived(b"\r\n")
    assert transport.value() == b""
    protocol.dataReceived(b"\r\n" + OPTIONS)
    assert transport.value() == b"\r\n"
    assert len(h.delivered) == 1


def test_negative_content_length_closes_the_connection_and_delivers_nothing() -> None:
    """A negative Content-Length cannot be framed: the stream is closed and the core gets nothing."""
    h = Harness()
    protocol, transport = h.accept()
    protocol.dataReceived(OPTIONS.replace(b"Content-Length: 0", b"Content-Length: -1"))
    assert transport.disconnecting
    assert h.delivered == []


def test_conflicting_content_lengths_close_the_connection_and_deliver_nothing() -> None:
    """Two Content-Length headers that disagree close the stream; nothing is delivered."""
    h = Harness()
    protocol, transport = h.accept()
    protocol.dataReceived(OPTIONS.replace(b"Content-Length: 0\r\n", b"Content-Length: 0\r\nContent-Length: 5\r\n"))
    assert transport.disconnecting
    assert h.delivered == []


def test_messages_before_a_framing_error_are_delivered_before_the_close() -> None:
    """A complete message in the same chunk as a framing fault is not lost; then the stream closes."""
    h = Harness()
    protocol, transport = h.accept()
    protocol.dataReceived(OPTIONS + OPTIONS.replace(b"Content-Length: 0", b"Content-Length: -1"))
    assert transport.disconnecting
    assert len(h.delivered) == 1
    assert isinstance(h.delivered[0][0], Request) and h.delivered[0][0].call_id == "opt-1"


def test_framed_message_with_a_bad_start_line_is_delivered_as_parse_error() -> None:
    """A framed message with a bad Request-Line arrives as a ParseError and the stream stays open."""
    h = Harness()
    protocol, transport = h.accept()
    protocol.dataReceived(OPTIONS.replace(b"OPTIONS sip:bob@example.com SIP/2.0", b"OPTIONS  SIP/2.0") + OPTIONS)
    assert [type(m) for m, _ in h.delivered] == [ParseError, Request]
    assert not transport.disconnecting


def test_idle_connection_is_closed_after_the_idle_timeout_on_the_tables_clock() -> None:
    """The idle timer runs on the clock given to the table; it closes a silent connection, data resets it."""
    h = Harness(idle_timeout=30.0)
    protocol, transport = h.accept()
    h.reactor.advance(29.0)
    assert not transport.disconnecting
    protocol.dataReceived(b"\r\n\r\n")  # traffic resets the timer
    h.reactor.advance(29.0)
    assert not transport.disconnecting
    h.reactor.advance(1.0)
    assert transport.disconnecting


def test_sending_resets_the_idle_timer() -> None:
    """Writing on a connection counts as activity for the idle timer."""
    h = Harness(idle_timeout=30.0)
    protocol, transport = h.accept()
    h.reactor.advance(20.0)
    protocol.send(OK)
    h.reactor.advance(20.0)
    assert not transport.disconnecting
    assert transport.value() == OK


def test_connection_lost_cancels_the_idle_timer() -> None:
    """A closed connection leaves no idle DelayedCall behind."""
    h = Harness(idle_timeout=30.0)
    protocol, _ = h.accept()
    assert len(h.reactor.getDelayedCalls()) == 1
    lose(protocol)
    assert h.reactor.getDelayedCalls() == []


def test_send_on_a_closed_connection_raises_connection_done() -> None:
    """send() on a connection that was lost raises ConnectionDone instead of writing into the void."""
    h = Harness()
    protocol, _ = h.accept()
    lose(protocol)
    with pytest.raises(ConnectionDone):
        protocol.send(OK)


# -- ConnectionTable -----------------------------------------------------------


def test_accepted_connection_is_registered_and_reused_for_its_peer() -> None:
    """A send to the peer of an inbound connection writes on it; no new connection is opened."""
    h = Harness()
    _, transport = h.accept()
    assert len(h.table) == 1
    h.table.send(OK, Destination("tcp", *PEER), LOCAL)
    assert transport.value() == OK
    assert h.reactor.tcpClients == []


def test_send_uses_the_connection_named_in_the_destination() -> None:
    """A Destination carrying a live connection writes on that connection."""
    h = Harness()
    protocol, transport = h.accept()
    h.table.send(OK, Destination("tcp", "198.51.100.1", 5060, protocol, LOCAL), LOCAL)
    assert transport.value() == OK
    assert h.reactor.tcpClients == []


def test_send_with_a_closed_connection_falls_back_to_a_new_one() -> None:
    """When the Destination's connection is closed, the table connects to the peer again."""
    h = Harness()
    protocol, transport = h.accept()
    lose(protocol)
    h.table.send(OK, Destination("tcp", *PEER, protocol, LOCAL), LOCAL)
    assert transport.value() == b""
    assert [(host, port) for host, port, *_ in h.reactor.tcpClients] == [PEER]


def test_send_without_a_connection_connects_and_queues_until_connected() -> None:
    """No connection to the peer: connectTCP is called once, data is queued and written on connectionMade."""
    h = Harness(connect_timeout=7.0)
    destination = Destination("tcp", "192.0.2.9", 5060)
    h.table.send(b"first", destination, LOCAL)
    h.table.send(b"second", destination, LOCAL)
    assert [(c[0], c[1], c[3]) for c in h.reactor.tcpClients] == [("192.0.2.9", 5060, 7.0)]
    protocol, transport, _ = h.complete_connect()
    assert transport.value() == b"firstsecond"
    assert protocol.local == LOCAL
    assert len(h.table) == 1
    h.table.send(b"third", destination, LOCAL)
    assert transport.value() == b"firstsecondthird"
    assert len(h.reactor.tcpClients) == 1


def test_outbound_connection_delivers_what_the_peer_sends() -> None:
    """Messages on an outbound connection reach deliver with that connection as the source."""
    h = Harness()
    h.table.send(b"x", Destination("tcp", "192.0.2.9", 5060), LOCAL)
    protocol, _, _ = h.complete_connect()
    protocol.dataReceived(OK)
    assert len(h.delivered) == 1
    message, source = h.delivered[0]
    assert isinstance(message, Response) and message.status == 200
    assert source == Destination("tcp", "192.0.2.9", 5060, protocol, LOCAL)


def test_failed_connect_reports_the_destination_and_forgets_the_pending_connection() -> None:
    """clientConnectionFailed calls the failed callback with the destination; the next send connects anew."""
    h = Harness()
    destination = Destination("tcp", "192.0.2.9", 5060, None, LOCAL)
    h.table.send(b"x", destination, LOCAL)
    _, _, factory, _, _ = h.reactor.tcpClients[0]
    factory.clientConnectionFailed(h.reactor.connectors[0], Failure(ConnectionRefusedError()))
    assert h.failed == [destination]
    assert len(h.table) == 0
    h.table.send(b"y", destination, LOCAL)
    assert len(h.reactor.tcpClients) == 2


def test_inbound_connection_over_the_limit_is_refused() -> None:
    """At max_connections the inbound factory returns None, so the port drops the connection."""
    h = Harness(max_connections=1)
    h.accept()
    factory = h.table.inbound_factory(LOCAL)
    assert factory.buildProtocol(IPv4Address("TCP", "192.0.2.8", 40001)) is None


def test_outbound_connection_over_the_limit_fails_without_connecting() -> None:
    """At max_connections a send to a new peer reports failure at once and does not call connectTCP."""
    h = Harness(max_connections=1)
    h.accept()
    destination = Destination("tcp", "192.0.2.9", 5060)
    h.table.send(b"x", destination, LOCAL)
    assert h.failed == [destination]
    assert h.reactor.tcpClients == []


def test_pending_outbound_connections_count_towards_the_limit() -> None:
    """A connection still being opened counts: the second new peer over the limit fails."""
    h = Harness(max_connections=1)
    h.table.send(b"x", Destination("tcp", "192.0.2.9", 5060), LOCAL)
    second = Destination("tcp", "192.0.2.10", 5060)
    h.table.send(b"y", second, LOCAL)
    assert h.failed == [second]
    assert len(h.reactor.tcpClients) == 1


def test_closed_connection_is_removed_and_frees_its_slot() -> None:
    """connectionLost removes the connection: it is not reused, and the limit counts it no more."""
    h = Harness(max_connections=1)
    protocol, _ = h.accept()
    lose(protocol)
    assert len(h.table) == 0
    assert h.table.inbound_factory(LOCAL).buildProtocol(IPv4Address("TCP", *PEER)) is not None
    h.table.send(b"x", Destination("tcp", *PEER), LOCAL)
    assert len(h.reactor.tcpClients) == 1


def test_close_all_closes_every_connection() -> None:
    """close_all asks every open connection to close."""
    h = Harness()
    _, first = h.accept()
    _, second = h.accept(("192.0.2.8", 40001))
    h.table.close_all()
    assert first.disconnecting and second.disconnecting
