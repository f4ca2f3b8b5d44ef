"""Tests for sipgate_proxy.sip.headers: names, lists, Via, name-addr, CSeq."""

from __future__ import annotations

import pytest

from sipgate_proxy.sip.errors import SIPError
from sipgate_proxy.sip.headers import (
    COMPACT_FORMS,
    NameAddr,
    Via,
    canonical_name,
    is_star_contact,
    parse_cseq,
    parse_int_header,
    parse_name_addr,
    parse_params,
    parse_via,
    quote,
    split_values,
    unquote,
)
from sipgate_proxy.sip.uri import parse_uri


def bad(func: object, *args: object) -> SIPError:
    """Call ``func(*args)`` expecting SIPError(400) and return it."""
    assert callable(func)
    with pytest.raises(SIPError) as info:
        func(*args)
    assert info.value.status == 400
    return info.value


# --- header names ----------------------------------------------------------------


def test_compact_forms_table() -> None:
    """Every compact form maps to the registered long name."""
    assert COMPACT_FORMS == {
        "i": "call-id",
        "m": "contact",
        "e": "content-encoding",
        "l": "content-length",
        "c": "content-type",
        "f": "from",
        "s": "subject",
        "k": "supported",
        "t": "to",
        "v": "via",
        "o": "event",
        "r": "refer-to",
        "b": "referred-by",
        "x": "session-expires",
        "u": "allow-events",
        "a": "accept-contact",
        "j": "reject-contact",
        "d": "request-disposition",
        "y": "identity",
        "n": "identity-info",
    }


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Via", "via"),
        ("v", "via"),
        ("V", "via"),
        ("  MaX-fOrWaRdS ", "max-forwards"),
        ("I", "call-id"),
        ("L", "content-length"),
        ("Content-Length   ", "content-length"),
        ("C%6Fntact", "c%6fntact"),
        ("X-Custom", "x-custom"),
    ],
)
def test_canonical_name(name: str, expected: str) -> None:
    """canonical_name strips, lower-cases and expands compact forms only."""
    assert canonical_name(name) == expected


# --- split_values ------------------------------------------------------------------


def test_split_simple_list() -> None:
    """A plain list splits on commas with whitespace stripped."""
    assert split_values("application/sdp, application/pkcs7-mime,  multipart/mixed") == [
        "application/sdp",
        "application/pkcs7-mime",
        "multipart/mixed",
    ]


def test_split_single_and_empty() -> None:
    """One value gives a one-element list; a blank value gives an empty list."""
    assert split_values("  <sip:a@b>  ") == ["<sip:a@b>"]
    assert split_values("") == []
    assert split_values("   ") == []


def test_split_respects_quotes_and_brackets() -> None:
    """Commas in quoted strings and in <...> do not split."""
    value = '"Bell, Alexander" <sip:a@b;x=1,2>;tag=1, <sip:c@d?h=a,b>'
    assert split_values(value) == [
        '"Bell, Alexander" <sip:a@b;x=1,2>;tag=1',
        "<sip:c@d?h=a,b>",
    ]


def test_split_respects_escaped_quote() -> None:
    """An escaped quote inside a quoted string does not end it."""
    value = '"a \\", b" <sip:x@y>, <sip:z@w>'
    assert split_values(value) == ['"a \\", b" <sip:x@y>', "<sip:z@w>"]


def test_split_quote_inside_brackets_is_literal() -> None:
    """Inside <...> a double quote does not open a quoted string."""
    assert split_values('<sip:a"b@c>, <sip:d@e>') == ['<sip:a"b@c>', "<sip:d@e>"]


def test_split_wsinv_vias() -> None:
    """RFC 4475 wsinv: two Vias with odd whitespace split in two."""
    value = (
        "SIP  / 2.0  / TCP     spindle.example.com   ;  branch  =   z9hG4bK9ikj8  ,"
        "  SIP  /    2.0   / UDP  192.168.255.111   ; branch= z9hG4bK30239"
    )
    parts = split_values(value)
    assert len(parts) == 2
    assert parts[1].startswith("SIP  /    2.0")


