"""SIP over UDP: one datagram, one message."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.protocol import DatagramProtocol

from ..sip.transaction import Destination


class SIPDatagramProtocol(DatagramProtocol):
    """Hands every datagram to the core with the address it came from."""

    def __init__(self, local: str, deliver: Callable[[bytes, Destination], None]) -> None:
        self.local = local
        self.deliver = deliver

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        self.deliver(datagram, Destination("udp", addr[0], addr[1], None, self.local))

    def send(self, data: bytes, host: str, port: int) -> None:
        transport: Any = self.transport
        if transport is not None:
            transport.write(data, (host, port))
