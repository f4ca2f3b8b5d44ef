"""The dialplan router: matching, translation, plans, decisions, the example config and validation."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from zope.interface.verify import verifyObject

from sipgate_proxy.config import ConfigError, RouterTable, parse_config
from sipgate_proxy.interfaces import IRouter, IRouterFactory
from sipgate_proxy.routing.decisions import Forward, Reject, RequestContext, Target
from sipgate_proxy.routing.dialplan import DialplanRouter, DialplanRouterFactory, parse_dialplan_config
from sipgate_proxy.sip.message import Request
from sipgate_proxy.sip.parser import parse_datagram

EXAMPLE = Path(__file__).resolve().parents[2] / "etc" / "dialplan-example.toml"


def request(uri: str, from_uri: str = "sip:alice@example.com", to_uri: str | None = None) -> Request:
    message = parse_datagram(
        (
            f"INVITE {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 192.0.2.5:5061;branch=z9hG4bKd1\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <{from_uri}>;tag=a1\r\n"
            f"To: <{to_uri or uri}>\r\n"
            f"Call-ID: dialplan-1\r\n"
            f"CSeq: 1 INVITE\r\n"
            f"Content-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(message, Request)
    return message


def context(**attrs: str) -> RequestContext:
    return RequestContext("udp", "127.0.0.1", 5060, 0.0, attrs=dict(attrs))


def router(*rules: dict[str, Any], **settings: Any) -> DialplanRouter:
    return DialplanRouterFactory().make_router({"rules": list(rules), **settings}, None)


def run(r: DialplanRouter, uri: str, **attrs: str) -> tuple[Forward | Reject | None, Request, RequestContext]:
    req, ctx = request(uri), context(**attrs)
    return r.route(req, ctx), req, ctx


def error(table: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_dialplan_config(table)
    return info.value


# -- interfaces ----------------------------------------------------------------------


def test_router_and_factory_provide_their_interfaces() -> None:
    """DialplanRouter provides IRouter; its factory provides IRouterFactory and is named 'dialplan'."""
    factory = DialplanRouterFactory()
    assert verifyObject(IRouterFactory, factory)
    assert factory.name == "dialplan"
    assert verifyObject(IRouter, factory.make_router({}, None))


def test_empty_table_makes_a_router_that_passes_everything_on() -> None:
    """With no rules every request passes on unchanged."""
    decision, req, ctx = run(router(), "sip:0301234567@example.com")
    assert decision is None
    assert req.uri_text == "sip:0301234567@example.com"
    assert ctx.attrs == {}


# -- match types ---------------------------------------------------------------------


def test_equal_matches_the_whole_user_only() -> None:
    """An equal rule matches a user identical to it, not one that merely starts with it."""
    r = router({"match_type": "equal", "match": "112", "prefix": "x"})
    decision, req, _ = run(r, "sip:112@example.com")
    assert decision is None
    assert req.uri_text == "sip:x112@example.com"
    _, req, ctx = run(r, "sip:1120@example.com")
    assert req.uri_text == "sip:1120@example.com"
    assert ctx.attrs == {}


def test_prefix_matches_the_beginning_of_the_user() -> None:
    """A prefix rule matches users starting with it and no others; strip and prefix then rewrite the user."""
    r = router({"match_type": "prefix", "match": "00", "strip": 2, "prefix": "+"})
    _, req, _ = run(r, "sip:00442071234@example.com")
    assert req.uri_text == "sip:+442071234@example.com"
    _, req, _ = run(r, "sip:0301234567@example.com")
    assert req.uri_text == "sip:0301234567@example.com"


def test_regex_is_searched_not_anchored() -> None:
    """Regex rules use re.search: a pattern found inside the user matches; ^ and $ anchor it."""
    loose = router({"match": "555", "attrs": "found"})
    _, _, ctx = run(loose, "sip:+4930555123@example.com")
    assert ctx.attrs["dialplan.attrs"] == "found"
    anchored = router({"match": "^555", "attrs": "found"})
    _, _, ctx = run(anchored, "sip:+4930555123@example.com")
    assert ctx.attrs == {}


def test_regex_is_the_default_match_type() -> None:
    """A rule without match_type treats match as a regular expression."""
    r = router({"match": "^[0-9]{3}$", "prefix": "+4930555"})
    _, req, _ = run(r, "sip:123@example.com")
    assert req.uri_text == "sip:+4930555123@example.com"


def test_prefix_and_equal_match_literally() -> None:
    """Equal and prefix rules compare plain strings: regex characters in them have no special meaning."""
    r = router(
        {"match_type": "prefix", "match": "+49", "attrs": "prefix"},
        {"match_type": "equal", "match": "1.3", "attrs": "equal"},
    )
    assert run(r, "sip:+4930@example.com")[2].attrs["dialplan.attrs"] == "prefix"
    assert run(r, "sip:4930@example.com")[2].attrs == {}
    assert run(r, "sip:1.3@example.com")[2].attrs["dialplan.attrs"] == "equal"
    assert run(r, "sip:123@example.com")[2].attrs == {}


# -- priority --------------------------------------------------------------------------


def test_lower_priority_value_wins_over_config_order() -> None:
    """When several rules match, the one with the lowest priority applies, wherever it is in the config."""
    r = router(
        {"match": "^0", "priority": 20, "attrs": "late"},
        {"match": "^030", "priority": 10, "attrs": "early"},
    )
    _, _, ctx = run(r, "sip:0301234@example.com")
    assert ctx.attrs["dialplan.attrs"] == "early"
    assert ctx.attrs["dialplan.rule"] == "1:1"


def test_equal_priority_keeps_config_order() -> None:
    """Rules of the same priority are tried in config order; only the first match applies (no chaining)."""
    r = router(
        {"match": "^0", "prefix": "A", "attrs": "first"},
        {"match": "^0", "prefix": "B", "attrs": "second"},
    )
    _, req, ctx = run(r, "sip:030@example.com")
    assert req.uri.user == "A030"
    assert ctx.attrs["dialplan.attrs"] == "first"


def test_priority_order_holds_across_match_types() -> None:
    """The indexes for equal and prefix rules never change the outcome: the first match in priority order wins,
    not the longest prefix nor an exact match ranked later."""
    r = router(
        {"match_type": "prefix", "match": "+4930", "priority": 5, "attrs": "short-prefix"},
        {"match_type": "prefix", "match": "+4930555", "priority": 7, "attrs": "long-prefix"},
        {"match_type": "equal", "match": "+4930555123", "priority": 9, "attrs": "equal"},
        {"match": "^\\+49", "priority": 3, "attrs": "regex"},
    )
    assert run(r, "sip:+4930555123@example.com")[2].attrs["dialplan.attrs"] == "regex"
    r = router(
        {"match_type": "prefix", "match": "+4930", "priority": 5, "attrs": "short-prefix"},
        {"match_type": "prefix", "match": "+4930555", "priority": 2, "attrs": "long-prefix"},
        {"match_type": "equal", "match": "+4930555123", "priority": 9, "attrs": "equal"},
        {"match": "^\\+49", "priority": 6, "attrs": "regex"},
    )
    assert run(r, "sip:+4930555123@example.com")[2].attrs["dialplan.attrs"] == "long-prefix"
    assert run(r, "sip:+4930666@example.com")[2].attrs["dialplan.attrs"] == "short-prefix"
    assert run(r, "sip:+4940@example.com")[2].attrs["dialplan.attrs"] == "regex"
    r = router(
        {"match_type": "equal", "match": "+4930555123", "priority": 1, "attrs": "equal"},
        {"match_type": "prefix", "match": "+4930555", "priority": 2, "attrs": "long-prefix"},
    )
    assert run(r, "sip:+4930555123@example.com")[2].attrs["dialplan.attrs"] == "equal"


def test_index_agrees_with_a_plain_scan_in_priority_order() -> None:
    """For a mixed plan, the rule chosen equals the first rule that matches when all are tried one by one in
    (priority, config order)."""
    rules: list[dict[str, Any]] = []
    for n in range(60):
        kind = ("equal", "prefix", "regex")[n % 3]
        match = {"equal": f"0{n % 7}1", "prefix": f"0{n % 5}", "regex": f"^0{n % 4}"}[kind]
        rules.append({"match_type": kind, "match": match, "priority": (n * 37) % 11})
    r = router(*rules)
    config = parse_dialplan_config({"rules": rules})
    ordered = sorted(config.rules, key=lambda rule: rule.rank)
    for user in ["001", "011", "021", "0", "01", "02", "03", "04", "0511", "061", "099", "1"]:
        expected = next((rule for rule in ordered if rule.matches(user)), None)
        assert r.lookup(1, user) == expected, user


# -- plans -----------------------------------------------------------------------------


def test_plan_comes_from_the_context_attrs_or_the_default() -> None:
    """An earlier router's attrs['dialplan.plan'] selects the plan; without it default_plan is used."""
    r = router(
        {"plan": 1, "match": "^0", "attrs": "plan-one"},
        {"plan": 2, "match": "^0", "attrs": "plan-two"},
        {"plan": 7, "match": "^0", "attrs": "plan-seven"},
        default_plan=7,
    )
    assert run(r, "sip:030@example.com")[2].attrs["dialplan.attrs"] == "plan-seven"
    assert run(r, "sip:030@example.com", **{"dialplan.plan": "2"})[2].attrs["dialplan.attrs"] == "plan-two"
    assert run(r, "sip:030@example.com", **{"dialplan.plan": "1"})[2].attrs["dialplan.attrs"] == "plan-one"
    decision, req, ctx = run(r, "sip:030@example.com", **{"dialplan.plan": "3"})
    assert (decision, req.uri_text) == (None, "sip:030@example.com")
    assert "dialplan.attrs" not in ctx.attrs