@pytest.mark.parametrize(
    "value",
    [
        "SIP/2.0/UDP 192.0.2.15;;,;,,",
        "a,,b",
        "a,",
        ",a",
        '"x", , <sip:a@b>',
    ],
)
def test_split_empty_elements_are_400(value: str) -> None:
    """RFC 4475 badinv01: empty list elements are a 400."""
    assert "empty" in bad(split_values, value).reason


def test_split_unterminated_quote_is_400() -> None:
    """RFC 4475 quotbal: an unterminated quote cannot be split."""
    assert "quoted" in bad(split_values, '"Mr. J. User <sip:j.user@example.com>').reason


def test_split_unclosed_bracket_is_400() -> None:
    """A '<' never closed cannot be split."""
    assert "'>'" in bad(split_values, "<sip:a@b, sip:c@d").reason
    assert "'>'" in bad(split_values, '"x" <sip:a@b').reason


# --- quoting ----------------------------------------------------------------------


def test_quote_and_unquote() -> None:
    """quote escapes '"' and '\\'; unquote reverses it."""
    assert quote('say "hi" \\o/') == '"say \\"hi\\" \\\\o/"'
    assert unquote('"say \\"hi\\" \\\\o/"') == 'say "hi" \\o/'
    assert unquote('"J Rosenberg \\\\\\""') == 'J Rosenberg \\"'


def test_unquote_token_unchanged() -> None:
    """A value that is not quoted comes back unchanged."""
    assert unquote("token") == "token"
    assert unquote("") == ""


def test_unquote_unterminated_is_400() -> None:
    """An opening quote without a closing one is a 400."""
    bad(unquote, '"abc')
    bad(unquote, '"abc\\"')
    bad(unquote, '"')


def test_quote_control_characters() -> None:
    """Control characters are escaped as quoted-pairs; CR/LF are refused."""
    assert quote("BEL:\x07") == '"BEL:\\\x07"'
    assert unquote(quote("NUL:\x00 DEL:\x7f")) == "NUL:\x00 DEL:\x7f"
    with pytest.raises(ValueError):
        quote("a\r\nVia: evil")


# --- parse_params ------------------------------------------------------------------


def test_params_basic() -> None:
    """Parameters keep order, names as written, None for flags."""
    assert parse_params(";branch=z9hG4bK776;rport;Received=10.0.0.1") == [
        ("branch", "z9hG4bK776"),
        ("rport", None),
        ("Received", "10.0.0.1"),
    ]


def test_params_whitespace_tolerated() -> None:
    """Whitespace around ';' and '=' is tolerated (RFC 4475 wsinv)."""
    assert parse_params(" ; newparam =      newvalue ;  secondparam ; q = 0.33 ") == [
        ("newparam", "newvalue"),
        ("secondparam", None),
        ("q", "0.33"),
    ]


def test_params_leading_semicolon_optional() -> None:
    """parse_params accepts text without the leading ';'."""
    assert parse_params("a=b;c") == [("a", "b"), ("c", None)]
    assert parse_params("") == []
    assert parse_params("  ") == []


def test_params_quoted_value() -> None:
    """A quoted-string value is kept with its quotes, escapes and ';' inside."""
    assert parse_params(';x="a;b \\" c";y') == [("x", '"a;b \\" c"'), ("y", None)]


def test_params_ipv6_values() -> None:
    """RFC 5118 4.5: received with and without brackets parses."""
    assert parse_params(";received=[2001:db8::9:255]") == [("received", "[2001:db8::9:255]")]
    assert parse_params(";received=2001:db8::9:255") == [("received", "2001:db8::9:255")]


def test_params_empty_value() -> None:
    """'name=' with nothing after it is an empty value, not a flag."""
    assert parse_params(";tag=") == [("tag", "")]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (";;", "empty"),
        (";a;;b", "empty"),
        (";", "empty"),
        (";=x", "malformed"),
        (';a="unterminated', "quoted"),
        (";a=b c", "malformed"),
        (";a b", "malformed"),
        (";a=<x>", "malformed"),
        (";a,b", "malformed"),
    ],
)
def test_params_malformed(text: str, fragment: str) -> None:
    """Empty names, stray text and unterminated quotes are a 400."""
    assert fragment in bad(parse_params, text).reason


