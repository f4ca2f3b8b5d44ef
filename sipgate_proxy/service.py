"""Wires listeners, the proxy core and the routing chain to a reactor."""

from __future__ import annotations

import signal
import socket
from dataclasses import replace
from typing import Any

from service_identity import VerificationError
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.base import DelayedCall
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from .config import Config, ConfigError, load_config
from .routing.plugins import build_chain
from .security.flood import FloodGuard
from .security.peers import TrustedPeers
from .sip.errors import SIPError
from .sip.forwarding import NextHop
from .sip.message import Message, Request, Response
from .sip.parser import ParseError, ParseLimits
from .sip.proxy import CoreSettings, Interface, ProxyCore, Router
from .sip.settings import bare, is_ip
from .sip.transaction import Destination, TimerValues
from .transport.resolve import Hop, LookupFailed, ServerLocator, make_resolver
from .transport.stream import ConnectionTable, SIPStreamProtocol
from .transport.tls import ClientTLSCache, ServerTLS, TlsSetupError, verify_identity
from .transport.udp import SIPDatagramProtocol

log = Logger(namespace="sipgate_proxy.service")


def _grow_buffers(port: Any, size: int) -> None:
    """Give a UDP socket room for bursts; the kernel caps SO_RCVBUF at
    net.core.rmem_max unless the process may force it (root)."""
    sock = getattr(port, "socket", None)
    if sock is None:
        return
    for option, forced in ((socket.SO_RCVBUF, 33), (socket.SO_SNDBUF, 32)):  # SO_RCVBUFFORCE, SO_SNDBUFFORCE
        try:
            sock.setsockopt(socket.SOL_SOCKET, forced, size)
        except OSError:
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, size)
            except OSError as error:
                log.warn("cannot set UDP socket buffer to {size}: {error}", size=size, error=error)


