"""The static router: Request-URI patterns to fixed next hops, and validation of its table."""

from __future__ import annotations

from typing import Any

import pytest

from sipgate_proxy.config import ConfigError
from sipgate_proxy.routing.decisions import Forward, RequestContext, Target
from sipgate_proxy.routing.static import StaticRouter, StaticRouterFactory, parse_static_config
from sipgate_proxy.sip.message import Request
from sipgate_proxy.sip.parser import parse_datagram


def request(uri: str) -> Request:
    message = parse_datagram(
        (
            f"INVITE {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 192.0.2.5:5061;branch=z9hG4bKs1\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:alice@example.com>;tag=a1\r\n"
            f"To: <{uri}>\r\n"
            f"Call-ID: static-1\r\n"
            f"CSeq: 1 INVITE\r\n"
            f"Content-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(message, Request)
    return message


def context() -> RequestContext:
    return RequestContext("udp", "192.0.2.5", 5061, 0.0)


def router(*routes: dict[str, Any]) -> StaticRouter:
    return StaticRouterFactory().make_router({"routes": list(routes)}, None)


def error(table: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_static_config(table)
    return info.value


# -- routing -----------------------------------------------------------------------


def test_matching_route_forwards_to_its_next_hop_keeping_the_uri() -> None:
    """A route whose pattern is found in the Request-URI forwards to its next hop; the URI is unchanged."""
    r = router({"match": "@example\\.com", "next_hop": "sip:192.0.2.20:5070"})
    decision = r.route(request("sip:bob@example.com"), context())
    assert decision == Forward((Target("sip:bob@example.com", "sip:192.0.2.20:5070"),))


def test_pattern_is_searched_not_anchored() -> None:
    """Patterns use re.search: a fragment in the middle of the URI matches; ^ anchors when wanted."""
    r = router({"match": "bob", "next_hop": "sip:192.0.2.20"})
    assert r.route(request("sip:bob@example.com"), context()) is not None
    anchored = router({"match": "^bob", "next_hop": "sip:192.0.2.20"})
    assert anchored.route(request("sip:bob@example.com"), context()) is None


def test_first_matching_route_wins() -> None:
    """When several routes match, the first in the table decides."""
    r = router(
        {"match": "^sip:\\+49", "next_hop": "sip:192.0.2.1"},
        {"match": "^sip:\\+4930", "next_hop": "sip:192.0.2.2"},
        {"match": ".", "next_hop": "sip:192.0.2.3"},
    )
    decision = r.route(request("sip:+49301234@example.com"), context())
    assert isinstance(decision, Forward)
    assert decision.targets[0].next_hop == "sip:192.0.2.1"
    decision = r.route(request("sip:+33123@example.com"), context())
    assert isinstance(decision, Forward)
    assert decision.targets[0].next_hop == "sip:192.0.2.3"


def test_rewrite_expands_groups_into_the_new_request_uri() -> None:
    """A rewrite template expands the match's groups (numbered and named) into the target URI."""
    r = router(
        {
            "match": "^sip:0(?P<rest>\\d+)@(.*)$",
            "rewrite": "sip:+49\\g<rest>@\\2;user=phone",
            "next_hop": "sip:gw.example.net;transport=tcp",
        }
    )
    decision = r.route(request("sip:301234@carrier.example"), context())
    assert decision is None
    decision = r.route(request("sip:0301234@carrier.example"), context())
    target = Target("sip:+49301234@carrier.example;user=phone", "sip:gw.example.net;transport=tcp")
    assert decision == Forward((target,))


def test_no_match_passes_on() -> None:
    """A Request-URI that matches no route gives None, so the next router is asked."""
    r = router({"match": "^sip:bob@", "next_hop": "sip:192.0.2.20"})
    assert r.route(request("sip:carol@example.com"), context()) is None
    assert StaticRouter(()).route(request("sip:carol@example.com"), context()) is None


def test_factory_is_named_static_and_accepts_an_empty_table() -> None:
    """The factory's config name is 'static'; an empty table makes a router with no routes."""
    factory = StaticRouterFactory()
    assert factory.name == "static"
    assert factory.make_router({}, None).routes == ()


# -- validation ------------------------------------------------------------------


def test_bad_regex_names_the_match_key() -> None:
    """A pattern that does not compile is an error at routes[i].match saying it is not a regular expression."""
    e = error({"routes": [{"match": "ok", "next_hop": "sip:192.0.2.1"}, {"match": "(", "next_hop": "sip:192.0.2.1"}]})
    assert e.key == "routing.static.routes[1].match"
    assert "regular expression" in e.message


def test_missing_next_hop_names_the_key() -> None:
    """A route without next_hop is an error at routes[i].next_hop."""
    e = error({"routes": [{"match": "x"}]})
    assert e.key == "routing.static.routes[0].next_hop"
    assert "SIP URI" in e.message


def test_missing_match_names_the_key() -> None:
    """A route without match is an error at routes[i].match."""
    e = error({"routes": [{"next_hop": "sip:192.0.2.1"}]})
    assert e.key == "routing.static.routes[0].match"


@pytest.mark.parametrize("hop", ["tel:+4930123", "mailto:bob@example.com", "http://gw.example.net/"])
def test_non_sip_next_hop_is_refused(hop: str) -> None:
    """A next hop that is not a sip: or sips: URI is an error at routes[i].next_hop."""
    e = error({"routes": [{"match": "x", "next_hop": hop}]})
    assert e.key == "routing.static.routes[0].next_hop"


def test_unparsable_next_hop_is_refused() -> None:
    """A next hop that is not a URI at all is an error at routes[i].next_hop."""
    e = error({"routes": [{"match": "x", "next_hop": "sip:"}]})
    assert e.key == "routing.static.routes[0].next_hop"


def test_unknown_key_in_a_route_names_it() -> None:
    """An unknown key inside a route is reported with its own name."""
    e = error({"routes": [{"match": "x", "next_hop": "sip:192.0.2.1", "nexthop": "y"}]})
    assert e.key == "routing.static.routes[0].nexthop"
    assert e.message == "unknown key"


def test_unknown_key_in_the_table_names_it() -> None:
    """An unknown key at the top of [routing.static] is reported with its name."""
    e = error({"route": []})
    assert e.key == "routing.static.route"
    assert e.message == "unknown key"


def test_unknown_transport_is_refused() -> None:
    """A next hop with transport=sctp (or any other we do not speak) is an error naming the transport."""
    e = error({"routes": [{"match": "x", "next_hop": "sip:192.0.2.1;transport=sctp"}]})
    assert e.key == "routing.static.routes[0].next_hop"
    assert "sctp" in e.message


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"routes": {"match": "x"}}, "routing.static.routes"),
        ({"routes": ["sip:192.0.2.1"]}, "routing.static.routes[0]"),
        ({"routes": [{"match": 5, "next_hop": "sip:192.0.2.1"}]}, "routing.static.routes[0].match"),
        ({"routes": [{"match": "x", "next_hop": "sip:192.0.2.1", "rewrite": 1}]}, "routing.static.routes[0].rewrite"),
    ],
)
def test_wrong_types_name_the_key(table: dict[str, Any], key: str) -> None:
    """Values of the wrong type (routes not a list, a route not a table, non-string match/rewrite) name the key."""
    assert error(table).key == key