# --- Via ------------------------------------------------------------------------


def test_via_basic() -> None:
    """A plain Via parses into protocol, transport, host, port and params."""
    via = parse_via("SIP/2.0/UDP pc33.Atlanta.com:5066;branch=z9hG4bK776asdhds;rport")
    assert via.protocol == "SIP/2.0"
    assert via.transport == "UDP"
    assert via.host == "pc33.atlanta.com"
    assert via.port == 5066
    assert via.branch == "z9hG4bK776asdhds"
    assert via.rport == ""
    assert via.received is None
    assert str(via) == "SIP/2.0/UDP pc33.atlanta.com:5066;branch=z9hG4bK776asdhds;rport"


def test_via_wsinv_whitespace() -> None:
    """RFC 4475 wsinv: runs of whitespace around '/', ';' and '=' are accepted."""
    via = parse_via("SIP  /   2.0  / TCP     spindle.example.com   ;  branch  =   z9hG4bK9ikj8  ")
    assert via.protocol == "SIP/2.0"
    assert via.transport == "TCP"
    assert via.host == "spindle.example.com"
    assert via.port is None
    assert via.branch == "z9hG4bK9ikj8"
    second = parse_via("SIP  /    2.0   / UDP  192.168.255.111   ; branch= z9hG4bK30239")
    assert second.branch == "z9hG4bK30239"
    third = parse_via("SIP  /   2.0 /UDP    192.0.2.2;branch=390skdjuw")
    assert (third.transport, third.host) == ("UDP", "192.0.2.2")


def test_via_unfolded_crlf_tolerated() -> None:
    """Whitespace that still holds CRLF from folding is treated as LWS."""
    via = parse_via("SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw")
    assert (via.protocol, via.transport, via.host) == ("SIP/2.0", "UDP", "192.0.2.2")


def test_via_whitespace_around_port_colon() -> None:
    """Whitespace around the sent-by ':' is tolerated."""
    via = parse_via("SIP/2.0/UDP host.example.com : 5070 ;branch=z9hG4bKx")
    assert (via.host, via.port) == ("host.example.com", 5070)


@pytest.mark.parametrize(
    ("value", "transport"),
    [
        ("SIP/2.0/UDP t1.example.com;branch=z9hG4bKkdjuw", "UDP"),
        ("SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf", "SCTP"),
        ("SIP/2.0/TLS t3.example.com;branch=z9hG4bK2980unddj", "TLS"),
        ("SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en", "UNKNOWN"),
        ("SIP/2.0/tcp t5.example.com;branch=z9hG4bK0a9idfnee", "TCP"),
        ("SIP/2.0/TLS-SCTP t6.example.com", "TLS-SCTP"),
        ("SIP/2.0/ws t7.example.com", "WS"),
    ],
)
def test_via_transports(value: str, transport: str) -> None:
    """RFC 4475 transports: any transport token is accepted and upper-cased."""
    assert parse_via(value).transport == transport


def test_via_ipv6_sent_by() -> None:
    """RFC 5118: an IPv6 sent-by keeps its brackets; a port may follow."""
    via = parse_via("SIP/2.0/UDP [2001:db8::9:1]:6050;branch=z9hG4bKas3-111")
    assert (via.host, via.port) == ("[2001:db8::9:1]", 6050)
    mapped = parse_via("SIP/2.0/UDP [::ffff:192.0.2.10]:19823;branch=z9hG4bKbh19")
    assert (mapped.host, mapped.port) == ("[::ffff:192.0.2.10]", 19823)


def test_via_received_ipv6_with_and_without_brackets() -> None:
    """RFC 5118 4.5: received=[v6] and received=v6 both parse, kept as written."""
    with_delim = parse_via("SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255];branch=z9hG4bKas3-111")
    assert with_delim.received == "[2001:db8::9:255]"
    assert with_delim.branch == "z9hG4bKas3-111"
    no_delim = parse_via("SIP/2.0/UDP [2001:db8::9:1];received=2001:db8::9:255;branch=z9hG4bKas3")
    assert no_delim.received == "2001:db8::9:255"


