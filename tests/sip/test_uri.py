"""Tests for sipgate_proxy.sip.uri: parsing, serialising, comparing URIs."""

from __future__ import annotations

import pytest

from sipgate_proxy.sip.errors import SIPError
from sipgate_proxy.sip.uri import URI, escape_user, parse_port, parse_uri, unescape


def bad(text: str) -> SIPError:
    """Parse ``text`` expecting a 400 and return the error."""
    with pytest.raises(SIPError) as info:
        parse_uri(text)
    assert info.value.status == 400
    return info.value


# --- parsing: components ----------------------------------------------------


def test_full_sip_uri_components() -> None:
    """Every component of a full sip URI lands in its field, as written."""
    uri = parse_uri("sip:alice:secret@Atlanta.Example.COM:5061;transport=TCP;lr?x=y")
    assert uri.scheme == "sip"
    assert uri.user == "alice"
    assert uri.password == "secret"
    assert uri.host == "atlanta.example.com"
    assert uri.port == 5061
    assert uri.params == [("transport", "TCP"), ("lr", None)]
    assert uri.headers == "x=y"
    assert uri.opaque is None


def test_scheme_is_lower_cased() -> None:
    """The scheme is case-insensitive and stored lower-cased."""
    uri = parse_uri("SIPS:bob@Biloxi.com")
    assert uri.scheme == "sips"
    assert uri.is_secure
    assert not parse_uri("sip:bob@biloxi.com").is_secure


def test_user_keeps_case_and_escapes() -> None:
    """The user part is kept exactly as written, escapes included."""
    uri = parse_uri("sip:%75se%72@example.com")
    assert uri.user == "%75se%72"
    assert str(uri) == "sip:%75se%72@example.com"


def test_host_only_uri() -> None:
    """A URI without userinfo has user and password None."""
    uri = parse_uri("sip:example.com")
    assert uri.user is None and uri.password is None
    assert uri.host == "example.com"
    assert uri.port is None
    assert uri.params == []
    assert uri.headers is None


def test_empty_password_is_kept_distinct_from_none() -> None:
    """``user:@host`` has an empty password, which serialises back."""
    uri = parse_uri("sip:123:@10.43.12.14")
    assert uri.password == ""
    assert str(uri) == "sip:123:@10.43.12.14"


def test_semiuri_user_part_with_semicolon() -> None:
    """RFC 4475 semiuri: ';par=' and an escaped '@' belong to the user part."""
    uri = parse_uri("sip:user;par=u%40example.net@example.com")
    assert uri.user == "user;par=u%40example.net"
    assert unescape(uri.user) == "user;par=u@example.net"
    assert uri.host == "example.com"
    assert uri.params == []


def test_intmeth_unusual_userinfo() -> None:
    """RFC 4475 intmeth: user and password full of legal odd characters."""
    text = "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com"
    uri = parse_uri(text)
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert uri.host == "example.com"
    assert uri.headers is None
    assert str(uri) == text


def test_esc01_request_uri() -> None:
    """RFC 4475 esc01: an escaped sips URI in the user part parses."""
    uri = parse_uri("sip:sips%3Auser%40example.com@example.net")
    assert uri.user == "sips%3Auser%40example.com"
    assert unescape(uri.user) == "sips:user@example.com"
    assert uri.host == "example.net"


def test_esc01_escaped_params_are_kept_as_written() -> None:
    """RFC 4475 esc01: escaped parameter names and values stay escaped."""
    uri = parse_uri("sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31")
    assert uri.params == [("%6C%72", None), ("n%61me", "v%61lue%25%34%31")]
    assert unescape("v%61lue%25%34%31") == "value%41"


def test_escnull_keeps_percent_00() -> None:
    """RFC 4475 escnull: %00 in the user part is kept, not truncated."""
    one = parse_uri("sip:%00@host5.example.com")
    two = parse_uri("sip:%00%00@host5.example.com")
    assert one.user == "%00"
    assert two.user == "%00%00"
    assert unescape(two.user) == "\x00\x00"
    assert one != two
    assert parse_uri("sip:null-%00-null@example.com").user == "null-%00-null"


