"""SIP over TCP: framing by Content-Length, keep-alives, the connection table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from ..sip.errors import FramingError
from ..sip.message import Message
from ..sip.parser import ParseError, ParseLimits, StreamFramer
from ..sip.transaction import Destination

log = Logger(namespace="sipgate_proxy.transport")

Deliver = Callable[[Message | ParseError, Destination], None]


class SIPStreamProtocol(Protocol, TimeoutMixin):
    """One TCP connection, inbound or outbound."""

    def __init__(self, table: ConnectionTable, local: str) -> None:
        self.table = table
        self.local = local
        self.framer = StreamFramer(table.limits)
        self.peer: tuple[str, int] = ("", 0)
        self.pending: list[bytes] = []
        self.connected_ok = False
        self.closed = False
        self._pings = 0

    def _t(self) -> Any:
        return self.transport

    def callLater(self, period: float, func: Callable[[], object]) -> Any:
        # the idle timer runs on the table's clock; TimeoutMixin's default is the global reactor
        return self.table.clock.callLater(period, func)

    def connectionMade(self) -> None:
        peer = self._t().getPeer()
        self.peer = (peer.host, peer.port)
        self.connected_ok = True
        self.setTimeout(self.table.idle_timeout)
        self.table.add(self)
        for data in self.pending:
            self._t().write(data)
        self.pending.clear()

    def send(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionDone()
        if not self.connected_ok:
            self.pending.append(data)
            return
        self.resetTimeout()
        self._t().write(data)

    def dataReceived(self, data: bytes) -> None:
        self.resetTimeout()
        framer = self.framer
        try:
            messages = framer.feed(data)
        except FramingError as error:
            log.info(
                "closing tcp connection from {host}:{port}: {reason}",
                host=self.peer[0],
                port=self.peer[1],
                reason=error.reason,
            )
            self._deliver(error.messages)
            self._t().loseConnection()
            return
        if framer.pings != self._pings:
            # RFC 5626 4.4.1: a double CRLF ping gets a single CRLF pong
            for _ in range(framer.pings - self._pings):
                self._t().write(b"\r\n")
            self._pings = framer.pings
        if messages:
            self._deliver(messages)

    def _deliver(self, messages: list[Message | ParseError]) -> None:
        if not messages:
            return
        source = Destination("tcp", self.peer[0], self.peer[1], self, self.local)
        deliver = self.table.deliver
        for message in messages:
            deliver(message, source)

    def timeoutConnection(self) -> None:
        log.debug("closing idle tcp connection to {host}:{port}", host=self.peer[0], port=self.peer[1])
        self._t().loseConnection()

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:  # type: ignore[assignment]
        self.closed = True
        self.setTimeout(None)
        self.table.remove(self)


class _InboundFactory(Factory):
    def __init__(self, table: ConnectionTable, local: str) -> None:
        self.table = table
        self.local = local

    def buildProtocol(self, addr: Any) -> Protocol | None:
        if len(self.table) >= self.table.max_connections:
            log.warn("refusing tcp connection from {addr}: connection limit reached", addr=addr)
            return None
        return SIPStreamProtocol(self.table, self.local)


class _OutboundFactory(ClientFactory):
    def __init__(self, table: ConnectionTable, protocol: SIPStreamProtocol, destination: Destination) -> None:
        self.table = table
        self.protocol_instance = protocol
        self.destination = destination

    def buildProtocol(self, addr: Any) -> Protocol:
        return self.protocol_instance

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.protocol_instance.closed = True
        self.table.forget_pending(self.destination)
        log.info(
            "tcp connection to {host}:{port} failed: {reason}",
            host=self.destination.host,
            port=self.destination.port,
            reason=reason.getErrorMessage(),
        )
        self.table.failed(self.destination)


class ConnectionTable:
    """Open streams by peer address, for reuse in both directions."""

    def __init__(
        self,
        reactor: Any,
        clock: Any,
        limits: ParseLimits,
        deliver: Deliver,
        failed: Callable[[Destination], None],
        idle_timeout: float = 600.0,
        max_connections: int = 10_000,
        connect_timeout: float = 10.0,
    ) -> None:
        self.reactor = reactor
        self.clock = clock
        self.limits = limits
        self.deliver = deliver
        self.failed = failed
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self._by_peer: dict[tuple[str, int], SIPStreamProtocol] = {}
        self._pending: dict[tuple[str, int], SIPStreamProtocol] = {}
        self._all: set[SIPStreamProtocol] = set()

    def __len__(self) -> int:
        return len(self._all)

    def inbound_factory(self, local: str) -> Factory:
        return _InboundFactory(self, local)

    def add(self, protocol: SIPStreamProtocol) -> None:
        self._all.add(protocol)
        self._by_peer[protocol.peer] = protocol
        self._pending.pop(protocol.peer, None)

    def remove(self, protocol: SIPStreamProtocol) -> None:
        self._all.discard(protocol)
        if self._by_peer.get(protocol.peer) is protocol:
            del self._by_peer[protocol.peer]

    def forget_pending(self, destination: Destination) -> None:
        self._pending.pop((destination.host, destination.port), None)

    def send(self, data: bytes, destination: Destination, local: str) -> None:
        """Write on the given connection, a known one to the peer, or a new one."""
        connection = destination.connection
        if isinstance(connection, SIPStreamProtocol) and not connection.closed:
            connection.send(data)
            return
        peer = (destination.host, destination.port)
        protocol = self._by_peer.get(peer) or self._pending.get(peer)
        if protocol is not None and not protocol.closed:
            protocol.send(data)
            return
        if len(self._all) + len(self._pending) >= self.max_connections:
            log.warn("no tcp connection to {host}:{port}: connection limit reached", host=peer[0], port=peer[1])
            self.failed(destination)
            return
        protocol = SIPStreamProtocol(self, local)
        protocol.pending.append(data)
        self._pending[peer] = protocol
        factory = _OutboundFactory(self, protocol, destination)
        self.reactor.connectTCP(peer[0], peer[1], factory, timeout=self.connect_timeout)

    def close_all(self) -> None:
        for protocol in list(self._all):
            if protocol.transport is not None:
                protocol._t().loseConnection()
