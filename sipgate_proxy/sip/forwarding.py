"""Preparing a request for its next hop (RFC 3261 16.6, 18.1.1).

A mixin of :class:`~sipgate_proxy.sip.proxy.ProxyCore`: Request-URI, Max-Forwards,
Record-Route, strict next hops, transport and interface choice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from ..routing.decisions import Target
from .errors import SIPError
from .message import Request, cached_name_addr
from .settings import CoreSettings, Interface, bare, is_ip, via_destination
from .transaction import Destination
from .uri import URI, parse_uri


class NextHop(NamedTuple):
    """Where a request goes next, before server location (RFC 3263 4).

    ``transport`` and ``port`` are None when the URI left them to DNS;
    ``secure``: a sips URI, which only TLS may carry (RFC 5630)."""

    host: str
    port: int | None
    transport: str | None
    secure: bool


#: the I/O layer's server location: a list of destinations now, or a
#: Deferred-like object firing with one (or failing with a reason)
Locate = Callable[[NextHop], Any]


def literal_hop(hop: NextHop) -> Destination:
    """The destination of a hop without lookups (an IP address or a pinned name)."""
    transport = hop.transport or ("tls" if hop.secure else "udp")
    port = hop.port or (5061 if transport == "tls" else 5060)
    return Destination(transport, hop.host, port, server_name=hop.host if transport == "tls" else None)


class Forwarding:
    settings: CoreSettings
    interfaces: list[Interface]
    _by_name: dict[str, Interface]
    locate: Locate | None

    def _prepare(self, request: Request, target: Target) -> NextHop:
        """Set R-URI and Max-Forwards, handle a strict next hop; where to (16.6 steps 1-7)."""
        if target.uri != request.uri_text:
            request.uri = parse_uri(target.uri)
        for name, value in target.headers:
            request.append(name.lower(), value)
        self._decrement_max_forwards(request)
        # strict next hop (16.6 step 6)
        first_route = request.get("route")
        hop_uri: URI
        if first_route is not None:
            route_values = request.values("route")
            hop = cached_name_addr(route_values[0]).uri
            if not hop.has_param("lr"):
                request.pop_first_value("route")
                request.append("route", f"<{request.uri_text}>")
                request.uri = hop
            hop_uri = hop
        elif target.next_hop is not None:
            hop_uri = parse_uri(target.next_hop)
        else:
            hop_uri = request.uri
        return self._next_hop(hop_uri, request)

    def _next_hop(self, uri: URI, request: Request) -> NextHop:
        if uri.scheme not in ("sip", "sips"):
            raise SIPError(416, f"Cannot route to a {uri.scheme} URI")
        transport = uri.transport
        # RFC 5630: a sips Request-URI is carried over TLS on every hop
        secure = uri.scheme == "sips" or request.uri.scheme == "sips"
        if secure or transport == "tls":
            if not self._has_transport("tls"):
                raise SIPError(503, "Service Unavailable (no TLS listener for a sips or TLS hop)")
            if secure:
                transport = "tls"
        elif transport is not None and transport not in ("udp", "tcp"):
            raise SIPError(503, f"Service Unavailable (transport {transport} not supported)")
        host = uri.param("maddr") or uri.host
        if not host:
            raise SIPError(400, "Next hop has no host")
        return NextHop(bare(host), uri.port, transport, secure)

    def _locate_hop(self, hop: NextHop) -> Any:
        """Destinations of ``hop`` in failover order: a list, or a Deferred of one."""
        if self.locate is None or is_ip(hop.host):
            return [literal_hop(hop)]
        return self.locate(hop)

    def _size_transport(self, dest: Destination, hop_transport: str | None, request: Request) -> Destination:
        """RFC 3261 18.1.1: a request too large for UDP goes over TCP unless the URI said UDP."""
        if dest.transport != "udp" or hop_transport is not None:
            return dest
        size = len(request.body) + sum(len(raw) + 2 for _, _, raw in request.headers) + 200
        if size > self.settings.udp_mtu and self._has_transport("tcp"):
            return dest._replace(transport="tcp")
        return dest

    def _record_route(self, request: Request, interface: Interface, incoming: Destination) -> None:
        """Record-Route with the interfaces in and out (16.6 step 4, RFC 5658 double)."""
        if not (self.settings.record_route and self._wants_record_route(request)):
            return
        secure = request.uri.scheme == "sips"
        inbound = self._by_name.get(incoming.local or "") if incoming.local else None
        if inbound is None or inbound is interface:
            request.insert_first("record-route", f"<{self._rr_uri(interface, False, secure)}>")
        else:
            request.insert_first("record-route", f"<{self._rr_uri(inbound, True, secure)}>")
            request.insert_first("record-route", f"<{self._rr_uri(interface, True, secure)}>")

    def _destination(self, uri: URI, request: Request) -> Destination:
        """The destination of ``uri`` without server location (our OPTIONS probes; the I/O
        layer resolves a name in it)."""
        return literal_hop(self._next_hop(uri, request))

    def _has_transport(self, transport: str) -> bool:
        return any(i.transport == transport for i in self.interfaces)

    def _interface_for(self, dest: Destination) -> Interface:
        ipv6 = ":" in dest.host
        fallback = None
        for interface in self.interfaces:
            if interface.transport == dest.transport:
                if interface.ipv6 == ipv6:
                    return interface
                fallback = fallback or interface
        if fallback is None:
            raise SIPError(503, f"Service Unavailable (no {dest.transport} listener)")
        return fallback

    def _rr_uri(self, interface: Interface, double: bool, secure: bool = False) -> str:
        params = ";lr"
        if secure and interface.transport == "tls":
            # a sips request records a sips URI (16.6 step 4)
            return f"sips:{interface.sent_by()}{params}{';r2=on' if double else ''}"
        if interface.transport != "udp":
            params = f";transport={interface.transport}{params}"
        if double:
            params += ";r2=on"
        return f"sip:{interface.sent_by()}{params}"

    @staticmethod
    def _wants_record_route(request: Request) -> bool:
        return request.method not in ("REGISTER", "CANCEL", "ACK") and request.to_tag is None

    @staticmethod
    def _decrement_max_forwards(request: Request) -> None:
        headers = request.headers
        for index, (name, value, _) in enumerate(headers):
            if name == "max-forwards":
                left = max(int(value) - 1, 0)
                headers[index] = ("max-forwards", str(left), f"Max-Forwards: {left}")
                return
        request.append("max-forwards", "70")

    def _response_destination(self, request: Request, source: Destination) -> Destination:
        if source.reliable:
            return source
        return via_destination(request.top_via, "udp")._replace(local=source.local)
