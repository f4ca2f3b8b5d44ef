"""SIP over UDP: SIPDatagramProtocol hands datagrams up and writes datagrams out."""

from __future__ import annotations

from typing import Any

from sipgate_proxy.sip.transaction import Destination
from sipgate_proxy.transport.udp import SIPDatagramProtocol

LOCAL = "udp:127.0.0.1:5060"


class FakeUDPTransport:
    """Records write(data, addr) like a listening UDP port."""

    def __init__(self) -> None:
        self.written: list[tuple[bytes, tuple[str, int]]] = []

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.written.append((data, addr))


def make() -> tuple[SIPDatagramProtocol, list[tuple[bytes, Destination]], FakeUDPTransport]:
    received: list[tuple[bytes, Destination]] = []
    protocol = SIPDatagramProtocol(LOCAL, lambda data, source: received.append((data, source)))
    transport = FakeUDPTransport()
    protocol.makeConnection(transport)  # type: ignore[arg-type]
    return protocol, received, transport


def test_datagram_is_delivered_with_a_udp_destination_naming_the_listener() -> None:
    """Each datagram reaches deliver untouched with Destination('udp', host, port, None, local)."""
    protocol, received, _ = make()
    protocol.datagramReceived(b"OPTIONS sip:x SIP/2.0\r\n\r\n", ("192.0.2.5", 5061))
    protocol.datagramReceived(b"\r\n\r\n", ("2001:db8::1", 5062))
    assert received == [
        (b"OPTIONS sip:x SIP/2.0\r\n\r\n", Destination("udp", "192.0.2.5", 5061, None, LOCAL)),
        (b"\r\n\r\n", Destination("udp", "2001:db8::1", 5062, None, LOCAL)),
    ]
    assert received[0][1].connection is None
    assert not received[0][1].reliable


def test_send_writes_one_datagram_to_the_address() -> None:
    """send() writes the bytes as one datagram to (host, port) on the listening transport."""
    protocol, _, transport = make()
    protocol.send(b"SIP/2.0 200 OK\r\n\r\n", "192.0.2.5", 5061)
    assert transport.written == [(b"SIP/2.0 200 OK\r\n\r\n", ("192.0.2.5", 5061))]


def test_send_before_listening_is_dropped_quietly() -> None:
    """Without a transport (not listening yet, or stopped) send() drops the data without raising."""
    received: list[Any] = []
    protocol = SIPDatagramProtocol(LOCAL, lambda data, source: received.append(data))
    protocol.send(b"x", "192.0.2.5", 5061)
    assert received == []
