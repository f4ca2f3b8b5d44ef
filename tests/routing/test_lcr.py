"""The lcr router: longest prefix, priority, stopper, From and time conditions, cost and
weight ordering, per-gateway rewriting, the CSV rules file and validation of its table."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from zope.interface.verify import verifyObject

from sipgate_proxy.config import ConfigError, RouterTable, load_config
from sipgate_proxy.interfaces import IRouter, IRouterFactory
from sipgate_proxy.routing.decisions import Forward, Reject, RequestContext, Target
from sipgate_proxy.routing.lcr import LcrRouter, LcrRouterFactory, parse_lcr_config
from sipgate_proxy.routing.prefix import PrefixTable
from sipgate_proxy.sip.message import Request
from sipgate_proxy.sip.parser import parse_datagram

# Fixed instants (seconds since the epoch) and what they are in UTC.
MON_0900 = 1705309200  # Monday 2024-01-15 09:00 UTC
MON_1759 = 1705341540  # Monday 17:59
MON_1800 = 1705341600  # Monday 18:00
SAT_1200 = 1705147200  # Saturday 2024-01-13 12:00
FRI_2330 = 1705707000  # Friday 2024-01-19 23:30
SAT_0559 = 1705730340  # Saturday 2024-01-20 05:59
SAT_0600 = 1705730400  # Saturday 06:00
SAT_2330 = 1705793400  # Saturday 23:30
SUN_0200 = 1705802400  # Sunday 2024-01-21 02:00
BERLIN_WINTER_0830 = 1705303800  # Monday 2024-01-15 08:30 in Berlin (CET, 07:30 UTC)
BERLIN_SUMMER_0830 = 1721025000  # Monday 2024-07-15 08:30 in Berlin (CEST, 06:30 UTC)

GATEWAYS = [
    {"id": "gw1", "address": "192.0.2.1"},
    {"id": "gw2", "address": "192.0.2.2"},
    {"id": "gw3", "address": "192.0.2.3"},
    {"id": "gw4", "address": "192.0.2.4"},
]


def request(uri: str = "sip:+4930123456@example.com", from_user: str = "alice", to: str | None = None) -> Request:
    message = parse_datagram(
        (
            f"INVITE {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 192.0.2.5:5061;branch=z9hG4bKlcr1\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:{from_user}@example.com>;tag=a1\r\n"
            f"To: <{to or uri}>\r\n"
            f"Call-ID: lcr-1\r\n"
            f"CSeq: 1 INVITE\r\n"
            f"Content-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(message, Request)
    return message


def context(now: float = MON_0900) -> RequestContext:
    return RequestContext("udp", "192.0.2.5", 5061, now)


def router(*rules: dict[str, Any], rng: random.Random | None = None, **settings: Any) -> LcrRouter:
    config = {"gateways": settings.pop("gateways", GATEWAYS), "rules": list(rules), **settings}
    return LcrRouter(parse_lcr_config(config), rng)


def labels(
    r: LcrRouter, uri: str = "sip:+4930123456@example.com", now: float = MON_0900, **kwargs: Any
) -> list[str | None]:
    """The gateway ids the router picks, in order; [] when it passes on."""
    decision = r.route(request(uri, **kwargs), context(now))
    if decision is None:
        return []
    assert isinstance(decision, Forward)
    return [target.label for target in decision.targets]


def error(config: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_lcr_config(config)
    return info.value


def write_csv(tmp_path: Path, text: str, name: str = "lcr.csv") -> RouterTable:
    (tmp_path / name).write_text(text, encoding="utf-8")
    return RouterTable({"gateways": GATEWAYS, "rules_file": name}, str(tmp_path))


HEADER = "prefix,priority,gateways,from_user,cost\n"


# -- interfaces ----------------------------------------------------------------------


def test_router_and_factory_provide_their_interfaces() -> None:
    """The factory provides IRouterFactory under the name 'lcr' and makes routers that provide IRouter."""
    factory = LcrRouterFactory()
    assert verifyObject(IRouterFactory, factory)
    assert factory.name == "lcr"
    made = factory.make_router({"gateways": GATEWAYS, "rules": [{"prefix": "", "gateways": ["gw1"]}]}, None)
    assert verifyObject(IRouter, made)


# -- the decision --------------------------------------------------------------------


def test_decision_is_a_serial_forward_naming_the_gateways_in_the_request_uri() -> None:
    """Each target's Request-URI is sip:number@gateway:port;transport=..., with no next hop,
    labelled with the gateway id; the attrs name the rule and the prefix."""
    r = router({"prefix": "+49", "gateways": ["gw1", "gw2"]})
    decision = r.route(request(), context())
    assert decision == Forward(
        (
            Target("sip:+4930123456@192.0.2.1:5060;transport=udp", None, (), None, "gw1"),
            Target("sip:+4930123456@192.0.2.2:5060;transport=udp", None, (), None, "gw2"),
        ),
        "serial",
        {"lcr.rule": "rules[0]", "lcr.prefix": "+49"},
    )


def test_strip_prefix_port_transport_and_headers_apply_per_gateway() -> None:
    """Each gateway rewrites the number its own way (strip, then prefix) and carries its own
    port, transport and extra headers; an IPv6 address is bracketed."""
    gateways = [
        {"id": "de", "address": "gw.example.net", "port": 5080, "transport": "tcp", "strip": 3, "prefix": "0"},
        {"id": "v6", "address": "2001:db8::10", "transport": "tls", "headers": {"X-Carrier": "blue", "P-Tag": "7"}},
    ]
    r = router({"prefix": "+49", "gateways": ["de", "v6"]}, gateways=gateways)
    decision = r.route(request(), context())
    assert isinstance(decision, Forward)
    first, second = decision.targets
    assert first.uri == "sip:030123456@gw.example.net:5080;transport=tcp"
    assert first.headers == ()
    assert second.uri == "sip:+4930123456@[2001:db8::10]:5060;transport=tls"
    assert second.headers == (("X-Carrier", "blue"), ("P-Tag", "7"))
    assert all(target.next_hop is None for target in decision.targets)


def test_number_is_unescaped_for_matching_and_escaped_again_in_the_target() -> None:
    """A %-escaped user matches by its unescaped number, and the target URI escapes what needs it."""
    gateways = [{"id": "gw1", "address": "192.0.2.1", "prefix": "#"}]
    r = router({"prefix": "+49", "gateways": ["gw1"]}, gateways=gateways)
    decision = r.route(request("sip:%2B4930123@example.com"), context())
    assert isinstance(decision, Forward)
    assert decision.targets[0].uri == "sip:%23+4930123@192.0.2.1:5060;transport=udp"


def test_gateway_whose_user_would_be_empty_is_left_out() -> None:
    """A gateway that strips the whole number and adds nothing is skipped, not sent an empty user."""
    gateways = [{"id": "gw1", "address": "192.0.2.1", "strip": 20}, {"id": "gw2", "address": "192.0.2.2"}]
    r = router({"prefix": "", "gateways": ["gw1", "gw2"]}, gateways=gateways)
    assert labels(r) == ["gw2"]


def test_tel_request_uri_is_routed_by_its_number() -> None:
    """A tel: Request-URI's number is matched like a sip: user."""
    r = router({"prefix": "+49", "gateways": ["gw1"]})
    decision = r.route(request("tel:+4930123"), context())
    assert isinstance(decision, Forward)
    assert decision.targets[0].uri == "sip:+4930123@192.0.2.1:5060;transport=udp"