def test_rule_plan_defaults_to_default_plan() -> None:
    """A rule without plan belongs to default_plan."""
    r = router({"match": "^0", "attrs": "x"}, default_plan=4)
    assert r.lookup(4, "030") is not None
    assert r.lookup(1, "030") is None


def test_a_plan_attr_that_is_not_a_number_matches_nothing() -> None:
    """A dialplan.plan attribute that is not an integer selects no plan: the request passes on untouched."""
    r = router({"match": "^0", "prefix": "+"})
    decision, req, ctx = run(r, "sip:030@example.com", **{"dialplan.plan": "national"})
    assert (decision, req.uri_text) == (None, "sip:030@example.com")
    assert ctx.attrs == {"dialplan.plan": "national"}


# -- translation -----------------------------------------------------------------------


def test_replace_uses_groups_of_a_regex_match() -> None:
    """Without subst, replace is substituted for the regex match, expanding its groups."""
    r = router({"match": "^0([1-9][0-9]+)$", "replace": "+49\\1"})
    _, req, _ = run(r, "sip:0301234567@example.com;user=phone")
    assert req.uri_text == "sip:+49301234567@example.com;user=phone"


def test_replace_uses_groups_of_subst_and_keeps_the_unmatched_rest() -> None:
    """subst/replace act like s/subst/replace/: the first match is replaced, the rest of the user stays."""
    r = router({"match_type": "prefix", "match": "9", "subst": "^9(?P<area>[0-9]{2})", "replace": "+49\\g<area>-"})
    _, req, _ = run(r, "sip:930123@example.com")
    assert req.uri.user == "+4930-123"


