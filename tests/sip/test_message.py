"""Tests for sipgate_proxy.sip.message: header access, editing, serialising, make_response."""

from __future__ import annotations

import pytest

from sipgate_proxy.sip.errors import SIPError
from sipgate_proxy.sip.message import Request, Response, make_response, pretty_name
from sipgate_proxy.sip.parser import parse_datagram
from sipgate_proxy.sip.uri import parse_uri

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8\r\n"
    b"v: SIP/2.0/TCP proxy.example.net:5070;branch=z9hG4bK77ef , SIP/2.0/UDP 192.0.2.4;branch=z9hG4bK11\r\n"
    b"Max-Forwards: 70\r\n"
    b"Route: <sip:p1.example.net;lr>, <sip:p2.example.net;lr>\r\n"
    b"Route: <sip:p3.example.net;lr>\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b"f: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"i: a84b4c76e66710\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b'Contact: "Doe, John" <sip:john@192.0.2.4>, <sip:alice@pc33.atlanta.example.com>\r\n'
    b"X-Custom:  kept as written \r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\n"
)


def invite() -> Request:
    """A fresh parsed copy of INVITE."""
    message = parse_datagram(INVITE)
    assert isinstance(message, Request)
    return message


def response(text: bytes) -> Response:
    message = parse_datagram(text)
    assert isinstance(message, Response)
    return message


def header_lines(message: Request | Response) -> list[str]:
    """The header lines of the serialised message, without the start line."""
    head = message.to_bytes().split(b"\r\n\r\n", 1)[0].decode("latin-1")
    return head.split("\r\n")[1:]


# --- reading -------------------------------------------------------------------


def test_get_finds_compact_and_long_forms_under_the_canonical_name() -> None:
    """get() takes the canonical name and finds headers written in compact form (f:, i:)."""
    request = invite()
    assert request.get("from") == "Alice <sip:alice@atlanta.example.com>;tag=1928301774"
    assert request.get("call-id") == "a84b4c76e66710"
    assert request.get("via") == "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8"
    assert request.get("subject") is None


def test_get_is_case_insensitive_on_the_wire_name() -> None:
    """Header names are matched whatever their case on the wire."""
    message = parse_datagram(
        b"OPTIONS sip:a@b SIP/2.0\r\nVIA: SIP/2.0/UDP h;branch=z9hG4bK1\r\ncAlL-iD: x1\r\nV: SIP/2.0/UDP h2\r\n\r\n"
    )
    assert message is not None
    assert message.get("call-id") == "x1"
    assert message.get_all("via") == ["SIP/2.0/UDP h;branch=z9hG4bK1", "SIP/2.0/UDP h2"]


def test_get_all_returns_each_line_unsplit() -> None:
    """get_all() gives one value per header line, commas left alone."""
    assert invite().get_all("route") == [
        "<sip:p1.example.net;lr>, <sip:p2.example.net;lr>",
        "<sip:p3.example.net;lr>",
    ]


def test_values_splits_elements_across_lines() -> None:
    """values() splits comma lists and concatenates all lines in order."""
    request = invite()
    assert request.values("route") == [
        "<sip:p1.example.net;lr>",
        "<sip:p2.example.net;lr>",
        "<sip:p3.example.net;lr>",
    ]
    assert request.values("via") == [
        "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8",
        "SIP/2.0/TCP proxy.example.net:5070;branch=z9hG4bK77ef",
        "SIP/2.0/UDP 192.0.2.4;branch=z9hG4bK11",
    ]


def test_values_does_not_split_inside_quotes() -> None:
    """A comma inside a quoted display name does not split a Contact."""
    assert invite().values("contact") == [
        '"Doe, John" <sip:john@192.0.2.4>',
        "<sip:alice@pc33.atlanta.example.com>",
    ]


def test_values_of_absent_or_empty_header_is_empty() -> None:
    """An absent header and an empty header line both give no elements."""
    message = parse_datagram(b"OPTIONS sip:a@b SIP/2.0\r\nSupported:\r\n\r\n")
    assert message is not None
    assert message.values("supported") == []
    assert message.values("require") == []


def test_has_and_count() -> None:
    """has() and count() count header lines, not comma-separated elements."""
    request = invite()
    assert request.has("route")
    assert not request.has("record-route")
    assert request.count("route") == 2
    assert request.count("via") == 2
    assert request.count("record-route") == 0