def test_match_on_to_uses_the_to_user() -> None:
    """With match_on = "to" the To user is the number that is matched and put into the targets."""
    r = router({"prefix": "+1", "gateways": ["gw1"]}, match_on="to")
    decision = r.route(request("sip:trunk@example.com", to="sip:+15551234@example.com"), context())
    assert isinstance(decision, Forward)
    assert decision.targets[0].uri == "sip:+15551234@192.0.2.1:5060;transport=udp"
    assert r.route(request("sip:+15551234@example.com", to="sip:trunk@example.com"), context()) is None


def test_request_without_user_part_passes_on() -> None:
    """A Request-URI with no user has no number: the router passes on even with a catch-all rule."""
    r = router({"prefix": "", "gateways": ["gw1"]}, no_route=[404, "No Route"])
    assert r.route(request("sip:example.com"), context()) is None


# -- selection -----------------------------------------------------------------------


def test_longest_matching_prefix_wins() -> None:
    """Of the prefixes of the number that have rules, the longest decides, wherever it is in the config."""
    r = router(
        {"prefix": "", "gateways": ["gw4"]},
        {"prefix": "+4930", "gateways": ["gw2"]},
        {"prefix": "+49", "gateways": ["gw1"]},
        {"prefix": "+493012345678", "gateways": ["gw3"]},
    )
    assert labels(r, "sip:+4930123456@example.com") == ["gw2"]
    assert labels(r, "sip:+4989123@example.com") == ["gw1"]
    assert labels(r, "sip:+33123@example.com") == ["gw4"]
    assert labels(r, "sip:+493012345678@example.com") == ["gw3"]