def test_replace_with_an_empty_string_deletes_the_match() -> None:
    """replace = "" removes what subst matched."""
    r = router({"match_type": "prefix", "match": "+4930555", "subst": "^\\+4930555", "replace": ""})
    _, req, _ = run(r, "sip:+4930555123@example.com")
    assert req.uri.user == "123"


def test_subst_that_does_not_match_leaves_the_user_for_strip_and_prefix() -> None:
    """When subst finds nothing the replacement changes nothing; strip and prefix still apply."""
    r = router({"match": "^0", "subst": "^X", "replace": "Y", "strip": 1, "prefix": "+49"})
    _, req, _ = run(r, "sip:030123@example.com")
    assert req.uri.user == "+4930123"


def test_strip_then_prefix_after_replace() -> None:
    """The order is replace, then strip from the front, then prefix in front."""
    r = router({"match": "^(0)(.*)$", "replace": "\\2\\1", "strip": 2, "prefix": "+49"})
    # 030123 -> replace -> 301230 -> strip 2 -> 1230 -> prefix -> +491230
    _, req, _ = run(r, "sip:030123@example.com")
    assert req.uri.user == "+491230"


def test_a_rule_that_empties_the_user_leaves_the_uri_alone() -> None:
    """A translation whose result is empty does not write an empty user part; the rule still counts as matched."""
    r = router({"match_type": "equal", "match": "12", "strip": 5, "attrs": "empty"})
    _, req, ctx = run(r, "sip:12@example.com")
    assert req.uri_text == "sip:12@example.com"
    assert ctx.attrs["dialplan.attrs"] == "empty"


