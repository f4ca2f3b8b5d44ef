"""Preparing a request for its next hop (RFC 3261 16.6, 18.1.1).

A mixin of :class:`~sipgate_proxy.sip.proxy.ProxyCore`: Request-URI, Max-Forwards,
Record-Route, strict next hops, transport and interface choice.
"""

from __future__ import annotations

from ..routing.decisions import Target
from .errors import SIPError
from .message import Request, cached_name_addr
from .settings import CoreSettings, Interface, bare, via_destination
from .transaction import Destination
from .uri import URI, parse_uri


class Forwarding:
    settings: CoreSettings
    interfaces: list[Interface]
    _by_name: dict[str, Interface]

    def _prepare(self, request: Request, target: Target, incoming: Destination) -> tuple[Destination, Interface]:
        """Set R-URI, Max-Forwards, Record-Route; pick the next hop (16.6)."""
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
        dest = self._destination(hop_uri, request)
        interface = self._interface_for(dest)
        if self.settings.record_route and self._wants_record_route(request):
            inbound = self._by_name.get(incoming.local or "") if incoming.local else None
            if inbound is None or inbound is interface:
                request.insert_first("record-route", f"<{self._rr_uri(interface, False)}>")
            else:
                request.insert_first("record-route", f"<{self._rr_uri(inbound, True)}>")
                request.insert_first("record-route", f"<{self._rr_uri(interface, True)}>")
        return dest._replace(local=interface.name), interface

    def _destination(self, uri: URI, request: Request) -> Destination:
        if uri.scheme not in ("sip", "sips"):
            raise SIPError(416, f"Cannot route to a {uri.scheme} URI")
        transport = uri.transport
        if uri.scheme == "sips" or transport == "tls":
            raise SIPError(503, "Service Unavailable (no TLS transport for a sips or TLS hop)")
        if transport is None:
            transport = "udp"
            size = len(request.body) + sum(len(raw) + 2 for _, _, raw in request.headers) + 200
            if size > self.settings.udp_mtu and any(i.transport == "tcp" for i in self.interfaces):
                # RFC 3261 18.1.1: too large for UDP, go congestion controlled
                transport = "tcp"
        elif transport not in ("udp", "tcp"):
            raise SIPError(503, f"Service Unavailable (transport {transport} not supported)")
        host = uri.param("maddr") or uri.host
        if not host:
            raise SIPError(400, "Next hop has no host")
        port = uri.port or 5060
        return Destination(transport, bare(host), port)

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

    def _rr_uri(self, interface: Interface, double: bool) -> str:
        params = ";lr"
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