def test_uri_headers_are_raw() -> None:
    """RFC 4475 regescrt: the headers after '?' are kept raw, escapes included."""
    uri = parse_uri("sip:user@example.com?Route=%3Csip:sip.example.com%3E")
    assert uri.headers == "Route=%3Csip:sip.example.com%3E"
    assert str(uri) == "sip:user@example.com?Route=%3Csip:sip.example.com%3E"


def test_unknown_scheme_is_opaque() -> None:
    """RFC 4475 unkscm: an unknown scheme parses so the proxy can answer 416."""
    uri = parse_uri("nobodyKnowsThisScheme:totallyopaquecontent")
    assert uri.scheme == "nobodyknowsthisscheme"
    assert uri.opaque == "totallyopaquecontent"
    assert uri.host == ""
    assert uri.user is None
    assert str(uri) == "nobodyknowsthisscheme:totallyopaquecontent"


def test_novel_scheme_is_opaque() -> None:
    """RFC 4475 novelsc: a scheme with '.' and a '//' body parses opaque."""
    uri = parse_uri("soap.beep://192.0.2.103:3002")
    assert uri.scheme == "soap.beep"
    assert uri.opaque == "//192.0.2.103:3002"
    assert uri.host == "" and uri.port is None


@pytest.mark.parametrize(
    ("text", "scheme", "opaque"),
    [
        ("isbn:2983792873", "isbn", "2983792873"),
        ("http://www.example.com", "http", "//www.example.com"),
        ("name:John_Smith", "name", "John_Smith"),
    ],
)
def test_unksm2_schemes(text: str, scheme: str, opaque: str) -> None:
    """RFC 4475 unksm2: non-SIP schemes in To/From/Contact parse opaque."""
    uri = parse_uri(text)
    assert (uri.scheme, uri.opaque) == (scheme, opaque)
    assert str(uri) == text


def test_tel_uri() -> None:
    """RFC 3966: a tel URI keeps the number in user and its params."""
    uri = parse_uri("tel:+4930123;phone-context=example.com;isub=1")
    assert uri.scheme == "tel"
    assert uri.user == "+4930123"
    assert uri.host == ""
    assert uri.params == [("phone-context", "example.com"), ("isub", "1")]
    assert uri.param("phone-context") == "example.com"
    assert str(uri) == "tel:+4930123;phone-context=example.com;isub=1"


def test_tel_uri_without_params() -> None:
    """A bare tel URI has an empty params list and serialises unchanged."""
    uri = parse_uri("tel:+1-201-555-0123")
    assert uri.user == "+1-201-555-0123"
    assert uri.params == []
    assert str(uri) == "tel:+1-201-555-0123"


def test_hostname_with_trailing_dot() -> None:
    """A fully qualified hostname with a trailing dot is a valid host."""
    assert parse_uri("sip:example.com.").host == "example.com."


def test_leading_zero_port() -> None:
    """Leading zeros in the port are tolerated (RFC 4475 wsinv style)."""
    assert parse_uri("sip:example.com:05060").port == 5060


# --- IPv6 (RFC 5118) ----------------------------------------------------------


def test_ipv6_reference_keeps_brackets() -> None:
    """RFC 5118 4.1: an IPv6 reference keeps its brackets, lower-cased."""
    uri = parse_uri("sip:[2001:DB8::10]")
    assert uri.host == "[2001:db8::10]"
    assert uri.port is None
    assert uri.host_port() == ("[2001:db8::10]", None)


def test_ipv6_bad_without_brackets_is_rejected() -> None:
    """RFC 5118 4.2: an IPv6 address without brackets is a 400."""
    assert "bracket" in bad("sip:user@2001:db8::10").reason
    assert "bracket" in bad("sip:2001:db8::10").reason