def test_number_matching_no_prefix_passes_on_or_gets_no_route_reject() -> None:
    """Without a matching rule the router returns None, or the configured no_route Reject."""
    assert labels(router({"prefix": "+49", "gateways": ["gw1"]}), "sip:+331234@example.com") == []
    r = router({"prefix": "+49", "gateways": ["gw1"]}, no_route=[404, "No Route"])
    assert r.route(request("sip:+331234@example.com"), context()) == Reject(404, "No Route")


def test_priority_orders_rules_of_one_prefix_and_their_gateways_are_joined() -> None:
    """Rules of the same prefix are taken by priority (lower first), then config order; all applicable
    rules contribute their gateways in that order, and the attrs list every rule used."""
    r = router(
        {"prefix": "+49", "priority": 5, "gateways": ["gw3"]},
        {"prefix": "+49", "priority": 1, "gateways": ["gw2"]},
        {"prefix": "+49", "priority": 5, "gateways": ["gw4"]},
        {"prefix": "+49", "gateways": ["gw1"]},
    )
    decision = r.route(request(), context())
    assert isinstance(decision, Forward)
    assert [t.label for t in decision.targets] == ["gw1", "gw2", "gw3", "gw4"]
    assert decision.attrs["lcr.rule"] == "rules[3],rules[1],rules[0],rules[2]"


def test_duplicate_gateways_keep_their_first_position() -> None:
    """A gateway named by several applicable rules is tried once, where it first appears."""
    r = router(
        {"prefix": "+49", "gateways": ["gw2", "gw1"]},
        {"prefix": "+49", "priority": 1, "gateways": ["gw1", "gw3", "gw2"]},
    )
    assert labels(r) == ["gw2", "gw1", "gw3"]


def test_max_targets_caps_the_list() -> None:
    """No more than max_targets gateways are returned (default 5)."""
    many = [{"id": f"g{i}", "address": f"192.0.2.{i + 1}"} for i in range(8)]
    ids = [g["id"] for g in many]
    assert len(labels(router({"prefix": "", "gateways": ids}, gateways=many))) == 5
    assert labels(router({"prefix": "", "gateways": ids}, gateways=many, max_targets=2)) == ["g0", "g1"]


def test_shorter_prefix_is_used_when_no_rule_of_the_longest_applies() -> None:
    """A longer prefix whose rules do not apply (From, time) falls back to the next shorter prefix."""
    r = router(
        {"prefix": "+4930", "from_user": "^vip", "gateways": ["gw2"]},
        {"prefix": "+49", "gateways": ["gw1"]},
    )
    assert labels(r, from_user="vip7") == ["gw2"]
    assert labels(r, from_user="alice") == ["gw1"]


def test_stopper_rule_ends_the_search_when_nothing_at_its_prefix_applies() -> None:
    """A stopper rule whose prefix matched but which does not apply means no route, not a shorter prefix."""
    r = router(
        {"prefix": "+49900", "from_user": "^premium", "stopper": True, "gateways": ["gw2"]},
        {"prefix": "+49", "gateways": ["gw1"]},
        no_route=[403, "Premium Numbers Barred"],
    )
    assert labels(r, "sip:+49900123@example.com", from_user="premium1") == ["gw2"]
    assert r.route(request("sip:+49900123@example.com"), context()) == Reject(403, "Premium Numbers Barred")
    assert labels(r, "sip:+4930123@example.com") == ["gw1"]


def test_stopper_does_not_block_other_applicable_rules_of_its_prefix() -> None:
    """When another rule of the stopper's prefix applies, its gateways are used."""
    r = router(
        {"prefix": "+4930", "from_user": "^x", "stopper": True, "gateways": ["gw2"]},
        {"prefix": "+4930", "gateways": ["gw3"]},
        {"prefix": "+49", "gateways": ["gw1"]},
    )
    assert labels(r) == ["gw3"]


