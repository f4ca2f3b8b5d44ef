"""Property tests: parse -> serialise -> parse is stable; bad input is SIPError."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from sipgate_proxy.sip.errors import SIPError
from sipgate_proxy.sip.headers import (
    NameAddr,
    Via,
    parse_cseq,
    parse_int_header,
    parse_name_addr,
    parse_params,
    parse_via,
    quote,
    split_values,
    unquote,
)
from sipgate_proxy.sip.uri import URI, escape_user, parse_uri, unescape

SETTINGS = settings(max_examples=200, deadline=None)

ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
UNRESERVED = ALNUM + "-_.!~*'()"
TOKEN_CHARS = ALNUM + "-.!%*_+`'~"
HEX = "0123456789abcdefABCDEF"

escaped = st.tuples(st.sampled_from(HEX), st.sampled_from(HEX)).map(lambda pair: "%" + pair[0] + pair[1])


def chars(alphabet: str, min_size: int = 1, max_size: int = 12) -> st.SearchStrategy[str]:
    """Strings of ``alphabet`` characters and %HH escapes."""
    return st.lists(st.one_of(st.sampled_from(alphabet), escaped), min_size=min_size, max_size=max_size).map("".join)


token = st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=10)
label = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,8}[A-Za-z0-9])?", fullmatch=True)
hostname = st.lists(label, min_size=1, max_size=4).map(".".join)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.one_of(
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
    st.ip_addresses(v=6).map(lambda a: f"[{a.exploded.upper()}]"),
    st.just("[::ffff:192.0.2.1]"),
    st.just("[2001:db8:::192.0.2.1]"),
)
host = st.one_of(hostname, ipv4, ipv6)
port = st.one_of(st.none(), st.integers(min_value=0, max_value=65535))
uri_param = st.tuples(
    chars(UNRESERVED + "[]/:&+$"),
    st.one_of(st.none(), chars(UNRESERVED + "[]/:&+$", min_size=0)),
)
uri_header = st.tuples(chars(UNRESERVED + "[]/?:+$"), chars(UNRESERVED + "[]/?:+$", 0))
ws = st.sampled_from(["", " ", "  ", "\t", " \t ", "\r\n "])


def format_uri_params(params: list[tuple[str, str | None]]) -> str:
    """Test-side serialiser for URI parameters."""
    return "".join(f";{n}" if v is None else f";{n}={v}" for n, v in params)


@st.composite
def sip_uri_texts(draw: st.DrawFn) -> tuple[str, str]:
    """A sip/sips URI text and the text parse+str must give back."""
    scheme = draw(st.sampled_from(["sip", "sips", "SIP", "Sips"]))
    userinfo = ""
    if draw(st.booleans()):
        userinfo = draw(chars(UNRESERVED + "&=+$,;?/"))
        if draw(st.booleans()):
            userinfo += ":" + draw(chars(UNRESERVED + "&=+$,", min_size=0))
        userinfo += "@"
    the_host = draw(host)
    the_port = draw(port)
    hostport = the_host if the_port is None else f"{the_host}:{the_port}"
    params = format_uri_params(draw(st.lists(uri_param, max_size=4)))
    headers = ""
    if draw(st.booleans()):
        pairs = draw(st.lists(uri_header, min_size=1, max_size=3))
        headers = "?" + "&".join(f"{n}={v}" for n, v in pairs)
    text = f"{scheme}:{userinfo}{hostport}{params}{headers}"
    canonical = f"{scheme.lower()}:{userinfo}{hostport.lower()}{params}{headers}"
    return text, canonical


@st.composite
def other_uri_texts(draw: st.DrawFn) -> tuple[str, str]:
    """tel: and opaque URI texts with their canonical forms."""
    if draw(st.booleans()):
        number = draw(st.text(alphabet="+0123456789-.()", min_size=1, max_size=15))
        params = format_uri_params(draw(st.lists(uri_param, max_size=3)))
        text = f"tel:{number}{params}"
        return text, text
    scheme = draw(st.from_regex(r"[a-z][a-z0-9+.\-]{0,8}", fullmatch=True))
    if scheme in ("sip", "sips", "tel"):
        scheme = "x-" + scheme
    opaque = draw(
        st.text(
            alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters='<>"'),
            min_size=1,
            max_size=20,
        )
    )
    return f"{scheme}:{opaque}", f"{scheme}:{opaque}"


uri_texts = st.one_of(sip_uri_texts(), other_uri_texts())


def uri_fields(uri: URI) -> tuple[object, ...]:
    """Every field of a URI, for exact comparison."""
    return (
        uri.scheme,
        uri.user,
        uri.password,
        uri.host,
        uri.port,
        uri.params,
        uri.headers,
        uri.opaque,
    )


def name_addr_fields(addr: NameAddr) -> tuple[object, ...]:
    """Fields of a NameAddr except ``bracketed`` (serialising may add brackets)."""
    return addr.display, uri_fields(addr.uri), addr.params


quoted_string = st.lists(
    st.one_of(
        st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters='"\\\x7f'),
        st.characters(min_codepoint=0, max_codepoint=0xFF, exclude_characters="\r\n").map(lambda c: "\\" + c),
    ),
    max_size=12,
).map(lambda parts: '"' + "".join(parts) + '"')
gen_value = st.one_of(token, hostname, ipv6, quoted_string)
header_param = st.tuples(token, st.one_of(st.none(), gen_value))


@st.composite
def header_params_text(draw: st.DrawFn) -> tuple[str, list[tuple[str, str | None]]]:
    """Header parameters with random LWS, and what they must parse to."""
    params = draw(st.lists(header_param, max_size=4))
    parts = []
    for name, value in params:
        text = f"{draw(ws)};{draw(ws)}{name}"
        if value is not None:
            text += f"{draw(ws)}={draw(ws)}{value}"
        parts.append(text)
    return "".join(parts) + draw(ws), params


@given(uri_texts)
@SETTINGS
def test_uri_round_trip(case: tuple[str, str]) -> None:
    """A generated URI serialises to its canonical text and re-parses equal."""
    text, canonical = case
    first = parse_uri(text)
    assert str(first) == canonical
    second = parse_uri(str(first))
    assert uri_fields(second) == uri_fields(first)
    assert second == first
    assert hash(second) == hash(first)


@given(sip_uri_texts())
@SETTINGS
def test_uri_copy_equal(case: tuple[str, str]) -> None:
    """A copy of a parsed URI is equal to it and hashes alike."""
    uri = parse_uri(case[0])
    assert uri.copy() == uri
    assert hash(uri.copy()) == hash(uri)
    assert uri.with_param("x-test", None).has_param("X-TEST")


@st.composite
def via_texts(draw: st.DrawFn) -> tuple[str, Via]:
    """A Via value with random LWS and the Via it must parse to."""
    name, version, transport = draw(token), draw(token), draw(token)
    the_host, the_port = draw(host), draw(port)
    params_text, params = draw(header_params_text())
    text = f"{draw(ws)}{name}{draw(ws)}/{draw(ws)}{version}{draw(ws)}/{draw(ws)}{transport}"
    text += draw(st.sampled_from([" ", "   ", "\t", "\r\n  "])) + the_host
    if the_port is not None:
        text += f"{draw(ws)}:{draw(ws)}{the_port}"
    text += params_text
    expected = Via(f"{name}/{version}", transport.upper(), the_host.lower(), the_port, params)
    return text, expected


@given(via_texts())
@SETTINGS
def test_via_round_trip(case: tuple[str, Via]) -> None:
    """A generated Via parses to its parts and str() re-parses to an equal Via."""
    text, expected = case
    via = parse_via(text)
    assert via == expected
    again = parse_via(str(via))
    assert again == via
    assert str(again) == str(via)


display_word = st.text(
    alphabet=st.one_of(st.sampled_from(TOKEN_CHARS + "#$&^|"), st.characters(min_codepoint=0x80, max_codepoint=0xFF)),
    min_size=1,
    max_size=8,
)
token_display = st.lists(display_word, min_size=1, max_size=3).map(" ".join)


@st.composite
def name_addr_texts(draw: st.DrawFn) -> tuple[str, NameAddr]:
    """A name-addr or addr-spec value and the NameAddr it must parse to."""
    uri_text, canonical = draw(uri_texts)
    uri = parse_uri(uri_text)
    display = draw(st.one_of(st.none(), quoted_string, token_display))
    params_text, params = draw(header_params_text())
    needs_brackets = any(c in canonical for c in ",;?")
    bracketed = display is not None or needs_brackets or draw(st.booleans())
    if bracketed:
        gap = draw(ws) if display is not None and display.startswith('"') else " "
        prefix = "" if display is None else display + gap
        text = f"{draw(ws)}{prefix}<{uri_text}>{params_text}"
    else:
        text = f"{draw(ws)}{uri_text}{params_text}"
    return text, NameAddr(display, uri, params, bracketed)


@given(name_addr_texts())
@SETTINGS
def test_name_addr_round_trip(case: tuple[str, NameAddr]) -> None:
    """A generated name-addr parses to its parts; str() re-parses to the same."""
    text, expected = case
    addr = parse_name_addr(text)
    assert name_addr_fields(addr) == name_addr_fields(expected)
    assert addr.bracketed == expected.bracketed
    again = parse_name_addr(str(addr))
    assert name_addr_fields(again) == name_addr_fields(addr)
    assert str(again) == str(addr)


@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0xFF, exclude_characters="\r\n"), max_size=30))
@SETTINGS
def test_quote_round_trip(text: str) -> None:
    """unquote(quote(x)) is x for any latin-1 text without CR/LF."""
    assert unquote(quote(text)) == text


@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0xFF), max_size=30))
@SETTINGS
def test_escape_round_trip(text: str) -> None:
    """unescape(escape_user(x)) is x and the escaped form parses as a user part."""
    escaped_user = escape_user(text)
    assert unescape(escaped_user) == text
    if text:
        assert parse_uri(f"sip:{escaped_user}@example.com").user == escaped_user


# --- arbitrary input: only SIPError, and whatever parses is stable ---------------

SIPPY = "sip:tel@;=<>\"\\,[]/.?&%0123456789abcdefABCDEF \t\r\n*+-_'~!()xyz"
latin1_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0xFF), max_size=60)
sippy_text = st.text(alphabet=SIPPY, max_size=60)


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """A valid URI, Via or name-addr with one random splice of SIP-ish text."""
    base = draw(st.one_of(uri_texts.map(lambda c: c[0]), via_texts().map(lambda c: c[0])))
    at = draw(st.integers(min_value=0, max_value=len(base)))
    cut = draw(st.integers(min_value=0, max_value=3))
    return base[:at] + draw(st.text(alphabet=SIPPY, max_size=3)) + base[at + cut :]


arbitrary = st.one_of(latin1_text, sippy_text, mutated())


def only_sip_error(func: Callable[[str], object], text: str) -> object | None:
    """Call ``func(text)``; a SIPError(400) gives None, anything else propagates."""
    try:
        return func(text)
    except SIPError as exc:
        assert exc.status == 400
        assert "\r" not in exc.reason and "\n" not in exc.reason
        return None


@given(arbitrary)
@SETTINGS
def test_parse_uri_arbitrary(text: str) -> None:
    """parse_uri raises only SIPError; an accepted URI re-parses equal."""
    uri = only_sip_error(parse_uri, text)
    if isinstance(uri, URI):
        again = parse_uri(str(uri))
        assert uri_fields(again) == uri_fields(uri)
        assert again == uri and hash(again) == hash(uri)


@given(arbitrary)
@SETTINGS
def test_parse_via_arbitrary(text: str) -> None:
    """parse_via raises only SIPError; an accepted Via re-parses equal."""
    via = only_sip_error(parse_via, text)
    if isinstance(via, Via):
        assert parse_via(str(via)) == via


@given(arbitrary)
@SETTINGS
def test_parse_name_addr_arbitrary(text: str) -> None:
    """parse_name_addr raises only SIPError; an accepted value re-parses the same."""
    addr = only_sip_error(parse_name_addr, text)
    if isinstance(addr, NameAddr):
        again = parse_name_addr(str(addr))
        assert name_addr_fields(again) == name_addr_fields(addr)


@given(arbitrary)
@SETTINGS
def test_other_parsers_arbitrary(text: str) -> None:
    """split_values, parse_params, parse_cseq, parse_int_header, unquote raise only SIPError."""
    only_sip_error(split_values, text)
    params = only_sip_error(parse_params, text)
    if isinstance(params, list) and params:
        rendered = "".join(f";{n}" if v is None else f";{n}={v}" for n, v in params)
        assert parse_params(rendered) == params
    only_sip_error(parse_cseq, text)
    only_sip_error(lambda t: parse_int_header(t, "Expires", 2**32 - 1), text)
    only_sip_error(unquote, text)


@given(st.lists(st.one_of(uri_texts.map(lambda c: f"<{c[0]}>"), quoted_string), min_size=1, max_size=4))
@SETTINGS
def test_split_values_round_trip(values: list[str]) -> None:
    """Joining values with ', ' and splitting gives the values back."""
    assert split_values(" , ".join(values)) == values