def test_ipv6_port_ambiguous_is_one_address() -> None:
    """RFC 5118 4.3: [2001:db8::10:5070] is one address without a port."""
    uri = parse_uri("sip:[2001:db8::10:5070]")
    assert uri.host == "[2001:db8::10:5070]"
    assert uri.port is None


def test_ipv6_port_unambiguous() -> None:
    """RFC 5118 4.4: [2001:db8::10]:5070 is an address and a port."""
    uri = parse_uri("sip:[2001:db8::10]:5070")
    assert uri.host_port() == ("[2001:db8::10]", 5070)


def test_ipv4_mapped_ipv6() -> None:
    """RFC 5118 4.7: an IPv4-mapped IPv6 reference is a valid host."""
    uri = parse_uri("sip:ted@[::ffff:192.0.2.2]")
    assert uri.host == "[::ffff:192.0.2.2]"
    assert uri.user == "ted"


def test_ipv6_two_colon_form() -> None:
    """RFC 5118 4.9: the correct IPv4-in-IPv6 form with two colons parses."""
    assert parse_uri("sip:user@[2001:db8::192.0.2.1]").host == "[2001:db8::192.0.2.1]"


def test_ipv6_three_colon_form_is_tolerated() -> None:
    """RFC 5118 4.10: the buggy-ABNF three-colon form is accepted."""
    uri = parse_uri("sip:user@[2001:db8:::192.0.2.1]")
    assert uri.host == "[2001:db8:::192.0.2.1]"
    assert str(uri) == "sip:user@[2001:db8:::192.0.2.1]"


def test_ipv6_maddr_param() -> None:
    """An IPv6 maddr parameter keeps its brackets and colons."""
    uri = parse_uri("sip:host.example.com;maddr=[2001:db8::1]")
    assert uri.param("maddr") == "[2001:db8::1]"


@pytest.mark.parametrize(
    "text",
    [
        "sip:[2001:db8::10",
        "sip:[2001:db8::10]x",
        "sip:[2001:db8::10]:",
        "sip:[]",
        "sip:[hello]",
        "sip:[2001:db8::10]:99999",
    ],
)
def test_malformed_ipv6_references(text: str) -> None:
    """Unterminated, empty, non-hex or trailing-garbage IPv6 references: 400."""
    bad(text)


# --- errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "scheme"),
        ("user@example.com", "scheme"),
        ("alan@jasomi.com", "scheme"),
        (":foo", "scheme"),
        ("1sip:foo", "scheme"),
        ("sip:", "host"),
        ("sip:user@", "host"),
        ("sip:user@;lr", "host"),
        ("sip:@example.com", "user"),
        ("sip:user@example.com:", "port"),
        ("sip:user@example.com:50a", "port"),
        ("sip:user@example.com:65536", "port"),
        ("sip:user@example.com:99999999999999999999", "port"),
        ("sip:user@example.com; lr", "whitespace"),
        ("sip:user@example.com;lr ", "whitespace"),
        (" sip:user@example.com", "whitespace"),
        ("sip:us er@example.com", "whitespace"),
        ("sip:user@example.com\t", "whitespace"),
        ("<sip:user@example.com>", "'<' or '>'"),
        ("sip:user@example.com>", ">"),
        ("sip:<user>@example.com", "<"),
        ("sip:user\x00@example.com", "control"),
        ("sip:user@exa_mple..com", "host"),
        ("sip:user@-example.com", "host"),
        ("sip:user@example.com;;lr", "parameter"),
        ("sip:user@example.com;=x", "parameter"),
        ("tel:", "scheme"),
        ("tel:;foo", "number"),
        ("foo:", "scheme"),
    ],
)
def test_malformed_uris_are_400(text: str, fragment: str) -> None:
    """Each malformed URI raises SIPError(400) with a reason naming the fault."""
    error = bad(text)
    assert fragment in error.reason