def test_via_maddr_ttl() -> None:
    """maddr and ttl are exposed as properties."""
    via = parse_via("SIP/2.0/UDP h;maddr=224.2.0.1;ttl=16")
    assert via.maddr == "224.2.0.1"
    assert via.ttl == "16"
    assert parse_via("SIP/2.0/UDP h").maddr is None


def test_via_bare_branch_cookie() -> None:
    """RFC 4475 badbranch: a bare magic cookie branch parses."""
    assert parse_via("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK").branch == "z9hG4bK"


def test_via_rfc2543_without_branch() -> None:
    """RFC 4475 inv2543: a Via without branch parses with branch None."""
    via = parse_via("SIP/2.0/UDP iftgw.example.com")
    assert via.branch is None
    assert via.params == []


def test_via_other_version_parses() -> None:
    """RFC 4475 badvers: SIP/7.0 parses; the caller answers 505."""
    assert parse_via("SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw").protocol == "SIP/7.0"


def test_via_set_param() -> None:
    """set_param replaces an existing parameter in place or appends a new one."""
    via = parse_via("SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bKa")
    via.set_param("RPORT", "5062")
    via.set_param("received", "192.0.2.7")
    assert str(via) == "SIP/2.0/UDP 10.0.0.1:5060;rport=5062;branch=z9hG4bKa;received=192.0.2.7"
    assert via.param("Branch") == "z9hG4bKa"


def test_via_constructed() -> None:
    """A Via built in code serialises as protocol/transport host:port;params."""
    via = Via(host="proxy.example.com", port=5060, params=[("branch", "z9hG4bKx")])
    assert str(via) == "SIP/2.0/UDP proxy.example.com:5060;branch=z9hG4bKx"
    assert str(Via("SIP/2.0", "TLS", "[2001:db8::1]")) == "SIP/2.0/TLS [2001:db8::1]"


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("SIP/2.0/UDP 192.0.2.15;;", "empty"),
        (";", "protocol"),
        ("", "protocol"),
        ("SIP/2.0/UDP", "sent-by"),
        ("SIP/2.0/UDP   ", "sent-by"),
        ("SIP/2.0/UDP ;branch=z9hG4bKx", "sent-by"),
        ("SIP/2.0 host.example.com", "protocol"),
        ("SIP/UDP host.example.com", "protocol"),
        ("SIP 2.0 UDP host.example.com", "protocol"),
        ("SIP/2.0/UDP host:", "port"),
        ("SIP/2.0/UDP host:99999", "port"),
        ("SIP/2.0/UDP host:abc", "port"),
        ("SIP/2.0/UDP 2001:db8::1;branch=z9hG4bKx", "bracket"),
        ("SIP/2.0/UDP [2001:db8::1;branch=z9hG4bKx", "sent-by"),
        ("SIP/2.0/UDP [zz]", "IPv6"),
        ("SIP/2.0/UDP host junk", "unexpected"),
        ("SIP/2.0/UDP host;branch=a b", "malformed"),
        ("SIP/2.0/UDP ho$t", "host"),
    ],
)
def test_via_malformed(value: str, fragment: str) -> None:
    """Malformed Vias are a 400 whose reason starts with 'Bad Via' and names the fault."""
    error = bad(parse_via, value)
    assert error.reason.startswith("Bad Via")
    assert fragment in error.reason


def test_via_badinv01_after_split() -> None:
    """RFC 4475 badinv01: the Via with extra ';' and ',' is an error either way."""
    with pytest.raises(SIPError):
        for part in split_values("SIP/2.0/UDP 192.0.2.15;;,;,,"):
            parse_via(part)
    bad(parse_via, "SIP/2.0/UDP 192.0.2.15;;")


# --- name-addr ------------------------------------------------------------------


def test_name_addr_quoted_display() -> None:
    """A quoted display name is kept with its quotes; params after '>' are header params."""
    addr = parse_name_addr('"Bob Smith" <sip:bob@biloxi.com;transport=tcp>;tag=a6c85cf')
    assert addr.display == '"Bob Smith"'
    assert addr.uri == parse_uri("sip:bob@biloxi.com;transport=tcp")
    assert addr.uri.params == [("transport", "tcp")]
    assert addr.params == [("tag", "a6c85cf")]
    assert addr.tag == "a6c85cf"
    assert addr.bracketed
    assert str(addr) == '"Bob Smith" <sip:bob@biloxi.com;transport=tcp>;tag=a6c85cf'


