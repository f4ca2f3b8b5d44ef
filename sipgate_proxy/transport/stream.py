"""SIP over TCP and TLS: framing by Content-Length, keep-alives, the connection table.

TLS runs under the same protocol: :class:`twisted.protocols.tls.TLSMemoryBIOFactory`
wraps it with the creators of :mod:`sipgate_proxy.transport.tls`. An outbound
TLS connection that closes before its handshake completed (certificate not
trusted, expired, for another name, no client certificate where the peer wants
one) fails its destination at once, with the reason in the log.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from ..sip.errors import FramingError
from ..sip.message import Message
from ..sip.parser import ParseError, ParseLimits, StreamFramer
from ..sip.transaction import Destination
from .tls import openssl_reason

log = Logger(namespace="sipgate_proxy.transport")

Deliver = Callable[[Message | ParseError, Destination], None]


@implementer(IHandshakeListener)
class SIPStreamProtocol(Protocol, TimeoutMixin):
    """One TCP or TLS connection, inbound or outbound."""

    def __init__(
        self, table: ConnectionTable, local: str, transport: str = "tcp", destination: Destination | None = None
    ) -> None:
        self.table = table
        self.local = local
        self.transport_name = transport
        #: where an outbound connection goes (None: inbound)
        self.destination = destination
        self.framer = StreamFramer(table.limits)
        self.peer: tuple[str, int] = ("", 0)
        self.pending: list[bytes] = []
        self.connected_ok = False
        self.closed = False
        self.handshake_done = transport != "tls"
        self.refused: str | None = None
        #: any bytes from the peer yet (an outbound stream that closes before is a failed destination)
        self.received_any = False
        self._handshake_timer: Any = None
        self._pings = 0

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.transport_name, self.peer[0], self.peer[1])

    def peer_certificate(self) -> Any:
        """The certificate the TLS peer presented (and OpenSSL verified), or None."""
        transport = self.transport
        getter = getattr(transport, "getPeerCertificate", None)
        if self.transport_name != "tls" or getter is None or not self.handshake_done:
            return None
        try:
            return getter()
        except Exception:
            return None

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
        if not self.handshake_done:
            self._handshake_timer = self.table.clock.callLater(self.table.handshake_timeout, self._handshake_late)
        # with TLS, what is written now waits in the TLS layer for the handshake
        for data in self.pending:
            self._t().write(data)
        self.pending.clear()

    def handshakeCompleted(self) -> None:
        # also called after the identity check refused the peer and aborted
        if self.refused is None:
            self.handshake_done = True
        self._stop_handshake_timer()

    def tls_refused(self, reason: str) -> None:
        """The TLS layer refused the peer (chain or identity); the first reason is the one logged."""
        if self.refused is None:
            self.refused = reason

    def _handshake_late(self) -> None:
        self._handshake_timer = None
        if not self.handshake_done:
            self.refused = f"no TLS handshake within {self.table.handshake_timeout:g} s"
            self._t().abortConnection()

    def _stop_handshake_timer(self) -> None:
        if self._handshake_timer is not None and self._handshake_timer.active():
            self._handshake_timer.cancel()
        self._handshake_timer = None

    def send(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionDone()
        if not self.connected_ok:
            self.pending.append(data)
            return
        self.resetTimeout()
        self._t().write(data)

    def dataReceived(self, data: bytes) -> None:
        self.received_any = True
        self.resetTimeout()
        framer = self.framer
        try:
            messages = framer.feed(data)
        except FramingError as error:
            log.info(
                "closing {transport} connection from {host}:{port}: {reason}",
                transport=self.transport_name,
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
        source = Destination(self.transport_name, self.peer[0], self.peer[1], self, self.local)
        deliver = self.table.deliver
        for message in messages:
            deliver(message, source)

    def timeoutConnection(self) -> None:
        log.debug("closing idle tcp connection to {host}:{port}", host=self.peer[0], port=self.peer[1])
        self._t().loseConnection()

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:  # type: ignore[assignment]
        self.closed = True
        self.setTimeout(None)
        self._stop_handshake_timer()
        self.table.remove(self)
        if not self.handshake_done or (
            self.transport_name == "tls" and self.destination is not None and not self.received_any
        ):
            # with TLS 1.3 a server refuses our certificate (or its absence)
            # only after our side of the handshake is done: an outbound TLS
            # connection that closes before the peer said anything failed too
            why = self.refused or openssl_reason(reason.value)
            if self.destination is not None:
                log.warn(
                    "tls connection to {host}:{port} ({name}) refused: {reason}",
                    host=self.destination.host,
                    port=self.destination.port,
                    name=self.destination.server_name or self.destination.host,
                    reason=why,
                )
                self.table.failed(self.destination)
            else:
                log.info(
                    "tls handshake with {host}:{port} failed: {reason}",
                    host=self.peer[0],
                    port=self.peer[1],
                    reason=why,
                )


class _InboundFactory(Factory):
    def __init__(self, table: ConnectionTable, local: str, transport: str) -> None:
        self.table = table
        self.local = local
        self.transport = transport

    def buildProtocol(self, addr: Any) -> Protocol | None:
        if len(self.table) >= self.table.max_connections:
            log.warn(
                "refusing {transport} connection from {addr}: connection limit reached",
                transport=self.transport,
                addr=addr,
            )
            return None
        return SIPStreamProtocol(self.table, self.local, self.transport)


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
            "{transport} connection to {host}:{port} failed: {reason}",
            transport=self.destination.transport,
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
        handshake_timeout: float = 10.0,
    ) -> None:
        self.reactor = reactor
        self.clock = clock
        self.limits = limits
        self.deliver = deliver
        self.failed = failed
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.handshake_timeout = handshake_timeout
        #: (host, port, server_name) -> an IOpenSSLClientConnectionCreator; None: no outbound TLS
        self.tls_client: Callable[[str, int, str | None], Any] | None = None
        self._by_peer: dict[tuple[str, str, int], SIPStreamProtocol] = {}
        self._pending: dict[tuple[str, str, int], SIPStreamProtocol] = {}
        self._all: set[SIPStreamProtocol] = set()
        self._aliases: dict[SIPStreamProtocol, list[tuple[str, str, int]]] = {}

    def __len__(self) -> int:
        return len(self._all)

    def inbound_factory(self, local: str, transport: str = "tcp", server_tls: Any = None) -> Any:
        """The factory of a listener; for TLS ``server_tls`` is its IOpenSSLServerConnectionCreator."""
        factory: Any = _InboundFactory(self, local, transport)
        if server_tls is not None:
            factory = TLSMemoryBIOFactory(server_tls, False, factory)
        return factory

    def add(self, protocol: SIPStreamProtocol) -> None:
        self._all.add(protocol)
        self._by_peer[protocol.key] = protocol
        if protocol.destination is not None:
            self._pending.pop(_key(protocol.destination), None)
        self._pending.pop(protocol.key, None)

    def alias(self, protocol: SIPStreamProtocol, host: str, port: int) -> None:
        """RFC 5923: requests to ``host:port`` (the peer's Via sent-by) may use this connection."""
        key = (protocol.transport_name, host, port)
        if self._by_peer.get(key) is not protocol:
            self._by_peer[key] = protocol
            self._aliases.setdefault(protocol, []).append(key)

    def remove(self, protocol: SIPStreamProtocol) -> None:
        self._all.discard(protocol)
        if self._by_peer.get(protocol.key) is protocol:
            del self._by_peer[protocol.key]
        for key in self._aliases.pop(protocol, ()):
            if self._by_peer.get(key) is protocol:
                del self._by_peer[key]
        if protocol.destination is not None and self._pending.get(_key(protocol.destination)) is protocol:
            del self._pending[_key(protocol.destination)]

    def forget_pending(self, destination: Destination) -> None:
        self._pending.pop(_key(destination), None)

    def connection_to(self, destination: Destination) -> SIPStreamProtocol | None:
        """An open (or opening) connection to ``destination``'s transport, host and port."""
        key = _key(destination)
        protocol = self._by_peer.get(key) or self._pending.get(key)
        if protocol is not None and not protocol.closed:
            return protocol
        return None

    def send(self, data: bytes, destination: Destination, local: str) -> None:
        """Write on the given connection, a known one to the peer, or a new one."""
        connection = destination.connection
        if isinstance(connection, SIPStreamProtocol) and not connection.closed:
            connection.send(data)
            return
        protocol = self.connection_to(destination)
        if protocol is not None:
            protocol.send(data)
            return
        transport = destination.transport
        host, port = destination.host, destination.port
        if len(self._all) + len(self._pending) >= self.max_connections:
            log.warn(
                "no {transport} connection to {host}:{port}: connection limit reached",
                transport=transport,
                host=host,
                port=port,
            )
            self.failed(destination)
            return
        factory: Any
        protocol = SIPStreamProtocol(self, local, transport, destination)
        outbound = _OutboundFactory(self, protocol, destination)
        if transport == "tls":
            creator = self._tls_creator(destination)
            if creator is None:
                self.failed(destination)
                return
            factory = _TLSClientFactory(creator, outbound)
        else:
            factory = outbound
        protocol.pending.append(data)
        self._pending[_key(destination)] = protocol
        self.reactor.connectTCP(host, port, factory, timeout=self.connect_timeout)

    def _tls_creator(self, destination: Destination) -> Any:
        if self.tls_client is None:
            log.warn("no tls to {host}:{port}: TLS is not set up", host=destination.host, port=destination.port)
            return None
        try:
            return self.tls_client(destination.host, destination.port, destination.server_name)
        except Exception as error:
            log.warn(
                "no tls to {host}:{port}: {reason}",
                host=destination.host,
                port=destination.port,
                reason=getattr(error, "reason", None) or str(error),
            )
            return None

    def close_all(self) -> None:
        for protocol in list(self._all):
            if protocol.transport is not None:
                protocol._t().loseConnection()


def _key(destination: Destination) -> tuple[str, str, int]:
    return (destination.transport, destination.host, destination.port)


class _TLSClientFactory(TLSMemoryBIOFactory, ClientFactory):
    """TLS around an outbound connection; connection failures reach the wrapped factory."""

    def __init__(self, creator: Any, wrapped: Any) -> None:
        TLSMemoryBIOFactory.__init__(self, creator, True, wrapped)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.wrappedFactory.clientConnectionFailed(connector, reason)

    def clientConnectionLost(self, connector: Any, reason: Failure) -> None:
        pass
