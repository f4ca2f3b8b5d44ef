"""What the proxy core is configured with, and address helpers it shares."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..routing.decisions import RequestContext
from ..security.admission import AdmissionSettings
from ..security.peers import TrustedPeers
from .headers import Via
from .message import Request
from .parser import DEFAULT_LIMITS, ParseLimits
from .transaction import Destination, TimerValues

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, SUBSCRIBE, NOTIFY, REFER, MESSAGE, PRACK, UPDATE, INFO, PUBLISH"
DEFAULT_FAILOVER = frozenset({408, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Interface:
    """A listening socket as the core sees it."""

    name: str
    transport: str
    host: str
    port: int
    advertise: str
    advertise_port: int

    @property
    def ipv6(self) -> bool:
        return ":" in self.host

    def sent_by(self) -> str:
        host = f"[{self.advertise}]" if ":" in self.advertise else self.advertise
        return f"{host}:{self.advertise_port}"


@dataclass(frozen=True, slots=True)
class CoreSettings:
    domains: tuple[str, ...] = ()
    record_route: bool = True
    server: str = "sipgate-proxy"
    timer_c: float = 180.0
    udp_mtu: int = 1300
    failover: frozenset[int] = DEFAULT_FAILOVER
    limits: ParseLimits = DEFAULT_LIMITS
    timers: TimerValues = field(default_factory=TimerValues)
    max_transactions: int = 200_000
    #: recurse on 3xx: try the Contacts of a redirect (16.7 step 4)
    follow_redirects: bool = False
    max_redirects: int = 3
    #: provider trunks and own servers: their requests carry attrs["trusted"]
    trusted: TrustedPeers = field(default_factory=TrustedPeers)
    admission: AdmissionSettings = field(default_factory=AdmissionSettings)


class Router(Protocol):
    """What the core asks where a request goes (the routing chain)."""

    def route(self, request: Request, context: RequestContext) -> Any: ...


def bare(host: str) -> str:
    return host[1:-1] if host.startswith("[") else host


_ip_memo: dict[str, bool] = {}


def is_ip(host: str) -> bool:
    """Whether ``host`` (without brackets) is an IP literal (memoised: the same peers recur)."""
    known = _ip_memo.get(host)
    if known is None:
        try:
            ipaddress.ip_address(host)
            known = True
        except ValueError:
            known = False
        if len(_ip_memo) >= 65536:
            _ip_memo.clear()
        _ip_memo[host] = known
    return known


def undeliverable(host: str) -> bool:
    """Broadcast, multicast and unspecified addresses never get a response."""
    try:
        address = ipaddress.ip_address(bare(host))
    except ValueError:
        return False
    if address.is_multicast or address.is_unspecified:
        return True
    return address.version == 4 and address == ipaddress.IPv4Address("255.255.255.255")


def via_destination(via: Via, transport: str | None = None) -> Destination:
    """Where a response for ``via`` goes when no connection is known (18.2.2)."""
    host = via.received or via.host
    rport = via.rport
    if rport:
        port = int(rport)
    else:
        port = via.port or (5061 if via.transport == "TLS" else 5060)
    return Destination(transport or via.transport.lower(), bare(host), port)