def test_from_user_is_searched_not_anchored_and_unescaped() -> None:
    """from_user uses re.search on the %-unescaped From user."""
    r = router({"prefix": "", "from_user": "[+]49", "gateways": ["gw1"]})
    assert labels(r, from_user="0049") == []
    assert labels(r, from_user="x%2B49y") == ["gw1"]
    assert labels(r, from_user="+4930") == ["gw1"]


# -- time windows ----------------------------------------------------------------------


WEEKDAY_DAYTIME = {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "18:00"}


def test_time_window_matches_weekdays_and_hours_with_exclusive_end() -> None:
    """A window applies on its days from start (inclusive) to end (exclusive)."""
    r = router(
        {"prefix": "+49", "time": [WEEKDAY_DAYTIME], "gateways": ["gw1"]},
        {"prefix": "+49", "priority": 1, "gateways": ["gw2"]},
    )
    assert labels(r, now=MON_0900) == ["gw1", "gw2"]
    assert labels(r, now=MON_1759) == ["gw1", "gw2"]
    assert labels(r, now=MON_1800) == ["gw2"]
    assert labels(r, now=SAT_1200) == ["gw2"]


def test_time_window_wrapping_midnight_belongs_to_the_day_it_starts() -> None:
    """start > end wraps midnight: a Friday 22:00-06:00 window covers Friday night and Saturday morning."""
    r = router({"prefix": "", "time": [{"days": ["fri"], "start": "22:00", "end": "06:00"}], "gateways": ["gw1"]})
    assert labels(r, now=FRI_2330) == ["gw1"]
    assert labels(r, now=SAT_0559) == ["gw1"]
    assert labels(r, now=SAT_0600) == []
    assert labels(r, now=SAT_2330) == []
    assert labels(r, now=MON_0900) == []


def test_time_window_ending_at_24_00_and_several_windows() -> None:
    """end = "24:00" runs to midnight; a rule applies when any of its windows matches."""
    r = router(
        {
            "prefix": "",
            "time": [{"days": ["sat"], "start": "12:00", "end": "24:00"}, {"days": ["sun"]}],
            "gateways": ["gw1"],
        }
    )
    assert labels(r, now=SAT_1200) == ["gw1"]
    assert labels(r, now=SAT_2330) == ["gw1"]
    assert labels(r, now=SUN_0200) == ["gw1"]
    assert labels(r, now=SAT_0600) == []
    assert labels(r, now=MON_0900) == []


def test_time_window_is_evaluated_in_the_rules_timezone_with_daylight_saving() -> None:
    """Hours are local to the rule's timezone, in winter and in summer time; the default is UTC."""
    window = {"days": ["mon"], "start": "08:00", "end": "09:00"}
    berlin = router({"prefix": "", "time": [window], "timezone": "Europe/Berlin", "gateways": ["gw1"]})
    assert labels(berlin, now=BERLIN_WINTER_0830) == ["gw1"]
    assert labels(berlin, now=BERLIN_SUMMER_0830) == ["gw1"]
    assert labels(berlin, now=MON_0900) == []  # 10:00 in Berlin
    utc = router({"prefix": "", "time": [window], "gateways": ["gw1"]})
    assert labels(utc, now=BERLIN_WINTER_0830) == []  # 07:30 UTC
    assert labels(utc, now=MON_0900 - 1800) == ["gw1"]


# -- order within a rule -------------------------------------------------------------


def test_cost_orders_gateways_cheapest_first() -> None:
    """With cost given, a rule's gateways are tried by ascending cost; equal costs keep the listed order."""
    r = router(
        {
            "prefix": "+1",
            "gateways": ["gw1", "gw2", "gw3", "gw4"],
            "cost": {"gw1": 0.02, "gw2": 0.005, "gw3": 0.01, "gw4": 0.01},
        }
    )
    assert labels(r, "sip:+15551234@example.com") == ["gw2", "gw3", "gw4", "gw1"]