def test_reason_does_not_echo_input() -> None:
    """The reason phrase never includes the offending text (status-line safety)."""
    error = bad("sip:user@evil\r\nX-Injected: 1")
    assert "\r" not in error.reason and "Injected" not in error.reason


def test_port_range() -> None:
    """Port 0 and 65535 are accepted, 65536 is not."""
    assert parse_uri("sip:h:0").port == 0
    assert parse_uri("sip:h:65535").port == 65535
    assert parse_port("00065535") == 65535
    with pytest.raises(SIPError):
        parse_port("65536")
    with pytest.raises(SIPError):
        parse_port("\xb2")  # superscript two: isdigit() but not ASCII


# --- params, copies, properties ------------------------------------------------


def test_param_lookup_is_case_insensitive() -> None:
    """param() finds a parameter in any case; flags give '', absent gives None."""
    uri = parse_uri("sip:h;Transport=TCP;LR;maddr=10.0.0.1")
    assert uri.param("transport") == "TCP"
    assert uri.param("lr") == ""
    assert uri.param("ttl") is None
    assert uri.has_param("Lr")
    assert not uri.has_param("ttl")


def test_transport_property() -> None:
    """transport is the lower-cased transport parameter, None when absent."""
    assert parse_uri("sip:h;transport=TLS").transport == "tls"
    assert parse_uri("sip:h").transport is None


def test_with_param_replaces_in_place_and_copies() -> None:
    """with_param replaces an existing parameter in place and leaves the original."""
    uri = parse_uri("sip:h;a=1;transport=udp;b")
    new = uri.with_param("TRANSPORT", "tcp")
    assert str(new) == "sip:h;a=1;transport=tcp;b"
    assert str(uri) == "sip:h;a=1;transport=udp;b"


def test_with_param_appends_flag() -> None:
    """with_param appends an absent parameter; None makes a flag."""
    uri = parse_uri("sip:proxy.example.com")
    assert str(uri.with_param("lr", None)) == "sip:proxy.example.com;lr"


def test_without_param_removes_all_matches() -> None:
    """without_param removes every parameter of that name, in any case."""
    uri = parse_uri("sip:h;lr;x=1;LR")
    assert str(uri.without_param("lr")) == "sip:h;x=1"
    assert uri.params == [("lr", None), ("x", "1"), ("LR", None)]


def test_copy_does_not_share_params() -> None:
    """copy() applies changes and never shares the params list."""
    uri = parse_uri("sip:alice@h:5060;lr")
    new = uri.copy(host="other.example.com", port=None)
    new.params.append(("x", "y"))
    assert str(new) == "sip:alice@other.example.com;lr;x=y"
    assert str(uri) == "sip:alice@h:5060;lr"


def test_copy_rejects_unknown_field() -> None:
    """copy() with an unknown field name is a TypeError, not silently ignored."""
    with pytest.raises(TypeError):
        parse_uri("sip:h").copy(nonsense=1)


def test_constructed_uri_serialises() -> None:
    """A URI built in code serialises in RFC 3261 order."""
    uri = URI(
        scheme="sip",
        user="bob",
        host="[2001:db8::1]",
        port=5060,
        params=[("transport", "tcp")],
        headers="subject=hi",
    )
    assert str(uri) == "sip:bob@[2001:db8::1]:5060;transport=tcp?subject=hi"


# --- escaping --------------------------------------------------------------------


def test_unescape_decodes_hex_pairs() -> None:
    """unescape turns %HH into the latin-1 character, case-insensitive hex."""
    assert unescape("%61lice") == "alice"
    assert unescape("I%20have%20spaces") == "I have spaces"
    assert unescape("%e9%E9") == "\xe9\xe9"