def test_match_without_change_keeps_the_uri_text_exactly() -> None:
    """A rule that leaves the user as it was does not re-serialise the Request-URI."""
    r = router({"match_type": "prefix", "match": "+49", "attrs": "german"})
    _, req, ctx = run(r, "sip:+4930123@EXAMPLE.com;User=Phone")
    assert req.uri_text == "sip:+4930123@EXAMPLE.com;User=Phone"
    assert ctx.attrs["dialplan.attrs"] == "german"


# -- effects and decisions ---------------------------------------------------------------


def test_match_sets_attrs_and_rule_and_passes_on() -> None:
    """A matching rule writes dialplan.attrs and dialplan.rule ('<plan>:<index>') and returns None."""
    r = router(
        {"match": "^1", "attrs": "one"},
        {"plan": 3, "match": "^0", "attrs": "zero;national"},
    )
    decision, req, ctx = run(r, "sip:030@example.com", **{"dialplan.plan": "3"})
    assert (decision, req.uri_text) == (None, "sip:030@example.com")
    assert ctx.attrs == {"dialplan.plan": "3", "dialplan.attrs": "zero;national", "dialplan.rule": "3:1"}


def test_attrs_default_to_an_empty_string() -> None:
    """A rule without attrs still sets dialplan.attrs, to the empty string."""
    _, _, ctx = run(router({"match": "^0"}), "sip:030@example.com")
    assert ctx.attrs == {"dialplan.attrs": "", "dialplan.rule": "1:0"}


def test_next_hop_forwards_to_the_rewritten_uri() -> None:
    """A rule with next_hop returns a Forward of the rewritten Request-URI to that hop, carrying the attrs."""
    r = router({"match": "^0([1-9].*)$", "replace": "+49\\1", "next_hop": "sip:gw.example.net;transport=tcp"})
    decision, req, _ = run(r, "sip:0301234@example.com")
    assert decision == Forward(
        (Target("sip:+49301234@example.com", "sip:gw.example.net;transport=tcp"),),
        attrs={"dialplan.attrs": "", "dialplan.rule": "1:0"},
    )
    assert req.uri_text == "sip:+49301234@example.com"


def test_reject_answers_with_the_configured_status() -> None:
    """A rule with reject returns Reject(status, reason)."""
    r = router({"match_type": "prefix", "match": "+49900", "reject": [403, "Premium numbers blocked"]})
    decision, _, ctx = run(r, "sip:+499001234@example.com")
    assert decision == Reject(403, "Premium numbers blocked")
    assert ctx.attrs["dialplan.rule"] == "1:0"


def test_no_match_leaves_request_and_context_untouched() -> None:
    """A user no rule matches gives None, the same Request-URI text and no attrs."""
    r = router({"match": "^0", "prefix": "+", "next_hop": "sip:192.0.2.1"})
    decision, req, ctx = run(r, "sip:alice@example.com;transport=tcp")
    assert decision is None
    assert req.uri_text == "sip:alice@example.com;transport=tcp"
    assert ctx.attrs == {}