def test_name_addr_escaped_quotes_in_display() -> None:
    """RFC 4475 wsinv: escaped quotes and backslashes inside a display name."""
    addr = parse_name_addr('"J Rosenberg \\\\\\""       <sip:jdrosen@example.com>  ;  tag = 98asjd8')
    assert addr.display == '"J Rosenberg \\\\\\""'
    assert addr.tag == "98asjd8"
    contact = parse_name_addr(
        '"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam =      newvalue ;  secondparam ; q = 0.33'
    )
    assert contact.display == '"Quoted string \\"\\""'
    assert contact.params == [("newparam", "newvalue"), ("secondparam", None), ("q", "0.33")]


def test_name_addr_token_display_words() -> None:
    """An unquoted display name of several tokens is kept as written."""
    addr = parse_name_addr("Bob Smith <sip:bob@biloxi.com>")
    assert addr.display == "Bob Smith"
    addr = parse_name_addr("token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;tag=_token~1'+`*%!-.")
    assert addr.display == "token1~` token2'+_ token3*%!.-"
    assert addr.tag == "_token~1'+`*%!-."


def test_name_addr_lwsdisp() -> None:
    """RFC 4475 lwsdisp: a token display name directly followed by '<' is accepted."""
    addr = parse_name_addr("caller<sip:caller@example.com>;tag=323")
    assert addr.display == "caller"
    assert addr.uri.user == "caller"
    assert addr.tag == "323"


def test_name_addr_no_display() -> None:
    """<uri> alone has display None."""
    addr = parse_name_addr("<sip:user@example.com>")
    assert addr.display is None
    assert addr.bracketed
    assert str(addr) == "<sip:user@example.com>"


def test_name_addr_intmeth_to() -> None:
    """RFC 4475 intmeth: a display name with quoted control chars and an odd URI."""
    addr = parse_name_addr(
        '"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f" <sip:1_unusual.URI~(to-be!sure)&isn\'t+it$/crazy?,/;;*@example.com>'
    )
    assert addr.display == '"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f"'
    assert addr.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"


def test_name_addr_intmeth_from_quoted_param() -> None:
    """RFC 4475 intmeth: a header param with a quoted non-ASCII value."""
    utf8_as_latin1 = "\u0436\u0430\u0431\u0435\u0440".encode().decode("latin-1")
    addr = parse_name_addr(f"<sip:mundane@example.com>;fromParam''~+*_!.-%=\"{utf8_as_latin1}\";tag=x")
    assert addr.param("fromparam''~+*_!.-%") == f'"{utf8_as_latin1}"'
    assert addr.tag == "x"


def test_addr_spec_params_are_header_params() -> None:
    """RFC 3261 20.10: without <>, ';tag=x' belongs to the header, not the URI."""
    addr = parse_name_addr("sip:a@b;tag=x")
    assert not addr.bracketed
    assert addr.uri.params == []
    assert addr.tag == "x"
    assert str(addr) == "sip:a@b;tag=x"


def test_addr_spec_wsinv_to() -> None:
    """RFC 4475 wsinv: whitespace before ';' and around '=' in an addr-spec To."""
    addr = parse_name_addr("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n")
    assert addr.uri.host == "chair-dnrc.example.com"
    assert addr.tag == "1918181833n"


def test_cparam01_unknownparam_is_contact_param() -> None:
    """RFC 4475 cparam01: ';unknownparam' on an addr-spec Contact is a contact-param."""
    addr = parse_name_addr("sip:+19725552222@gw1.example.net;unknownparam")
    assert addr.uri.params == []
    assert addr.params == [("unknownparam", None)]


def test_cparam02_unknownparam_is_uri_param() -> None:
    """RFC 4475 cparam02: inside <>, ';unknownparam' is a URI parameter."""
    addr = parse_name_addr("<sip:+19725552222@gw1.example.net;unknownparam>")
    assert addr.uri.params == [("unknownparam", None)]
    assert addr.params == []