class ProxyService(Service):
    """The running proxy: sockets, timers and the sans-IO core."""

    def __init__(
        self, config: Config, reactor: Any, router: Any = None, install_signals: bool = False, resolver: Any = None
    ) -> None:
        #: an IResolver for server location instead of the one [dns] describes (tests)
        self.resolver = resolver
        self.install_signals = install_signals
        self.config = config
        self.reactor = reactor
        if router is None:
            routing = config.routing
            router = build_chain(routing.routers, routing.tables, routing.plugin_dirs, reactor)
        self.router: Router = router
        self.core: ProxyCore | None = None
        self.udp: dict[str, SIPDatagramProtocol] = {}
        self.ports: list[Any] = []
        self.interfaces: list[Interface] = []
        limits = config.limits
        self.parse_limits = ParseLimits(limits.max_message_size, limits.max_headers, limits.max_line_length)
        self.connections = ConnectionTable(
            reactor,
            reactor,
            self.parse_limits,
            self._deliver_message,
            self._connection_failed,
            idle_timeout=limits.tcp_idle_timeout,
            max_connections=limits.max_connections,
            handshake_timeout=config.tls.handshake_timeout,
        )
        self.tls_clients = ClientTLSCache(config.tls)
        self.connections.tls_client = self._tls_client
        #: the TLS contexts of each TLS listener, by listener name (replaced on reload)
        self.server_tls: dict[str, ServerTLS] = {}
        self._timer: DelayedCall | None = None
        self._udp_ports: list[Any] = []
        self.flood = FloodGuard(config.security.flood)
        self.trusted = TrustedPeers(config.security.trusted)
        self._logged_bans: set[str] = set()
        #: names sent to outside the core (Via sent-by, probes) and the address used, so a
        #: transport error on the address reaches the transactions that know the name
        self._resolved: dict[str, str] = {}
        #: one for the life of the service: locators made on reload share it
        self._system_resolver = _SystemResolver()
        self.locator = self._make_locator(config)

    # -- start and stop ----------------------------------------------------

    def startService(self) -> None:
        super().startService()
        reactor = self.reactor
        if self.install_signals:
            # SIGHUP reloads the routing tables (the default action would end us)
            signal.signal(signal.SIGHUP, lambda signum, frame: reactor.callFromThread(self.reload))
        for index, listener in enumerate(self.config.listeners):
            name = listener.name
            try:
                if listener.transport == "udp":
                    protocol = SIPDatagramProtocol(name, self._deliver_datagram)
                    port = reactor.listenUDP(listener.port, protocol, interface=listener.address, maxPacketSize=65535)
                    self.udp[name] = protocol
                    if hasattr(port, "doRead"):
                        self._udp_ports.append(port)
                    _grow_buffers(port, self.config.limits.udp_buffer)
                elif listener.transport == "tls":
                    assert listener.tls is not None
                    server_tls = self._make_server_tls(listener.tls, index)
                    self.server_tls[name] = server_tls
                    factory = self.connections.inbound_factory(name, "tls", server_tls)
                    port = reactor.listenTCP(listener.port, factory, backlog=1024, interface=listener.address)
                else:
                    factory = self.connections.inbound_factory(name)
                    port = reactor.listenTCP(listener.port, factory, backlog=1024, interface=listener.address)
            except CannotListenError as error:
                reason = getattr(error.socketError, "strerror", None) or str(error.socketError)
                raise SystemExit(
                    f"sipgate-proxy: {self.config.path}: listen[{index}]: cannot listen on "
                    f"{listener.transport} {listener.address}:{listener.port}: {reason}"
                ) from None
            self.ports.append(port)
            actual = port.getHost().port
            log.info(
                "listening on {transport} {address}:{port}",
                transport=listener.transport,
                address=listener.address,
                port=actual,
            )
            self.interfaces.append(
                Interface(
                    name=name,
                    transport=listener.transport,
                    host=listener.address,
                    port=actual,
                    advertise=listener.advertise or listener.address,
                    advertise_port=listener.advertise_port or actual,
                )
            )
        config = self.config
        timers = config.timers
        settings = CoreSettings(
            domains=config.proxy.domains,
            record_route=config.proxy.record_route,
            server=config.proxy.server,
            timer_c=timers.timer_c,
            udp_mtu=config.limits.udp_mtu,
            limits=self.parse_limits,
            timers=TimerValues(timers.t1, timers.t2, timers.t4),
            max_transactions=config.limits.max_transactions,
            failover=frozenset(config.routing.failover),
            follow_redirects=config.routing.follow_redirects,
            max_redirects=config.routing.max_redirects,
            trusted=self.trusted,
            admission=config.security.admission,
        )
        core = ProxyCore(self.interfaces, settings, self.router, self._transmit, reactor.seconds)
        level = config.log.level
        core.info_enabled = level in ("debug", "info")
        core.debug_enabled = level == "debug"
        core.on_wakeup = self._rearm
        core.locate = self._locate
        self.core = core
        self._start_routers(self.router, None, keep_state=True)

    # -- server location (RFC 3263) ----------------------------------------

    def _make_locator(self, config: Config) -> ServerLocator:
        settings = config.dns
        resolver: Any = None
        if settings.mode != "hosts":
            if self.resolver is not None:
                resolver = self.resolver
            elif settings.servers:
                resolver = make_resolver(list(settings.servers), settings.timeout, reactor=self.reactor)
            else:
                resolver = self._system_resolver
        return ServerLocator(
            self.reactor,
            resolver,
            hosts=settings.hosts,
            transports={listener.transport for listener in config.listeners},
            min_ttl=settings.min_ttl,
            max_ttl=settings.max_ttl,
            negative_ttl=settings.negative_ttl,
            query_timeout=settings.timeout,
        )

    def _locate(self, hop: NextHop) -> Any:
        """The core's server location: destinations now, or a Deferred of them."""
        try:
            result = self.locator.locate(hop.host, hop.port, hop.transport, hop.secure)
        except LookupFailed as error:
            return defer.fail(error)
        if isinstance(result, list):
            return _destinations(result, hop.host)
        return result.addCallback(_destinations, hop.host)

    def _make_server_tls(self, settings: Any, index: int) -> ServerTLS:
        try:
            return ServerTLS(settings)
        except TlsSetupError as error:
            raise SystemExit(f"sipgate-proxy: {self.config.path}: listen[{index}]: {error.reason}") from None

    def _tls_client(self, host: str, port: int, server_name: str | None) -> Any:
        return self.tls_clients.creator(host, port, server_name)

    def _reload_tls(self, config: Config) -> None:
        """New certificates for the TLS listeners and new outbound TLS settings.

        Everything is loaded before anything is replaced; established
        connections keep the context they were made with."""
        fresh: list[tuple[ServerTLS, ServerTLS]] = []
        for listener in config.listeners:
            current = self.server_tls.get(listener.name)
            if current is not None and listener.tls is not None:
                fresh.append((current, ServerTLS(listener.tls)))
        clients = ClientTLSCache(config.tls)
        for current, new in fresh:
            current.default, current.by_name = new.default, new.by_name
        self.tls_clients = clients

    def stopService(self) -> Any:
        super().stopService()
        self._stop_routers(self.router)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.connections.close_all()
        from twisted.internet.defer import gatherResults, maybeDeferred

        ports, self.ports = self.ports, []
        return gatherResults([maybeDeferred(port.stopListening) for port in ports])

    # -- routing reload ------------------------------------------------------

    def reload(self, keep_state: bool | None = None) -> bool:
        """Re-read the config file and replace the routing chain (SIGHUP).

        A config that fails validation changes nothing and is logged with its
        reason. Routers that keep state (destination health) take over their
        predecessor's unless ``keep_state`` is False (default: the config's
        routing.keep_state_on_reload).
        """
        path = self.config.path
        try:
            config = load_config(path)
            routing = config.routing
            chain = build_chain(routing.routers, routing.tables, routing.plugin_dirs, self.reactor)
            self._reload_tls(config)
        except TlsSetupError as error:
            log.error("reload failed, routing and certificates unchanged: {error}", error=error.reason)
            return False
        except ConfigError as error:
            log.error("reload failed, routing unchanged: {error}", error=str(error.with_path(path)))
            return False
        except Exception:
            log.failure("reload failed, routing unchanged")
            return False
        listen_before = [replace(listener, tls=None) for listener in self.config.listeners]
        listen_now = [replace(listener, tls=None) for listener in config.listeners]
        if listen_before != listen_now or config.timers != self.config.timers:
            log.warn("reload: listen and timer changes take effect at the next restart")
        if keep_state is None:
            keep_state = config.routing.keep_state_on_reload
        old = self.router
        self._start_routers(chain, old, keep_state)
        self.router = chain
        if self.core is not None:
            self.core.router = chain
        self._stop_routers(old)
        if config.dns != self.config.dns:
            # new [dns] settings apply to new lookups (the cache goes with the old ones)
            self.locator = self._make_locator(replace(self.config, dns=config.dns))
        self.config = replace(self.config, routing=config.routing, dns=config.dns, tls=config.tls)
        log.info(
            "routing reloaded: {routers}; certificates of {count} TLS listener(s) reloaded",
            routers=", ".join(routing.routers),
            count=len(self.server_tls),
        )
        return True

    def _start_routers(self, chain: Any, previous: Any, keep_state: bool) -> None:
        for name, router in getattr(chain, "routers", ()):
            before = previous.get(name) if previous is not None and hasattr(previous, "get") else None
            if keep_state and before is not None and hasattr(router, "take_over"):
                router.take_over(before)
            if self.core is not None and hasattr(router, "attach"):
                router.attach(self.core)

    @staticmethod
    def _stop_routers(chain: Any) -> None:
        for _, router in getattr(chain, "routers", ()):
            if hasattr(router, "stop"):
                try:
                    router.stop()
                except Exception:
                    log.failure("router stop failed")

    # -- into the core -----------------------------------------------------

    def _deliver_datagram(self, data: bytes, source: Destination) -> None:
        core = self.core
        if core is None:
            return
        now = self.reactor.seconds()
        if self.flood.enabled and not data.startswith(b"SIP/2.0 ") and not self._flood_allows(source.host, now):
            return
        core.receive_datagram(data, source, now)
        self._rearm()

    def _deliver_message(self, message: Message | ParseError, source: Destination) -> None:
        core = self.core
        if core is None:
            return
        now = self.reactor.seconds()
        if self.flood.enabled and not isinstance(message, Response) and not self._flood_allows(source.host, now):
            return
        if isinstance(message, Request) and source.transport == "tls":
            self._alias(message, source)
        core.receive_message(message, source, now)
        self._rearm()

    def _flood_allows(self, host: str, now: float) -> bool:
        """Flood limits (pike): trusted peers are exempt; a banned source is
        dropped without a reply, and the ban is logged once."""
        if self.trusted.trusts_host(host):
            return True
        before = self.flood.dropped
        allowed = self.flood.allow(host, now)
        if (not allowed and before == 0) or (not allowed and host not in self._logged_bans):
            self._logged_bans.add(host)
            if len(self._logged_bans) > 10000:
                self._logged_bans.clear()
            log.warn(
                "flood limit: {host} sent more than {limit} requests in {window} s; dropped for {ban} s",
                host=host,
                limit=self.flood.settings.limit,
                window=self.flood.settings.window,
                ban=self.flood.settings.ban,
            )
        elif allowed:
            self._logged_bans.discard(host)
        return allowed

    def _connection_failed(self, destination: Destination) -> None:
        core = self.core
        if core is None:
            return
        now = self.reactor.seconds()
        core.connection_failed(destination, now)
        # the core knows the peer by the name it routed to, the connection table by its address
        for name, address in list(self._resolved.items()):
            if address == destination.host and name != destination.host:
                core.connection_failed(destination._replace(host=name), now)
        self._rearm()

    def _alias(self, request: Request, source: Destination) -> None:
        """RFC 5923: a TLS peer whose Via carries ``alias`` and whose verified
        certificate names its sent-by host gets our requests for that host
        and port over this connection instead of a new one."""
        connection = source.connection
        if not isinstance(connection, SIPStreamProtocol):
            return
        try:
            via = request.top_via
        except SIPError:
            return
        if via.param("alias") is None:
            return
        host = bare(via.host.lower())
        port = via.port or 5061
        cert = connection.peer_certificate()
        if cert is None:
            return
        try:
            verify_identity(cert, host)
        except VerificationError:
            log.info(
                "ignoring alias {host}:{port} from {peer}: its certificate does not name {host}",
                host=host,
                port=port,
                peer=source.host,
            )
            return
        self.connections.alias(connection, host, port)
        if not is_ip(host):
            # the name, proven by the certificate, is at the address we see
            self.connections.alias(connection, source.host, port)

    # -- timers ------------------------------------------------------------

    def _rearm(self) -> None:
        core = self.core
        if core is None:
            return
        deadline = core.next_deadline()
        timer = self._timer
        if deadline is None:
            return
        if timer is not None and timer.active():
            if timer.getTime() <= deadline:
                return
            timer.cancel()
        delay = max(0.0, deadline - self.reactor.seconds())
        self._timer = self.reactor.callLater(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        core = self.core
        if core is None:
            return
        # The reactor runs due timers before it looks at the sockets. After a
        # stall (a long garbage collection, a busy router) the answers that
        # would cancel these timers may already wait in the UDP buffers:
        # read them first, so that no healthy branch is retransmitted to or
        # given up as silent because of our own delay.
        for port in self._udp_ports:
            try:
                port.doRead()
            except Exception:
                log.failure("reading a UDP socket before timers failed")
        core.handle_timers(self.reactor.seconds())
        self._rearm()

    # -- out of the core ---------------------------------------------------

    def _transmit(self, data: bytes, destination: Destination) -> None:
        host = destination.host
        if not is_ip(host):
            self._send_to_name(data, destination)
            return
        if destination.transport == "udp":
            protocol = self.udp.get(destination.local or "")
            if protocol is None:
                protocol = next(iter(self.udp.values()), None)
            if protocol is None:
                log.warn("no udp listener to send to {host}", host=destination.host)
                return
            protocol.send(data, destination.host, destination.port)
        else:
            self.connections.send(data, destination, destination.local or "")

    def _send_to_name(self, data: bytes, destination: Destination) -> None:
        """A response to a Via sent-by name or a probe to a named server: A/AAAA
        of the name (the port is known), from the locator's cache when it can."""
        name = destination.host

        def send(hops: list[Hop]) -> None:
            hop = hops[0]
            if len(self._resolved) > 10_000:
                self._resolved.clear()
            self._resolved[name.lower()] = hop.host
            tls_name = destination.server_name or (name if destination.transport == "tls" else None)
            self._transmit(data, destination._replace(host=hop.host, port=hop.port, server_name=tls_name))

        def failed(reason: str) -> None:
            log.info("cannot resolve {host}: {reason}", host=name, reason=reason)
            self._connection_failed(destination)

        try:
            result = self.locator.locate(name, destination.port, destination.transport, False)
        except LookupFailed as error:
            failed(error.reason)
            return
        if isinstance(result, list):
            send(result)
            return
        result.addCallbacks(send, lambda failure: failed(getattr(failure.value, "reason", failure.getErrorMessage())))
        result.addErrback(lambda failure: log.failure("sending to {host} failed", failure=failure, host=name))


class _SystemResolver:
    """/etc/hosts, then the servers of /etc/resolv.conf, made at the first query
    (twisted.names re-reads resolv.conf on a timer from the moment it exists)."""

    def __init__(self) -> None:
        self._resolver: Any = None

    def query(self, query: Any, timeout: Any = None) -> Any:
        if self._resolver is None:
            from twisted.names import client

            self._resolver = client.createResolver()
        return self._resolver.query(query, timeout)


def _destinations(hops: list[Hop], uri_host: str) -> list[Destination]:
    """Hops as the core's destinations; a TLS peer must prove the URI's host (RFC 5922)."""
    return [
        Destination(hop.transport, hop.host, hop.port, server_name=uri_host if hop.transport == "tls" else None)
        for hop in hops
    ]