def test_uri_without_user_passes_on() -> None:
    """A Request-URI without a user part matches nothing, not even a rule matching everything."""
    decision, req, ctx = run(router({"match": "", "prefix": "x"}), "sip:example.com")
    assert (decision, req.uri_text, ctx.attrs) == (None, "sip:example.com", {})


# -- match_on ----------------------------------------------------------------------------


def test_match_on_from_matches_the_from_user_and_rewrites_the_request_uri() -> None:
    """With match_on = "from" the From user is matched; the new user replaces the Request-URI user."""
    r = router({"match": "^0(30.*)$", "replace": "+49\\1", "attrs": "caller"}, match_on="from")
    req = request("sip:bob@example.com", from_uri="sip:030999@pbx.example.com")
    ctx = context()
    assert r.route(req, ctx) is None
    assert req.uri_text == "sip:+4930999@example.com"
    assert req.from_.uri.user == "030999"
    assert ctx.attrs["dialplan.attrs"] == "caller"
    untouched = request("sip:030999@example.com", from_uri="sip:alice@example.com")
    assert r.route(untouched, context()) is None
    assert untouched.uri_text == "sip:030999@example.com"


def test_match_on_to_matches_the_to_user() -> None:
    """With match_on = "to" the To user is matched and the Request-URI user is rewritten from it."""
    r = router({"match_type": "equal", "match": "123", "prefix": "+4930555"}, match_on="to")
    req = request("sip:device-7@192.0.2.7:5062", to_uri="sip:123@example.com")
    assert r.route(req, context()) is None
    assert req.uri_text == "sip:+4930555123@192.0.2.7:5062"


# -- URI forms ---------------------------------------------------------------------------


def test_tel_uri_matches_on_its_number() -> None:
    """For a tel: Request-URI the number is matched and rewritten; its parameters stay."""
    r = router({"match": "^0([1-9][0-9]+)$", "replace": "+49\\1"})
    _, req, ctx = run(r, "tel:0301234567;phone-context=+49")
    assert req.uri_text == "tel:+49301234567;phone-context=+49"
    assert ctx.attrs["dialplan.rule"] == "1:0"


def test_escaped_user_is_unescaped_before_matching_and_escaped_when_written() -> None:
    """%-escapes in the user are decoded before matching; characters that need escaping are escaped again."""
    r = router({"match_type": "equal", "match": "*31#0301234", "strip": 4, "prefix": "#"})
    _, req, ctx = run(r, "sip:%2A31%230301234@example.com")
    assert ctx.attrs["dialplan.rule"] == "1:0"
    assert req.uri_text == "sip:%230301234@example.com"


# -- rules file --------------------------------------------------------------------------


def test_rules_file_is_read_relative_to_the_config_and_follows_inline_rules(tmp_path: Path) -> None:
    """rules_file names a TOML file of [[rules]] resolved against the config's folder; its rules come after the
    inline ones in config order and are numbered on from them."""
    (tmp_path / "plan.toml").write_text(
        '[[rules]]\nmatch_type = "prefix"\nmatch = "00"\nstrip = 2\nprefix = "+"\nattrs = "file"\n'
        '[[rules]]\nmatch = "^0"\nattrs = "file-shadowed"\n'
    )
    table = RouterTable({"rules": [{"match": "^0[1-9]", "attrs": "inline"}], "rules_file": "plan.toml"}, str(tmp_path))
    r = DialplanRouterFactory().make_router(table, None)
    _, req, ctx = run(r, "sip:0044207@example.com")
    assert req.uri.user == "+44207"
    assert ctx.attrs == {"dialplan.attrs": "file", "dialplan.rule": "1:1"}
    assert run(r, "sip:030@example.com")[2].attrs["dialplan.attrs"] == "inline"