def test_addr_spec_with_semicolon_in_user() -> None:
    """RFC 4475 semiuri as addr-spec: ';' in the user stays in the URI.

    Serialising adds the brackets RFC 3261 20 asks for when a URI holds ';'.
    """
    addr = parse_name_addr("sip:user;par=u%40example.net@example.com;tag=1")
    assert addr.uri.user == "user;par=u%40example.net"
    assert addr.tag == "1"
    assert str(addr) == "<sip:user;par=u%40example.net@example.com>;tag=1"
    assert parse_name_addr(str(addr)) == NameAddr(None, addr.uri, addr.params, True)


def test_regescrt_uri_headers_preserved() -> None:
    """RFC 4475 regescrt: the escaped Route header in a Contact URI is kept."""
    addr = parse_name_addr("<sip:user@example.com?Route=%3Csip:sip.example.com%3E>")
    assert addr.uri.headers == "Route=%3Csip:sip.example.com%3E"
    assert str(addr) == "<sip:user@example.com?Route=%3Csip:sip.example.com%3E>"


def test_regbadct_unbracketed_uri_headers_rejected() -> None:
    """RFC 4475 regbadct: URI headers in an unbracketed Contact are a 400."""
    bad(parse_name_addr, "sip:user@example.com?Route=%3Csip:sip.example.com%3E")


def test_esc01_contact_params_escaped() -> None:
    """RFC 4475 esc01: escaped URI params in a Contact are kept as written."""
    addr = parse_name_addr("<sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>")
    assert addr.uri.params == [("%6C%72", None), ("n%61me", "v%61lue%25%34%31")]


def test_unknown_schemes_in_name_addr() -> None:
    """RFC 4475 unksm2: non-SIP URIs in To/From/Contact parse."""
    assert parse_name_addr("isbn:2983792873").uri.opaque == "2983792873"
    frm = parse_name_addr("<http://www.example.com>;tag=3234233")
    assert frm.uri.scheme == "http"
    assert frm.tag == "3234233"
    assert parse_name_addr("<name:John_Smith>").uri.opaque == "John_Smith"


def test_ipv6_contact() -> None:
    """RFC 5118: a Contact with an IPv6 reference keeps its brackets."""
    addr = parse_name_addr('"Caller" <sip:caller@[2001:db8::1]>')
    assert addr.uri.host == "[2001:db8::1]"
    assert str(addr) == '"Caller" <sip:caller@[2001:db8::1]>'


def test_contact_expires_and_q() -> None:
    """Contact parameters such as expires and q are header parameters."""
    addr = parse_name_addr("<sip:user@host129.example.com>\r\n  ;expires=280297596632815")
    assert addr.param("expires") == "280297596632815"


def test_route_lr() -> None:
    """RFC 4475 wsinv Route: ;lr and unknown params are URI params inside <>."""
    addr = parse_name_addr("<sip:services.example.com;lr;unknownwith=value;unknown-no-value>")
    assert addr.uri.has_param("lr")
    assert addr.uri.param("unknown-no-value") == ""


def test_name_addr_set_param() -> None:
    """set_param adds a tag to a To value and serialises it."""
    addr = parse_name_addr("Bob <sip:bob@biloxi.com>")
    addr.set_param("tag", "a6c85cf")
    assert str(addr) == "Bob <sip:bob@biloxi.com>;tag=a6c85cf"
    addr.set_param("TAG", "other")
    assert addr.tag == "other"
    assert len(addr.params) == 1


def test_name_addr_serialisation_adds_needed_brackets() -> None:
    """An unbracketed NameAddr whose URI has params is written with brackets."""
    uri = parse_uri("sip:a@b;transport=tcp")
    assert str(NameAddr(None, uri, [("tag", "1")], bracketed=False)) == "<sip:a@b;transport=tcp>;tag=1"
    assert str(NameAddr(None, parse_uri("sip:a@b"), bracketed=False)) == "sip:a@b"