def test_unescape_keeps_invalid_sequences() -> None:
    """A % not followed by two hex digits stays as it is."""
    assert unescape("%Z%45") == "%ZE"
    assert unescape("100%") == "100%"
    assert unescape("%4") == "%4"
    assert unescape("plain") == "plain"


def test_unescape_is_single_pass() -> None:
    """%2541 unescapes to %41, never to A (RFC 4475 esc01)."""
    assert unescape("%2541") == "%41"


def test_escape_user() -> None:
    """escape_user keeps user-unreserved characters and escapes the rest."""
    assert escape_user("alice") == "alice"
    assert escape_user("+49-30;x=1?y/z") == "+49-30;x=1?y/z"
    assert escape_user("a b@c:d%") == "a%20b%40c%3Ad%25"
    assert escape_user("\xe9\x00") == "%E9%00"
    assert escape_user("\u20ac") == "%E2%82%AC"


def test_escape_then_unescape_round_trips() -> None:
    """unescape(escape_user(x)) is x for latin-1 text."""
    text = "".join(chr(i) for i in range(256))
    assert unescape(escape_user(text)) == text


# --- comparison (RFC 3261 19.1.4) ------------------------------------------------


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
        ("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;security=on"),
        (
            "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
            "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
        ),
        (
            "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
            "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
        ),
        ("sip:[2001:db8::10]", "sip:[2001:DB8:0:0:0:0:0:10]"),
        ("sip:h;lr", "sip:h;%6C%72"),
    ],
)
def test_rfc3261_equivalent_uris(left: str, right: str) -> None:
    """RFC 3261 19.1.4: these URIs are equivalent, in both directions, same hash."""
    a, b = parse_uri(left), parse_uri(right)
    assert a == b
    assert b == a
    assert hash(a) == hash(b)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
        ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
        ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"),
        ("sip:bob@biloxi.com", "sips:bob@biloxi.com"),
        ("sip:bob@biloxi.com", "sip:biloxi.com"),
        ("sip:bob:pw@biloxi.com", "sip:bob@biloxi.com"),
        ("sip:h;user=phone", "sip:h"),
        ("sip:h;ttl=1", "sip:h"),
        ("sip:h;method=INVITE", "sip:h"),
        ("sip:h;maddr=10.0.0.1", "sip:h"),
        ("sip:h?a=1", "sip:h?a=2"),
        ("sip:%00@host5.example.com", "sip:%00%00@host5.example.com"),
    ],
)
def test_rfc3261_different_uris(left: str, right: str) -> None:
    """RFC 3261 19.1.4: these URIs are not equivalent."""
    a, b = parse_uri(left), parse_uri(right)
    assert a != b
    assert b != a


def test_uri_usable_as_dict_key() -> None:
    """Equivalent URIs hash alike, so a dict lookup finds the other spelling."""
    table = {parse_uri("sip:%61lice@atlanta.com;transport=TCP"): 1}
    assert table[parse_uri("sip:alice@ATLANTA.com;transport=tcp")] == 1


def test_tel_comparison_ignores_visual_separators() -> None:
    """RFC 3966 4: tel numbers compare without visual separators."""
    assert parse_uri("tel:+1-201-555-0123") == parse_uri("tel:+1(201)5550123")
    assert hash(parse_uri("tel:+1-201-555-0123")) == hash(parse_uri("tel:+12015550123"))
    assert parse_uri("tel:+12015550123") != parse_uri("tel:+12015550124")
    assert parse_uri("tel:1234;phone-context=a.com") != parse_uri("tel:1234")


def test_opaque_comparison() -> None:
    """Opaque URIs compare by scheme and exact content."""
    assert parse_uri("ISBN:123") == parse_uri("isbn:123")
    assert parse_uri("isbn:123") != parse_uri("isbn:124")
    assert parse_uri("isbn:123") != parse_uri("sip:123")


def test_uri_not_equal_to_other_types() -> None:
    """Comparing a URI with a string is False, not an error."""
    assert parse_uri("sip:h") != "sip:h"