def test_errors_in_the_rules_file_name_the_file_and_the_key(tmp_path: Path) -> None:
    """A bad rule in the rules file is reported with the file's path and the rule's key inside it."""
    path = tmp_path / "plan.toml"
    path.write_text('[[rules]]\nmatch = "^0"\n[[rules]]\nmatch = "("\n')
    with pytest.raises(ConfigError) as info:
        parse_dialplan_config(RouterTable({"rules_file": "plan.toml"}, str(tmp_path)))
    assert info.value.key == f"routing.dialplan.rules_file: {path}: rules[1].match"
    assert "regular expression" in info.value.message


@pytest.mark.parametrize(
    ("content", "key_end", "words"),
    [
        (None, "routing.dialplan.rules_file", "cannot read"),
        ("[[rules]\n", "routing.dialplan.rules_file", "not valid TOML"),
        ('default_plan = 2\n[[rules]]\nmatch = "x"\n', ": default_plan", "unknown key"),
        ('rules = "x"\n', ": rules", "list of rule tables"),
    ],
)
def test_unusable_rules_file_names_the_key(tmp_path: Path, content: str | None, key_end: str, words: str) -> None:
    """A missing or unparsable rules file, a top-level key other than rules, or rules that are not tables are
    config errors at rules_file."""
    if content is not None:
        (tmp_path / "plan.toml").write_text(content)
    with pytest.raises(ConfigError) as info:
        parse_dialplan_config(RouterTable({"rules_file": "plan.toml"}, str(tmp_path)))
    assert info.value.key.startswith("routing.dialplan.rules_file")
    assert info.value.key.endswith(key_end)
    assert words in info.value.message


# -- the example config ------------------------------------------------------------------


def example_router() -> DialplanRouter:
    with EXAMPLE.open("rb") as handle:
        table = tomllib.load(handle)["routing"]["dialplan"]
    return DialplanRouterFactory().make_router(table, None)


@pytest.mark.parametrize(
    ("plan", "dialled", "user", "attrs"),
    [
        ("1", "0301234567", "+49301234567", "national"),
        ("1", "00442071234567", "+442071234567", "international"),
        ("1", "123", "+4930555123", "extension"),
        ("1", "7654321", "+49307654321", "local"),
        ("2", "+4930555123", "123", "inbound"),
    ],
)
def test_example_config_normalises_numbers(plan: str, dialled: str, user: str, attrs: str) -> None:
    """etc/dialplan-example.toml turns national, international, local and extension numbers into E.164, and
    inbound numbers of our block into extensions, passing on with its attrs."""
    decision, req, ctx = run(example_router(), f"sip:{dialled}@example.com", **{"dialplan.plan": plan})
    assert decision is None
    assert req.uri_text == f"sip:{user}@example.com"
    assert ctx.attrs["dialplan.attrs"] == attrs


@pytest.mark.parametrize("dialled", ["+499001234567", "09001234567", "00499001234567"])
def test_example_config_blocks_premium_numbers(dialled: str) -> None:
    """etc/dialplan-example.toml rejects premium-rate numbers with 403 in every dialled form."""
    decision, _, _ = run(example_router(), f"sip:{dialled}@example.com")
    assert isinstance(decision, Reject)
    assert decision.status == 403


def test_example_config_sends_emergency_calls_to_their_gateway() -> None:
    """etc/dialplan-example.toml forwards 112 unchanged to the emergency gateway with attrs 'emergency'."""
    decision, _, ctx = run(example_router(), "sip:112@example.com")
    assert decision == Forward(
        (Target("sip:112@example.com", "sip:psap-gw.example.net;transport=tcp"),),
        attrs={"dialplan.attrs": "emergency", "dialplan.rule": "1:2"},
    )
    assert ctx.attrs["dialplan.attrs"] == "emergency"


def test_example_section_fits_into_a_full_config() -> None:
    """The example's [routing.dialplan] section, pasted into a config whose routers name dialplan, is accepted."""
    with EXAMPLE.open("rb") as handle:
        document = tomllib.load(handle)
    assert set(document) == {"routing"} and set(document["routing"]) == {"dialplan"}
    config = parse_config({"routing": {"routers": ["dialplan", "static"], **document["routing"]}}, str(EXAMPLE))
    assert len(parse_dialplan_config(config.routing.tables["dialplan"]).rules) == 9