def test_weighted_gateways_are_drawn_in_proportion_to_their_weights() -> None:
    """Over 10,000 requests the first gateway is each one in about its share of the total weight,
    and every draw lists each gateway once."""
    r = router(
        {"prefix": "", "weighted_gateways": [{"id": "gw1", "weight": 70}, {"id": "gw2", "weight": 20}, {"id": "gw3"}]},
        rng=random.Random(1234),
        gateways=[*GATEWAYS[:2], {"id": "gw3", "address": "192.0.2.3", "weight": 10}],
    )
    first: Counter[str] = Counter()
    for _ in range(10_000):
        found = r.select("+4930123")
        assert found is not None
        assert sorted(g.id for g in found.gateways) == ["gw1", "gw2", "gw3"]
        first[found.gateways[0].id] += 1
    assert abs(first["gw1"] / 10_000 - 0.70) < 0.02
    assert abs(first["gw2"] / 10_000 - 0.20) < 0.02
    assert abs(first["gw3"] / 10_000 - 0.10) < 0.02  # the gateway's own weight is the default


def test_weight_zero_gateway_is_tried_last() -> None:
    """A weighted gateway with weight 0 is never drawn first; it stays as the last resort."""
    r = router(
        {"prefix": "", "weighted_gateways": [{"id": "gw1", "weight": 0}, {"id": "gw2"}, {"id": "gw3"}]},
        rng=random.Random(7),
    )
    orders = {tuple(labels(r)) for _ in range(200)}
    assert orders == {("gw2", "gw3", "gw1"), ("gw3", "gw2", "gw1")}


def test_cost_wins_over_weight_and_weight_breaks_cost_ties() -> None:
    """A weighted rule with costs goes by cost; gateways of equal cost are ordered by the weighted draw."""
    r = router(
        {
            "prefix": "",
            "weighted_gateways": [{"id": "gw1", "weight": 1}, {"id": "gw2", "weight": 1}, {"id": "gw3", "weight": 1}],
            "cost": {"gw1": 0.03, "gw2": 0.01, "gw3": 0.01},
        },
        rng=random.Random(99),
    )
    orders = Counter(tuple(labels(r)) for _ in range(400))
    assert set(orders) == {("gw2", "gw3", "gw1"), ("gw3", "gw2", "gw1")}
    assert min(orders.values()) > 120


# -- the rules file ------------------------------------------------------------------


def test_rules_file_is_loaded_relative_to_the_config_file(tmp_path: Path) -> None:
    """CSV rules route like TOML rules: '|' separated gateways, priority, from_user and costs;
    the label names the file and line."""
    table = write_csv(
        tmp_path,
        HEADER
        + "+49,0,gw1|gw2,,\n"
        + "\n"
        + "+4930,1,gw3,,\n"
        + "+4930,0,gw1|gw2|gw4,,gw1:0.03|gw2:0.01|gw4:0.02\n"
        + "+4989,,gw4,^vip,\n",
    )
    r = LcrRouterFactory().make_router(table, None)
    decision = r.route(request("sip:+4930123@example.com"), context())
    assert isinstance(decision, Forward)
    assert [t.label for t in decision.targets] == ["gw2", "gw4", "gw1", "gw3"]
    assert decision.attrs == {"lcr.rule": "lcr.csv:5,lcr.csv:4", "lcr.prefix": "+4930"}
    assert labels(r, "sip:+4989123@example.com", from_user="vip1") == ["gw4"]
    assert labels(r, "sip:+4989123@example.com") == ["gw1", "gw2"]


def test_toml_rules_come_before_rules_file_rules_of_equal_priority(tmp_path: Path) -> None:
    """Rules of the same prefix and priority are taken TOML first, then the file in line order."""
    table = write_csv(tmp_path, HEADER + "+49,0,gw2,,\n+49,0,gw3,,\n")
    table["rules"] = [{"prefix": "+49", "gateways": ["gw1"]}]
    r = LcrRouterFactory().make_router(table, None)
    assert labels(r) == ["gw1", "gw2", "gw3"]


