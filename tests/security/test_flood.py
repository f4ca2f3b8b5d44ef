"""Flood limits (pike-style) and trusted peers."""

from __future__ import annotations

import ipaddress

import pytest

from sipgate_proxy.config import ConfigError, parse_config
from sipgate_proxy.security.flood import FloodGuard, FloodSettings
from sipgate_proxy.security.peers import TrustedPeer, TrustedPeers


def test_source_over_the_limit_is_banned_for_the_ban_period() -> None:
    """limit requests per window pass; one more bans the source, which is dropped until the ban ends."""
    guard = FloodGuard(FloodSettings(limit=3, window=1.0, ban=10.0))
    assert [guard.allow("192.0.2.1", 100.0 + i * 0.1) for i in range(4)] == [True, True, True, False]
    assert guard.allow("192.0.2.1", 105.0) is False  # still banned
    assert guard.allow("192.0.2.2", 105.0) is True  # others are not affected
    assert guard.banned(105.0) == ["192.0.2.1"]
    assert guard.allow("192.0.2.1", 110.5) is True  # the ban is over
    assert guard.dropped == 2


def test_counts_start_again_each_window() -> None:
    """A steady source below the limit per window is never banned."""
    guard = FloodGuard(FloodSettings(limit=2, window=1.0, ban=10.0))
    assert all(guard.allow("192.0.2.1", 100.0 + i * 0.6) for i in range(20))


def test_trusted_peers_match_network_port_and_transport() -> None:
    """The first peer whose network, port and transport match gives its tag."""
    peers = TrustedPeers(
        [
            TrustedPeer(ipaddress.ip_network("192.0.2.0/24"), "carrier-a", port=5060, transport="udp"),
            TrustedPeer(ipaddress.ip_network("198.51.100.0/24"), "own"),
        ]
    )
    assert peers.tag("udp", "192.0.2.9", 5060) == "carrier-a"
    assert peers.tag("tcp", "192.0.2.9", 5060) is None
    assert peers.tag("udp", "192.0.2.9", 5061) is None
    assert peers.tag("tcp", "198.51.100.4", 40000) == "own"
    assert peers.trusts_host("192.0.2.200") and not peers.trusts_host("203.0.113.1")


def test_security_config_is_validated() -> None:
    """[security] and [[trusted]] errors name their keys."""
    config = parse_config({"security": {"flood_limit": 50}, "trusted": [{"cidr": "10.0.0.0/8", "tag": "core"}]})
    assert config.security.flood.limit == 50 and config.security.trusted[0].tag == "core"
    for data, key in [
        ({"security": {"flood_limit": -1}}, "security.flood_limit"),
        ({"trusted": [{"cidr": "not-a-net"}]}, "trusted[0].cidr"),
        ({"trusted": [{"tag": "x"}]}, "trusted[0].cidr"),
        ({"trusted": [{"cidr": "10.0.0.0/8", "colour": 1}]}, "trusted[0].colour"),
    ]:
        with pytest.raises(ConfigError) as error:
            parse_config(data, "p.toml")
        assert error.value.key == key