def test_example_config_refuses_unknown_inbound_numbers() -> None:
    """In the example's plan 2, a number outside our block is answered 404."""
    decision, _, _ = run(example_router(), "sip:+4940123@example.com", **{"dialplan.plan": "2"})
    assert decision == Reject(404, "No such number here")


# -- validation --------------------------------------------------------------------------


def test_unknown_top_level_key_is_named() -> None:
    """An unknown key in [routing.dialplan] is reported with its name."""
    e = error({"rule": []})
    assert (e.key, e.message) == ("routing.dialplan.rule", "unknown key")


def test_unknown_rule_key_is_named() -> None:
    """An unknown key in a rule is reported as rules[i].<key>."""
    e = error({"rules": [{"match": "x"}, {"match": "x", "repl": "y"}]})
    assert (e.key, e.message) == ("routing.dialplan.rules[1].repl", "unknown key")


def test_bad_regex_in_match_names_the_key() -> None:
    """A regex match that does not compile is an error at rules[i].match."""
    e = error({"rules": [{"match": "ok"}, {"match": "ok"}, {"match": "ok"}, {"match": "[0-9"}]})
    assert e.key == "routing.dialplan.rules[3].match"
    assert "regular expression" in e.message


def test_bad_regex_in_subst_names_the_key() -> None:
    """A subst that does not compile is an error at rules[i].subst."""
    assert error({"rules": [{"match": "x", "subst": "(", "replace": ""}]}).key == "routing.dialplan.rules[0].subst"


def test_equal_and_prefix_match_are_not_compiled() -> None:
    """An equal or prefix match is a literal string, so text that is no valid regex is accepted."""
    config = parse_dialplan_config({"rules": [{"match_type": "prefix", "match": "(+"}]})
    assert config.rules[0].match == "(+"


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"default_plan": "1"}, "routing.dialplan.default_plan"),
        ({"default_plan": True}, "routing.dialplan.default_plan"),
        ({"match_on": "contact"}, "routing.dialplan.match_on"),
        ({"rules": {"match": "x"}}, "routing.dialplan.rules"),
        ({"rules": ["^0"]}, "routing.dialplan.rules[0]"),
        ({"rules": [{"prefix": "+"}]}, "routing.dialplan.rules[0].match"),
        ({"rules": [{"match": 5}]}, "routing.dialplan.rules[0].match"),
        ({"rules": [{"match_type": "prefix", "match": 0}]}, "routing.dialplan.rules[0].match"),
        ({"rules": [{"match": "x", "match_type": "glob"}]}, "routing.dialplan.rules[0].match_type"),
        ({"rules": [{"match": "x", "plan": "2"}]}, "routing.dialplan.rules[0].plan"),
        ({"rules": [{"match": "x", "priority": 1.5}]}, "routing.dialplan.rules[0].priority"),
        ({"rules": [{"match": "x", "strip": -1}]}, "routing.dialplan.rules[0].strip"),
        ({"rules": [{"match": "x", "strip": "2"}]}, "routing.dialplan.rules[0].strip"),
        ({"rules": [{"match": "x", "prefix": 49}]}, "routing.dialplan.rules[0].prefix"),
        ({"rules": [{"match": "x", "attrs": ["a"]}]}, "routing.dialplan.rules[0].attrs"),
        ({"rules": [{"match": "x", "replace": 1}]}, "routing.dialplan.rules[0].replace"),
        ({"rules": [{"match": "x", "subst": 1, "replace": ""}]}, "routing.dialplan.rules[0].subst"),
    ],
)
def test_wrong_types_and_values_name_the_key(table: dict[str, Any], key: str) -> None:
    """Missing, mistyped or out-of-range values are config errors naming their key."""
    assert error(table).key == key


@pytest.mark.parametrize("match_type", ["equal", "prefix"])
def test_replace_without_something_to_replace_is_refused(match_type: str) -> None:
    """replace on an equal or prefix rule without subst has no groups to work on: an error at rules[i].replace."""
    e = error({"rules": [{"match_type": match_type, "match": "0", "replace": "+49"}]})
    assert e.key == "routing.dialplan.rules[0].replace"
    assert "subst" in e.message