def test_single_returns_the_one_value() -> None:
    """single() returns the value of a header present exactly once."""
    assert invite().single("cseq") == "314159 INVITE"


def test_single_raises_400_on_duplicates() -> None:
    """A header that must be unique but appears twice is a 400 naming the header."""
    message = parse_datagram(b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: one\r\ni: two\r\n\r\n")
    assert message is not None
    with pytest.raises(SIPError) as info:
        message.single("call-id")
    assert info.value.status == 400
    assert info.value.reason == "More than one Call-ID header"
    with pytest.raises(SIPError):
        _ = message.call_id


def test_single_raises_400_when_missing() -> None:
    """A missing mandatory header is a 400 naming the header."""
    message = parse_datagram(b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: one\r\n\r\n")
    assert message is not None
    with pytest.raises(SIPError) as info:
        message.single("cseq")
    assert (info.value.status, info.value.reason) == (400, "Missing CSeq header")
    with pytest.raises(SIPError) as info:
        _ = message.cseq
    assert info.value.status == 400


def test_parsed_views() -> None:
    """call_id, cseq, vias, top_via, to/from and their tags are parsed on demand."""
    request = invite()
    assert request.call_id == "a84b4c76e66710"
    assert request.cseq == (314159, "INVITE")
    assert [via.branch for via in request.vias] == ["z9hG4bKnashds8", "z9hG4bK77ef", "z9hG4bK11"]
    assert request.vias[1].transport == "TCP"
    assert request.vias[1].port == 5070
    assert request.top_via.host == "pc33.atlanta.example.com"
    assert request.to_tag is None
    assert request.from_tag == "1928301774"
    assert request.to.display == "Bob"
    assert [str(addr.uri) for addr in request.name_addrs("route")] == [
        "sip:p1.example.net;lr",
        "sip:p2.example.net;lr",
        "sip:p3.example.net;lr",
    ]


def test_top_via_of_a_comma_separated_first_line() -> None:
    """top_via is the first element when the first Via line holds several."""
    message = parse_datagram(
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP first;branch=z9hG4bK1, SIP/2.0/UDP second\r\n\r\n"
    )
    assert message is not None
    assert message.top_via.host == "first"
    assert message.top_via.branch == "z9hG4bK1"


def test_missing_via_is_400() -> None:
    """vias and top_via raise 400 when there is no Via."""
    message = parse_datagram(b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x\r\n\r\n")
    assert message is not None
    for attribute in ("vias", "top_via"):
        with pytest.raises(SIPError) as info:
            getattr(message, attribute)
        assert (info.value.status, info.value.reason) == (400, "Missing Via header")


def test_iterating_yields_header_entries() -> None:
    """Iterating a message gives (canonical name, value, raw line) entries."""
    names = [name for name, _, _ in invite()]
    assert names[:3] == ["via", "via", "max-forwards"]
    assert ("call-id", "a84b4c76e66710", "i: a84b4c76e66710") in list(invite())


# --- writing -------------------------------------------------------------------


def test_untouched_message_serialises_byte_for_byte() -> None:
    """A parsed message with a correct Content-Length comes back exactly as it arrived."""
    assert invite().to_bytes() == INVITE


def test_insert_first_puts_a_line_in_front_and_refreshes_vias() -> None:
    """insert_first() adds a line before all others and invalidates the parsed Via cache."""
    request = invite()
    assert len(request.vias) == 3
    request.insert_first("via", "SIP/2.0/UDP me.example.org;branch=z9hG4bKnew")
    assert header_lines(request)[0] == "Via: SIP/2.0/UDP me.example.org;branch=z9hG4bKnew"
    assert len(request.vias) == 4
    assert request.top_via.branch == "z9hG4bKnew"


def test_insert_before_places_the_line_before_the_first_of_its_name() -> None:
    """insert_before() adds before the first same-named line, or first when there is none."""
    request = invite()
    request.insert_before("route", "<sip:p0.example.net;lr>")
    lines = header_lines(request)
    assert lines[3] == "Route: <sip:p0.example.net;lr>"
    assert lines[4] == "Route: <sip:p1.example.net;lr>, <sip:p2.example.net;lr>"
    request.insert_before("record-route", "<sip:me;lr>")
    assert header_lines(request)[0] == "Record-Route: <sip:me;lr>"


def test_append_adds_a_pretty_line_at_the_end() -> None:
    """append() writes the usual spelling of the name after the other headers."""
    request = invite()
    request.append("www-authenticate", 'Digest realm="x"')
    lines = header_lines(request)
    assert lines[-1] == 'WWW-Authenticate: Digest realm="x"'
    assert lines[-2] == "Content-Length: 4"


def test_set_replaces_every_line_in_place() -> None:
    """set() keeps one line at the position of the first and drops the others."""
    request = invite()
    request.set("route", "<sip:only;lr>")
    assert request.get_all("route") == ["<sip:only;lr>"]
    assert header_lines(request)[3] == "Route: <sip:only;lr>"
    request.set("subject", "new")
    assert request.get("subject") == "new"


def test_set_invalidates_parsed_caches() -> None:
    """Changing CSeq, To or From through set() is seen by the parsed views."""
    request = invite()
    assert request.cseq == (314159, "INVITE")
    assert request.to_tag is None
    request.set("cseq", "1 BYE")
    request.set("to", "<sip:bob@biloxi.example.com>;tag=abc")
    request.set("from", "<sip:x@y>;tag=f2")
    assert request.cseq == (1, "BYE")
    assert request.to_tag == "abc"
    assert request.from_tag == "f2"


def test_remove_drops_every_line() -> None:
    """remove() deletes all lines of a header."""
    request = invite()
    request.remove("route")
    assert not request.has("route")
    assert "Route" not in request.to_bytes().decode("latin-1")


def test_pop_first_value_takes_one_element() -> None:
    """pop_first_value() removes the first element of a list, dropping the line when empty."""
    request = invite()
    assert request.pop_first_value("route") == "<sip:p1.example.net;lr>"
    assert request.get_all("route") == ["<sip:p2.example.net;lr>", "<sip:p3.example.net;lr>"]
    assert request.pop_first_value("route") == "<sip:p2.example.net;lr>"
    assert request.get_all("route") == ["<sip:p3.example.net;lr>"]
    assert request.pop_first_value("route") == "<sip:p3.example.net;lr>"
    assert request.pop_first_value("route") is None
    assert not request.has("route")


def test_pop_first_value_of_via_refreshes_cache() -> None:
    """Popping the top Via updates vias and top_via."""
    request = invite()
    assert request.top_via.branch == "z9hG4bKnashds8"
    request.pop_first_value("via")
    assert request.top_via.branch == "z9hG4bK77ef"
    request.pop_first_value("via")
    assert [via.branch for via in request.vias] == ["z9hG4bK11"]


def test_to_bytes_fixes_content_length_to_the_body() -> None:
    """A changed body gets a matching Content-Length in place of the old line."""
    request = invite()
    request.body = b"v=0\r\no=- 1 1 IN IP4 192.0.2.4\r\n"
    data = request.to_bytes()
    assert b"\r\nContent-Length: 31\r\n\r\nv=0\r\n" in data
    assert data.endswith(request.body)
    again = parse_datagram(data)
    assert again is not None and again.body == request.body


def test_to_bytes_adds_a_missing_content_length() -> None:
    """A message without Content-Length gets one."""
    message = Request("OPTIONS", "sip:a@b", [])
    assert message.to_bytes() == b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 0\r\n\r\n"


def test_to_bytes_keeps_one_content_length() -> None:
    """Duplicate Content-Length lines (agreeing) are written once."""
    message = parse_datagram(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 2\r\nl: 2\r\n\r\nab")
    assert message is not None
    assert message.to_bytes() == b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 2\r\n\r\nab"


def test_header_text_is_start_line_and_headers() -> None:
    """header_text() is the head without the blank line, each line ending in CRLF."""
    request = Request("BYE", "sip:a@b", [("call-id", "x", "Call-ID: x")])
    assert request.header_text() == "BYE sip:a@b SIP/2.0\r\nCall-ID: x\r\n"


def test_request_uri_is_parsed_lazily_and_settable() -> None:
    """uri parses uri_text; assigning uri rewrites the start line."""
    request = invite()
    assert request.uri.host == "biloxi.example.com"
    request.uri = parse_uri("sip:carol@chicago.example.com")
    assert request.uri_text == "sip:carol@chicago.example.com"
    assert request.to_bytes().startswith(b"INVITE sip:carol@chicago.example.com SIP/2.0\r\n")


def test_request_copy_is_independent() -> None:
    """Editing a copy's headers leaves the original untouched."""
    request = invite()
    clone = request.copy()
    clone.insert_first("via", "SIP/2.0/UDP me;branch=z9hG4bKc")
    clone.pop_first_value("route")
    assert request.to_bytes() == INVITE
    assert clone.method == "INVITE" and clone.body == request.body
    assert len(clone.vias) == 4 and len(request.vias) == 3


def test_response_copy_and_start_line() -> None:
    """A response's start line is version, status, reason; copy() is independent."""
    resp = Response(486, "Busy Here", [("call-id", "x", "Call-ID: x")])
    assert resp.start_line() == "SIP/2.0 486 Busy Here"
    clone = resp.copy()
    clone.append("server", "t")
    assert not resp.has("server")
    assert (clone.status, clone.reason) == (486, "Busy Here")
    assert repr(resp) == "<Response 486 Busy Here>"


@pytest.mark.parametrize(
    ("key", "pretty"),
    [
        ("via", "Via"),
        ("call-id", "Call-ID"),
        ("cseq", "CSeq"),
        ("www-authenticate", "WWW-Authenticate"),
        ("record-route", "Record-Route"),
        ("x-my-header", "X-My-Header"),
        ("subject", "Subject"),
    ],
)
def test_pretty_name(key: str, pretty: str) -> None:
    """pretty_name() spells canonical names the usual way."""
    assert pretty_name(key) == pretty


# --- make_response ---------------------------------------------------------------


def test_make_response_copies_via_from_call_id_cseq() -> None:
    """Via lines (in order, as written), From, Call-ID and CSeq are copied; nothing else."""
    resp = make_response(invite(), 486, to_tag="xyz")
    assert resp.status == 486
    assert resp.reason == "Busy Here"
    assert header_lines(resp) == [
        "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8",
        "v: SIP/2.0/TCP proxy.example.net:5070;branch=z9hG4bK77ef , SIP/2.0/UDP 192.0.2.4;branch=z9hG4bK11",
        "To: Bob <sip:bob@biloxi.example.com>;tag=xyz",
        "f: Alice <sip:alice@atlanta.example.com>;tag=1928301774",
        "i: a84b4c76e66710",
        "CSeq: 314159 INVITE",
        "Content-Length: 0",
    ]
    assert resp.body == b""
    assert resp.to_tag == "xyz"


def test_make_response_does_not_tag_100() -> None:
    """A 100 Trying never gets a To tag."""
    resp = make_response(invite(), 100, to_tag="xyz")
    assert resp.reason == "Trying"
    assert resp.to_tag is None
    assert resp.get("to") == "Bob <sip:bob@biloxi.example.com>"


def test_make_response_keeps_an_existing_to_tag() -> None:
    """A request whose To has a tag (in-dialog) keeps that tag, written as it was."""
    request = parse_datagram(
        b"BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        b"To: <sip:a@b> ; TAG=orig\r\nFrom: <sip:c@d>;tag=f\r\nCall-ID: x\r\nCSeq: 2 BYE\r\n\r\n"
    )
    assert isinstance(request, Request)
    resp = make_response(request, 200, to_tag="new")
    assert resp.get_all("to") == ["<sip:a@b> ; TAG=orig"]
    assert "To: <sip:a@b> ; TAG=orig" in header_lines(resp)


def test_make_response_without_to_tag_argument() -> None:
    """Without to_tag the To line is copied unchanged."""
    resp = make_response(invite(), 404)
    assert resp.get("to") == "Bob <sip:bob@biloxi.example.com>"


def test_make_response_reason_and_extra_headers() -> None:
    """A given reason wins; unknown codes say Unknown; extra headers are appended."""
    resp = make_response(invite(), 420, "Bad Extension", extra=(("Unsupported", "foo"), ("Retry-After", "5")))
    assert resp.reason == "Bad Extension"
    assert header_lines(resp)[-3:] == ["Unsupported: foo", "Retry-After: 5", "Content-Length: 0"]
    assert resp.get("unsupported") == "foo"
    assert make_response(invite(), 499).reason == "Unknown"
    assert make_response(invite(), 503).reason == "Service Unavailable"


def test_make_response_shares_nothing_mutable_with_the_request() -> None:
    """Editing the response's headers does not change the request."""
    request = invite()
    resp = make_response(request, 200, to_tag="t")
    resp.pop_first_value("via")
    assert request.to_bytes() == INVITE
