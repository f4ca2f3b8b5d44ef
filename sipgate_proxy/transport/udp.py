"""SIP over UDP: one datagram, one message."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from ..sip.transaction import Destination

log = Logger(namespace="sipgate_proxy.transport")


class SIPDatagramProtocol(DatagramProtocol):
    """Hands every datagram to the core with the address it came from."""

    def __init__(self, local: str, deliver: Callable[[bytes, Destination], None]) -> None:
        self.local = local
        self.deliver = deliver

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        self.deliver(datagram, Destination("udp", addr[0], addr[1], None, self.local))

    def send(self, data: bytes, host: str, port: int) -> None:
        """Send one datagram; ``host`` is an IP literal.

        Writes to the socket directly: Twisted's port.write re-validates the
        address on every call, which costs more than the send itself.
        """
        transport: Any = self.transport
        if transport is None:
            return
        sock = getattr(transport, "socket", None)
        if sock is None:
            transport.write(data, (host, port))
            return
        try:
            sock.sendto(data, (host, port))
        except OSError as error:
            # a full buffer or an unreachable peer loses this datagram only;
            # UDP retransmission (Timers A, E, G) covers it
            log.debug("udp send to {host}:{port} failed: {error}", host=host, port=port, error=error)