@pytest.mark.parametrize("rewrite", ["sip:\\3@x", "sip:\\g<number>@x", "sip:x\\"])
def test_rewrite_with_a_bad_group_reference_is_refused_at_start(rewrite: str) -> None:
    """A rewrite naming a group the pattern lacks (or ending in a lone backslash) is a config error, not a 500 later."""
    e = error({"routes": [{"match": "^sip:(\\d+)@", "next_hop": "sip:192.0.2.1", "rewrite": rewrite}]})
    assert e.key == "routing.static.routes[0].rewrite"


def test_factory_validates_through_parse_static_config() -> None:
    """make_router raises the same ConfigError as parse_static_config for a bad table."""
    with pytest.raises(ConfigError) as info:
        StaticRouterFactory().make_router({"routes": [{"match": "x"}]}, None)
    assert info.value.key == "routing.static.routes[0].next_hop"


@pytest.mark.parametrize("hop", ["sip:192.0.2.1", "sips:gw.example.net", "sip:[2001:db8::1]:5070;transport=tcp"])
def test_valid_next_hops_are_accepted(hop: str) -> None:
    """sip: and sips: next hops with a host (IPv4, name, IPv6 reference) and a known transport are accepted."""
    routes = parse_static_config({"routes": [{"match": "x", "next_hop": hop}]})
    assert routes[0].next_hop == hop