def test_quoted_display_adjacent_to_bracket() -> None:
    """A quoted display name directly followed by '<' is accepted (RFC 4475 longreq)."""
    addr = parse_name_addr('"I have a user name"<sip:user@example.com:6000>')
    assert addr.display == '"I have a user name"'
    assert addr.uri.port == 6000


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ('"Mr. J. User <sip:j.user@example.com>', "unterminated"),
        ("<sip:user@example.com", "'>'"),
        ('"Bob" <sip:bob@example.com', "'>'"),
        ('"Watson, Thomas" < sip:t.watson@example.org >', "whitespace"),
        ("sip:user@example.com <tag=1234>", "display"),
        ("sip:user@exa mple.com;tag=1", "whitespace"),
        ("Bell, Alexander <sip:a.g.bell@example.com>;tag=43", "display"),
        ("Watson, Thomas <sip:t.watson@example.org>", "display"),
        ('Bob "the" Smith <sip:bob@example.com>', "display"),
        ("Bob; <sip:bob@example.com>", "whitespace"),
        ('"Bob" sip:bob@example.com', "quoted display"),
        ("<sip:bob@example.com> junk", "after '>'"),
        ("<sip:bob@example.com>;;", "empty"),
        ('"Joe" <sip:joe@example.org>;;;;', "empty"),
        ("", "empty"),
        ("*", "scheme"),
        ("alan@jasomi.com", "scheme"),
        ("<>", "scheme"),
    ],
)
def test_name_addr_malformed(value: str, fragment: str) -> None:
    """quotbal, badaspec, baddn, badinv01 and friends are a 400 naming the fault."""
    assert fragment in bad(parse_name_addr, value).reason


def test_is_star_contact() -> None:
    """Only a lone '*' (whitespace allowed) is the wildcard Contact."""
    assert is_star_contact("*")
    assert is_star_contact("  * ")
    assert not is_star_contact("<sip:*@h>")
    assert not is_star_contact("**")


# --- CSeq and integers -------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("4711 INVITE", (4711, "INVITE")),
        ("  0009\r\n  INVITE ", (9, "INVITE")),
        ("0009   INVITE", (9, "INVITE")),
        ("4294967295 ACK", (4294967295, "ACK")),
        ("0 REGISTER", (0, "REGISTER")),
        (
            "139122385 !interesting-Method0123456789_*+`.%indeed'~",
            (139122385, "!interesting-Method0123456789_*+`.%indeed'~"),
        ),
        ("1 RE%47IST%45R", (1, "RE%47IST%45R")),
    ],
)
def test_cseq(value: str, expected: tuple[int, str]) -> None:
    """CSeq parses into number and method, tolerating extra whitespace."""
    assert parse_cseq(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "36893488147419103232 REGISTER",
        "4294967296 INVITE",
        "9292394834772304023312 OPTIONS",
        "1" * 5000 + " INVITE",
        "abc INVITE",
        "-1 INVITE",
        "12",
        "12 ",
        "",
        "1 INVITE extra",
        "1 INV,ITE",
        "\xb2 INVITE",
    ],
)
def test_cseq_malformed(value: str) -> None:
    """RFC 4475 scalar02: overlarge, non-numeric or method-less CSeq is a 400."""
    assert bad(parse_cseq, value).reason.startswith("Bad CSeq")


@pytest.mark.parametrize(
    ("value", "maximum", "expected"),
    [
        ("70", 255, 70),
        (" 0068 ", 255, 68),
        ("0", 255, 0),
        ("255", 255, 255),
        ("4294967295", 2**32 - 1, 4294967295),
    ],
)
def test_int_header(value: str, maximum: int, expected: int) -> None:
    """Digit-only values within the maximum parse, whitespace and zeros allowed."""
    assert parse_int_header(value, "Max-Forwards", maximum) == expected


@pytest.mark.parametrize(
    "value",
    [
        "300",
        "-999",
        "",
        " ",
        "1.5",
        "+5",
        "0x10",
        "1 2",
        "\xb9",
        "1" * 5000,
        "10000000000000000000000000000000000000000000000000000000000000000000000",
    ],
)
def test_int_header_malformed(value: str) -> None:
    """Non-digits or values over the maximum give SIPError(400, 'Bad <name>')."""
    error = bad(parse_int_header, value, "Max-Forwards", 255)
    assert error.reason == "Bad Max-Forwards"