def test_rules_file_accepts_spaces_around_fields_and_a_byte_order_mark(tmp_path: Path) -> None:
    """Fields are trimmed and a UTF-8 BOM before the header is ignored."""
    table = write_csv(tmp_path, "\ufeff" + HEADER + " +49 , 2 , gw1 | gw2 , , gw1:0.5 | gw2:0.1\n")
    assert labels(LcrRouterFactory().make_router(table, None)) == ["gw2", "gw1"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("prefix,gateways\n+49,gw1\n", "lcr.csv line 1: expected the header prefix,priority,gateways,from_user,cost"),
        ("", "lcr.csv line 1: expected the header"),
        (HEADER + "+49,0,gw1,,\n\n+49,0,gw1\n", "lcr.csv line 4: expected 5 fields"),
        (HEADER + "+49,0,gw1,,\n+1,0,gw9,,\n", "lcr.csv line 3: gateways: unknown gateway id 'gw9'"),
        (HEADER + "+49,0,,,\n", "lcr.csv line 2: gateways: expected gateway ids"),
        (HEADER + "+49,0,gw1|gw1,,\n", "lcr.csv line 2: gateways: gateway 'gw1' is listed twice"),
        (HEADER + "+49,high,gw1,,\n", "lcr.csv line 2: priority: expected an integer, got 'high'"),
        (HEADER + "+4 9,0,gw1,,\n", "lcr.csv line 2: prefix: expected digits"),
        (HEADER + "+49,0,gw1,(,\n", "lcr.csv line 2: from_user: not a valid regular expression"),
        (HEADER + "+49,0,gw1,,gw1=0.1\n", "lcr.csv line 2: cost: expected gateway:cost pairs"),
        (HEADER + "+49,0,gw1,,gw1:-1\n", "lcr.csv line 2: cost: expected gateway:cost pairs"),
        (HEADER + "+49,0,gw1|gw2,,gw1:0.1\n", "lcr.csv line 2: cost: no cost for gateway 'gw2'"),
        (HEADER + "+49,0,gw1,,gw1:0.1|gw3:0.2\n", "lcr.csv line 2: cost: gateway 'gw3' has a cost but is not"),
        (HEADER + '+49,0,"gw1\n', "lcr.csv line 2: unexpected end of data"),
        (HEADER + '+49,0,gw1,"^a\nb",\n+1,0,gw9,,\n', "lcr.csv line 4: gateways: unknown gateway id 'gw9'"),
    ],
)
def test_rules_file_errors_name_the_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    """A bad rules file stops the start with key routing.lcr.rules_file and 'FILE line N: what'."""
    table = write_csv(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        LcrRouterFactory().make_router(table, None)
    assert info.value.key == "routing.lcr.rules_file"
    assert info.value.message.startswith(message), info.value.message


def test_rules_file_that_cannot_be_read_or_decoded_is_a_config_error(tmp_path: Path) -> None:
    """A missing file, or one that is not UTF-8, names the file under routing.lcr.rules_file."""
    missing = RouterTable({"gateways": GATEWAYS, "rules_file": "nope.csv"}, str(tmp_path))
    assert error(missing).key == "routing.lcr.rules_file"
    assert error(missing).message.startswith("nope.csv: cannot read")
    lines = [b"+49,0,gw1,,\n"] * 3000 + [b"+49,0,gw1,\xff,\n"]
    (tmp_path / "bad.csv").write_bytes(HEADER.encode() + b"".join(lines))
    bad = RouterTable({"gateways": GATEWAYS, "rules_file": "bad.csv"}, str(tmp_path))
    assert error(bad).message == "bad.csv line 3002: not UTF-8 text"


# -- config errors ---------------------------------------------------------------------


def rule(**changes: Any) -> dict[str, Any]:
    return {"prefix": "+49", "gateways": ["gw1"], **changes}


def gateway(**changes: Any) -> dict[str, Any]:
    return {"id": "gwx", "address": "192.0.2.9", **changes}


@pytest.mark.parametrize(
    ("config", "key", "message"),
    [
        ({"gateway": []}, "routing.lcr.gateway", "unknown key"),
        ({"gateways": {}}, "routing.lcr.gateways", "expected a list"),
        ({"gateways": [gateway(), gateway()]}, "routing.lcr.gateways[1].id", "duplicate gateway id 'gwx'"),
        ({"gateways": [gateway(id="a b")]}, "routing.lcr.gateways[0].id", "required: a gateway id"),
        ({"gateways": [{"id": "g"}]}, "routing.lcr.gateways[0].address", "required"),
        ({"gateways": [gateway(address="bad host!")]}, "routing.lcr.gateways[0].address", "expected a host"),
        ({"gateways": [gateway(port=0)]}, "routing.lcr.gateways[0].port", "from 1 to 65535"),
        ({"gateways": [gateway(transport="sctp")]}, "routing.lcr.gateways[0].transport", "expected one of"),
        ({"gateways": [gateway(strip=-1)]}, "routing.lcr.gateways[0].strip", "expected an integer from 0"),
        ({"gateways": [gateway(prefix="0 ")]}, "routing.lcr.gateways[0].prefix", "expected digits"),
        ({"gateways": [gateway(weight=-3)]}, "routing.lcr.gateways[0].weight", "from 0"),
        ({"gateways": [gateway(weight=True)]}, "routing.lcr.gateways[0].weight", "expected an integer"),
        ({"gateways": [gateway(headers={"Via": "x"})]}, "routing.lcr.gateways[0].headers.Via", "the proxy manages"),
        ({"gateways": [gateway(headers={"X-A": "a\r\nB: c"})]}, "routing.lcr.gateways[0].headers.X-A", "line breaks"),
        ({"gateways": [gateway(headers={"X A": "a"})]}, "routing.lcr.gateways[0].headers.X A", "not a valid header"),
        ({"gateways": [gateway(color="red")]}, "routing.lcr.gateways[0].color", "unknown key"),
        ({"rules": {}}, "routing.lcr.rules", "expected a list"),
        ({"rules": ["x"]}, "routing.lcr.rules[0]", "expected a table"),
        ({"rules": [rule(), rule(gateways=["gw9"])]}, "routing.lcr.rules[1].gateways", "unknown gateway id 'gw9'"),
        ({"rules": [rule(gateways=[])]}, "routing.lcr.rules[0].gateways", "at least one"),
        ({"rules": [rule(gateways=["gw1", "gw1"])]}, "routing.lcr.rules[0].gateways", "listed twice"),
        ({"rules": [{"prefix": "+1"}]}, "routing.lcr.rules[0].gateways", "required"),
        ({"rules": [{"gateways": ["gw1"]}]}, "routing.lcr.rules[0].prefix", "required"),
        ({"rules": [rule(prefix=49)]}, "routing.lcr.rules[0].prefix", "expected digits"),
        ({"rules": [rule(priority="1")]}, "routing.lcr.rules[0].priority", "expected an integer"),
        ({"rules": [rule(stopper="yes")]}, "routing.lcr.rules[0].stopper", "true or false"),
        ({"rules": [rule(from_user="(")]}, "routing.lcr.rules[0].from_user", "regular expression"),
        ({"rules": [rule(timezone="Mars/Olympus")]}, "routing.lcr.rules[0].timezone", "unknown timezone"),
        ({"rules": [rule(timezone="../etc")]}, "routing.lcr.rules[0].timezone", "unknown timezone"),
        ({"rules": [rule(time=[])]}, "routing.lcr.rules[0].time", "expected a list of windows"),
        ({"rules": [rule(time=[{"days": ["moon"]}])]}, "routing.lcr.rules[0].time[0].days", "unknown day 'moon'"),
        ({"rules": [rule(time=[{"days": []}])]}, "routing.lcr.rules[0].time[0].days", "expected a list of days"),
        ({"rules": [rule(time=[{"start": "8:00"}])]}, "routing.lcr.rules[0].time[0].start", "HH:MM"),
        ({"rules": [rule(time=[{"start": "24:00"}])]}, "routing.lcr.rules[0].time[0].start", "00:00 to 23:59"),
        ({"rules": [rule(time=[{"end": "18:60"}])]}, "routing.lcr.rules[0].time[0].end", "00:00 to 24:00"),
        ({"rules": [rule(time=[{"start": "08:00", "end": "08:00"}])]}, "routing.lcr.rules[0].time[0].end", "empty"),
        ({"rules": [rule(time=[{"from": "08:00"}])]}, "routing.lcr.rules[0].time[0].from", "unknown key"),
        ({"rules": [rule(weighted_gateways=[])]}, "routing.lcr.rules[0].weighted_gateways", "not both"),
        (
            {"rules": [{"prefix": "", "weighted_gateways": [{"id": "gw1", "weight": -1}]}]},
            "routing.lcr.rules[0].weighted_gateways[0].weight",
            "from 0",
        ),
        (
            {"rules": [{"prefix": "", "weighted_gateways": [{"id": "nope"}]}]},
            "routing.lcr.rules[0].weighted_gateways[0].id",
            "unknown gateway id 'nope'",
        ),
        (
            {"rules": [{"prefix": "", "weighted_gateways": [{"id": "gw1", "share": 1}]}]},
            "routing.lcr.rules[0].weighted_gateways[0].share",
            "unknown key",
        ),
        ({"rules": [rule(cost={"gw1": -0.1})]}, "routing.lcr.rules[0].cost.gw1", "expected a cost"),
        ({"rules": [rule(cost={"gw1": "cheap"})]}, "routing.lcr.rules[0].cost.gw1", "expected a cost"),
        ({"rules": [rule(cost={"gw1": 1, "gw2": 2})]}, "routing.lcr.rules[0].cost", "not one of this rule's"),
        ({"rules": [rule(gateways=["gw1", "gw2"], cost={"gw1": 1})]}, "routing.lcr.rules[0].cost", "no cost for"),
        ({"rules": [rule(color="red")]}, "routing.lcr.rules[0].color", "unknown key"),
        ({"rules_file": 7}, "routing.lcr.rules_file", "expected a string"),
        ({"rules_file": ""}, "routing.lcr.rules_file", "expected the path"),
        ({"match_on": "from"}, "routing.lcr.match_on", "expected one of ruri, to"),
        ({"max_targets": 0}, "routing.lcr.max_targets", "from 1 to 100"),
        ({"no_route": 404}, "routing.lcr.no_route", "expected [status"),
        ({"no_route": [200, "OK"]}, "routing.lcr.no_route", "from 400 to 699"),
        ({"no_route": [404, ""]}, "routing.lcr.no_route", "reason phrase"),
    ],
)
def test_config_errors_name_their_key(config: dict[str, Any], key: str, message: str) -> None:
    """Every wrong value in [routing.lcr] is a ConfigError naming the key inside the table and what is expected."""
    config = {"gateways": GATEWAYS, **config}
    raised = error(config)
    assert raised.key == key
    assert message in raised.message, raised.message


def test_empty_table_builds_a_router_that_passes_everything_on() -> None:
    """With no gateways and no rules the router is valid and routes nothing."""
    r = LcrRouterFactory().make_router({}, None)
    assert r.route(request(), context()) is None


# -- the prefix table ------------------------------------------------------------------


def test_prefix_table_yields_matches_longest_first_and_sorts_on_freeze() -> None:
    """matches() walks from the longest prefix present down to the empty one; freeze sorts shared entries."""
    table: PrefixTable[int] = PrefixTable()
    for prefix, value in [("49", 3), ("", 0), ("4930", 1), ("49", 2)]:
        table.add(prefix, value)
    table.freeze(key=lambda value: value)
    assert list(table.matches("4930123")) == [("4930", (1,)), ("49", (2, 3)), ("", (0,))]
    assert list(table.matches("33")) == [("", (0,))]
    assert table.get("49") == (2, 3)
    assert table.get("5") == ()
    assert len(table) == 3
    assert table.longest == 4
    with pytest.raises(RuntimeError):
        table.add("1", 9)


# -- the shipped example ---------------------------------------------------------------


def test_example_config_loads_and_routes_as_its_comments_say() -> None:
    """etc/lcr-example.toml is a valid config whose rules route as described in it."""
    config = load_config(str(Path(__file__).parents[2] / "etc" / "lcr-example.toml"))
    assert config.routing.routers == ("lcr",)
    r = LcrRouterFactory().make_router(config.routing.tables["lcr"], None)
    daytime = r.route(request("sip:+4930123@example.com"), context(MON_0900))  # 10:00 in Berlin
    assert isinstance(daytime, Forward)
    assert [t.uri for t in daytime.targets] == [
        "sip:030123@192.0.2.10:5060;transport=udp",
        "sip:+4930123@trunk.carrier.example:5061;transport=tls",
    ]
    assert daytime.targets[0].headers == (("X-Carrier-Account", "acme-4711"),)
    assert labels(r, "sip:+4930123@example.com", now=MON_1800) == ["gw2"]  # 19:00 in Berlin
    assert labels(r, "sip:+4930123@example.com", now=SAT_1200) == ["gw2"]
    assert labels(r, "sip:+15551234@example.com") == ["gw2", "gw1"]
    assert labels(r, "sip:+18005551234@example.com", from_user="tollfree-7") == ["gw1", "gw2"]
    assert labels(r, "sip:+49900123@example.com", from_user="9001") == ["gw1"]
    assert r.route(request("sip:+49900123@example.com"), context()) == Reject(404, "No Route")
    assert sorted(labels(r, "sip:+33123@example.com")) == ["gw1", "gw2"]
