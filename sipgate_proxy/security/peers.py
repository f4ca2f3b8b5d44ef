"""Trusted peers: provider trunks and own servers that skip digest checks.

A peer is a network (CIDR), optionally a port and a transport, and a tag that
routers read from ``context.attrs["trusted"]`` (for example which carrier a
call came from). The first matching peer wins.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class TrustedPeer:
    network: Network
    tag: str
    port: int | None = None
    transport: str | None = None

    def matches(self, transport: str, host: str, port: int) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if address not in self.network:
            return False
        if self.port is not None and port != self.port:
            return False
        return self.transport is None or transport == self.transport


class TrustedPeers:
    """Looks up the tag of the peer a message came from (memoised per source)."""

    def __init__(self, peers: Iterable[TrustedPeer] = ()) -> None:
        self.peers = tuple(peers)
        self._memo: dict[tuple[str, str, int], str | None] = {}

    def __bool__(self) -> bool:
        return bool(self.peers)

    def tag(self, transport: str, host: str, port: int) -> str | None:
        key = (transport, host, port)
        memo = self._memo
        if key in memo:
            return memo[key]
        found = next((peer.tag for peer in self.peers if peer.matches(transport, host, port)), None)
        if len(memo) >= 65536:
            memo.clear()
        memo[key] = found
        return found

    def trusts_host(self, host: str) -> bool:
        """Whether any peer covers ``host`` at all (flood limits exempt it)."""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in peer.network for peer in self.peers)