def test_subst_without_replace_is_refused() -> None:
    """subst alone does nothing: an error at rules[i].subst asking for replace."""
    e = error({"rules": [{"match": "x", "subst": "^0"}]})
    assert e.key == "routing.dialplan.rules[0].subst"
    assert "replace" in e.message


@pytest.mark.parametrize(
    ("rule", "words"),
    [
        ({"match": "^0([0-9]+)$", "replace": "+49\\2"}, "match"),
        ({"match": "^0", "replace": "\\g<area>"}, "match"),
        ({"match": "^0", "replace": "x\\"}, "match"),
        ({"match": "^0([0-9]+)$", "subst": "^0", "replace": "+49\\1"}, "subst"),
    ],
)
def test_bad_group_reference_in_replace_is_found_at_start(rule: dict[str, Any], words: str) -> None:
    """A replace naming a group its pattern lacks (subst's when given, else match's), or ending in a lone
    backslash, is an error at rules[i].replace before any request arrives."""
    e = error({"rules": [rule]})
    assert e.key == "routing.dialplan.rules[0].replace"
    assert words in e.message


@pytest.mark.parametrize("reject", [[399, "x"], [700, "x"], ["403", "x"], [403], [403, ""], [403, "a\r\nb"], 403])
def test_bad_reject_is_refused(reject: Any) -> None:
    """reject must be [status 400-699, non-empty one-line reason]; anything else is an error at rules[i].reject."""
    assert error({"rules": [{"match": "x", "reject": reject}]}).key == "routing.dialplan.rules[0].reject"


@pytest.mark.parametrize(
    "hop", ["tel:+4930123", "mailto:gw@example.net", "sip:", "sip:192.0.2.1;transport=sctp", 5, "gw.example.net"]
)
def test_next_hop_must_be_a_sip_uri(hop: Any) -> None:
    """next_hop must be a sip: or sips: URI with a host and a known transport: an error at rules[i].next_hop."""
    assert error({"rules": [{"match": "x", "next_hop": hop}]}).key == "routing.dialplan.rules[0].next_hop"


def test_next_hop_and_reject_together_are_refused() -> None:
    """A rule cannot both forward and reject: an error at rules[i].reject."""
    e = error({"rules": [{"match": "x", "next_hop": "sip:192.0.2.1", "reject": [403, "No"]}]})
    assert e.key == "routing.dialplan.rules[0].reject"


def test_rules_file_must_be_a_string() -> None:
    """A rules_file that is not a file name string is an error at rules_file."""
    assert error({"rules_file": ["a.toml"]}).key == "routing.dialplan.rules_file"


def test_factory_validates_at_make_router() -> None:
    """make_router raises the ConfigError of the table, so a bad plan stops the start."""
    with pytest.raises(ConfigError) as info:
        DialplanRouterFactory().make_router({"rules": [{"match": "("}]}, None)
    assert info.value.key == "routing.dialplan.rules[0].match"


def test_valid_full_rule_is_accepted() -> None:
    """A rule using every key parses into the values given."""
    config = parse_dialplan_config(
        {
            "default_plan": 3,
            "match_on": "to",
            "rules": [
                {
                    "plan": 5,
                    "priority": -2,
                    "match": "^0(.*)$",
                    "match_type": "regex",
                    "subst": "^0",
                    "replace": "",
                    "strip": 1,
                    "prefix": "+49",
                    "attrs": "a=b",
                    "next_hop": "sips:gw.example.net:5061",
                }
            ],
        }
    )
    assert (config.default_plan, config.match_on) == (3, "to")
    rule = config.rules[0]
    assert (rule.plan, rule.priority, rule.strip, rule.prefix, rule.attrs) == (5, -2, 1, "+49", "a=b")
    assert (rule.next_hop, rule.reject, rule.label) == ("sips:gw.example.net:5061", None, "5:0")
