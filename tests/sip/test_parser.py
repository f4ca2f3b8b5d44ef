"""Tests for sipgate_proxy.sip.parser.parse_datagram: round trip, framing by Content-Length, errors."""

from __future__ import annotations

import pytest

from sipgate_proxy.sip.errors import SIPError
from sipgate_proxy.sip.message import Message, Request, Response
from sipgate_proxy.sip.parser import ParseError, ParseLimits, parse_datagram

OPTIONS = (
    b"OPTIONS sip:carol@chicago.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKhjhs8ass877\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: <sip:carol@chicago.example.com>\r\n"
    b"From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710\r\n"
    b"CSeq: 63104 OPTIONS\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

ROUND_TRIP = {
    "plain": OPTIONS,
    "folded": (
        b"INVITE sip:bob@example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1\r\n"
        b"Subject: I know you're there,\r\n"
        b"   pick up the phone\r\n"
        b"\tand talk to me!\r\n"
        b"Call-ID: f1\r\n"
        b"Content-Length: 0\r\n"
        b"\r\n"
    ),
    "compact": (
        b"INVITE sip:bob@example.com SIP/2.0\r\n"
        b"v: SIP/2.0/UDP a.example.com;branch=z9hG4bK2\r\n"
        b"t: <sip:bob@example.com>\r\n"
        b"f: <sip:alice@example.com>;tag=9\r\n"
        b"i: c2\r\n"
        b"m: <sip:alice@192.0.2.1>\r\n"
        b"c: application/sdp\r\n"
        b"k: timer\r\n"
        b"l: 5\r\n"
        b"\r\n"
        b"v=0\r\n"
    ),
    "odd whitespace": (
        b"REGISTER sip:example.com SIP/2.0\r\n"
        b"Via  :SIP/2.0/UDP   a.example.com ; branch = z9hG4bK3\r\n"
        b"To:<sip:a@example.com>\r\n"
        b"From:\t<sip:a@example.com> ;tag=1\r\n"
        b"Call-ID:    c3    \r\n"
        b"CSeq: 1    REGISTER\r\n"
        b"Content-Length:  0 \r\n"
        b"\r\n"
    ),
    "unknown headers": (
        b"MESSAGE sip:bob@example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/TCP a.example.com;branch=z9hG4bK4\r\n"
        b'X-Weird-Header: {"json": [1, 2, 3]} ;;; ,,,\r\n'
        b"P-Asserted-Identity: <sip:+15551234@example.com;user=phone>\r\n"
        b"x-lower: \xe4\xf6\xfc latin-1 bytes\r\n"
        b"Content-Type: text/plain\r\n"
        b"Content-Length: 11\r\n"
        b"\r\n"
        b"hello world"
    ),
    "response": (
        b"SIP/2.0 180 Ringing\r\n"
        b"Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK5;received=192.0.2.1\r\n"
        b"To: <sip:bob@example.com>;tag=8321234356\r\n"
        b"Content-Length: 0\r\n"
        b"\r\n"
    ),
    "empty reason": b"SIP/2.0 200 \r\nVia: SIP/2.0/UDP a;branch=z9hG4bK6\r\nContent-Length: 0\r\n\r\n",
    "utf-8 reason": "SIP/2.0 486 Besetzt, später ☎\r\nContent-Length: 0\r\n\r\n".encode(),
    "nul in body": b"MESSAGE sip:b@example.com SIP/2.0\r\nContent-Length: 8\r\n\r\na\x00b\r\n\r\nc",
    "no headers": b"OPTIONS sip:b@example.com SIP/2.0\r\nContent-Length: 0\r\n\r\n",
}


def parse(data: bytes, limits: ParseLimits | None = None) -> Message:
    message = parse_datagram(data, limits) if limits else parse_datagram(data)
    assert message is not None
    return message


def fails(data: bytes, limits: ParseLimits | None = None) -> SIPError:
    """parse_datagram(data) must raise SIPError; return it."""
    with pytest.raises(SIPError) as info:
        if limits:
            parse_datagram(data, limits)
        else:
            parse_datagram(data)
    return info.value


# --- round trip ------------------------------------------------------------------


@pytest.mark.parametrize("data", list(ROUND_TRIP.values()), ids=list(ROUND_TRIP))
def test_round_trip_is_byte_exact(data: bytes) -> None:
    """A message with a correct Content-Length serialises back to exactly its bytes."""
    assert parse(data).to_bytes() == data


@pytest.mark.parametrize("data", list(ROUND_TRIP.values()), ids=list(ROUND_TRIP))
def test_raw_header_lines_are_kept(data: bytes) -> None:
    """Each header entry keeps its line as written (folding included)."""
    message = parse(data)
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    assert message.header_text() == head + "\r\n"


def test_folded_value_is_joined_with_single_spaces() -> None:
    """Continuation lines are joined into one value; the raw line keeps the folding."""
    message = parse(ROUND_TRIP["folded"])
    assert message.get("subject") == "I know you're there, pick up the phone and talk to me!"
    raw = [raw for name, _, raw in message.headers if name == "subject"]
    assert raw == ["Subject: I know you're there,\r\n   pick up the phone\r\n\tand talk to me!"]


def test_values_are_stripped_and_names_canonical() -> None:
    """Whitespace around names and values is dropped in the parsed entries."""
    message = parse(ROUND_TRIP["odd whitespace"])
    assert message.get("via") == "SIP/2.0/UDP   a.example.com ; branch = z9hG4bK3"
    assert message.top_via.branch == "z9hG4bK3"
    assert message.get("call-id") == "c3"
    assert message.cseq == (1, "REGISTER")


def test_compact_forms_are_canonical() -> None:
    """Compact names are stored under their long canonical names."""
    message = parse(ROUND_TRIP["compact"])
    assert [name for name, _, _ in message.headers] == [
        "via",
        "to",
        "from",
        "call-id",
        "contact",
        "content-type",
        "supported",
        "content-length",
    ]
    assert message.body == b"v=0\r\n"


def test_utf8_reason_phrase_round_trips() -> None:
    """A UTF-8 reason phrase is kept as its octets (latin-1 text) and decodes back."""
    message = parse(ROUND_TRIP["utf-8 reason"])
    assert isinstance(message, Response)
    assert message.status == 486
    assert message.reason.encode("latin-1").decode("utf-8") == "Besetzt, später ☎"


def test_empty_reason_phrase() -> None:
    """A status line with an empty reason phrase is accepted, with or without the space."""
    for line in (b"SIP/2.0 200 ", b"SIP/2.0 200"):
        message = parse(line + b"\r\nContent-Length: 0\r\n\r\n")
        assert isinstance(message, Response)
        assert (message.status, message.reason) == (200, "")


def test_request_fields() -> None:
    """A request line gives method, Request-URI text and version."""
    message = parse(OPTIONS)
    assert isinstance(message, Request)
    assert (message.method, message.uri_text, message.version) == (
        "OPTIONS",
        "sip:carol@chicago.example.com",
        "SIP/2.0",
    )
    assert message.body == b""


def test_version_is_case_insensitive() -> None:
    """sip/2.0 is SIP/2.0 (RFC 3261 7.1); the spelling is kept."""
    message = parse(b"OPTIONS sip:a@b sip/2.0\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(message, Request)
    assert message.version == "sip/2.0"


def test_nul_byte_in_body() -> None:
    """A body framed by Content-Length may hold NUL and CRLFCRLF."""
    message = parse(ROUND_TRIP["nul in body"])
    assert message.body == b"a\x00b\r\n\r\nc"


def test_lf_only_line_endings() -> None:
    """Bare LF line endings are accepted; headers and body come out right."""
    message = parse(
        b"OPTIONS sip:a@b SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\nSubject: one\n two\nContent-Length: 2\n\nab"
    )
    assert isinstance(message, Request)
    assert message.top_via.branch == "z9hG4bK1"
    assert message.get("subject") == "one two"
    assert message.body == b"ab"
    assert message.to_bytes().startswith(b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n")


def test_lf_only_head_with_crlfcrlf_in_the_body() -> None:
    """The head ends at the first blank line, even when the body holds a CRLFCRLF."""
    message = parse(b"MESSAGE sip:a@b SIP/2.0\nVia: SIP/2.0/UDP h\nContent-Length: 8\n\nab\r\n\r\ncd")
    assert [name for name, _, _ in message.headers] == ["via", "content-length"]
    assert message.body == b"ab\r\n\r\ncd"


def test_crlf_head_with_lflf_in_the_body() -> None:
    """A CRLF head is not cut short by an LFLF in its body."""
    message = parse(b"MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nContent-Length: 4\r\n\r\na\n\nb")
    assert message.body == b"a\n\nb"
    assert message.get("content-length") == "4"


def test_head_without_blank_line() -> None:
    """A datagram that ends after its last header line (no blank line) has an empty body."""
    message = parse(b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x\r\n")
    assert message.get("call-id") == "x"
    assert message.body == b""


def test_leading_line_ends_are_skipped() -> None:
    """CRLFs before the start line are ignored."""
    message = parse(b"\r\n\r\n" + OPTIONS)
    assert message.to_bytes() == OPTIONS


def test_empty_header_lines_inside_head_are_skipped() -> None:
    """A whitespace-only line inside the head is ignored."""
    message = parse(b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x\r\n \t\r\nCSeq: 1 OPTIONS\r\n\r\n")
    assert message.call_id == "x"


# --- keep-alives ---------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\r\n", b"\r\n\r\n", b"\n", b"\r"])
def test_keep_alive_is_none(data: bytes) -> None:
    """A datagram of only CR/LF (or nothing) is a keep-alive: None."""
    assert parse_datagram(data) is None


# --- Content-Length on datagrams -----------------------------------------------------


def test_missing_content_length_takes_the_rest() -> None:
    """Without Content-Length the body is the rest of the datagram."""
    message = parse(b"MESSAGE sip:a@b SIP/2.0\r\nCall-ID: x\r\n\r\nall of\r\nthis")
    assert message.body == b"all of\r\nthis"


def test_smaller_content_length_ignores_trailing_bytes() -> None:
    """Octets beyond Content-Length are ignored (RFC 3261 18.3)."""
    message = parse(b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 3\r\n\r\nabcdef")
    assert message.body == b"abc"
    assert message.to_bytes() == b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 3\r\n\r\nabc"


def test_larger_content_length_is_400_with_partial_message() -> None:
    """A Content-Length beyond the datagram is a 400 that still carries the request to answer."""
    error = fails(b"MESSAGE sip:a@b SIP/2.0\r\nCall-ID: x\r\nContent-Length: 10\r\n\r\nabc")
    assert isinstance(error, ParseError)
    assert error.status == 400
    assert error.reason == "Content-Length larger than the datagram"
    assert isinstance(error.message, Request)
    assert error.message.call_id == "x"


@pytest.mark.parametrize("value", [b"-1", b"abc", b"1.5", b"0x10", b"\xb2", b"", b"1 2"])
def test_bad_content_length_is_400(value: bytes) -> None:
    """A negative, non-digit or empty Content-Length is a 400 with the partial request."""
    error = fails(b"MESSAGE sip:a@b SIP/2.0\r\nCall-ID: x\r\nContent-Length: " + value + b"\r\n\r\nabc")
    assert isinstance(error, ParseError)
    assert error.status == 400
    assert error.reason.startswith("Bad Content-Length")
    assert isinstance(error.message, Request)


def test_absurdly_long_content_length_is_400() -> None:
    """A Content-Length of thousands of digits is a 400, not a ValueError from int()."""
    error = fails(b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\nabc")
    assert isinstance(error, ParseError)
    assert error.status == 400
    assert error.reason.startswith("Bad Content-Length")
    error = fails(b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 99999999999\r\n\r\nabc")
    assert error.reason.startswith("Bad Content-Length")


def test_ten_digit_content_length_is_too_large_for_the_datagram() -> None:
    """A ten-digit Content-Length is a number, just larger than the datagram; leading zeros are fine."""
    error = fails(b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 9999999999\r\n\r\nabc")
    assert error.reason == "Content-Length larger than the datagram"
    message = parse(b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 000000000000000000002\r\n\r\nabc")
    assert message.body == b"ab"


def test_conflicting_content_lengths_are_400() -> None:
    """Two Content-Length headers with different values are a 400."""
    error = fails(b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 2\r\nl: 3\r\n\r\nabc")
    assert isinstance(error, ParseError)
    assert (error.status, error.reason) == (400, "Conflicting Content-Length headers")


def test_agreeing_content_lengths_are_accepted() -> None:
    """Two Content-Length headers with the same value are harmless."""
    assert parse(b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 2\r\nl: 02\r\n\r\nabc").body == b"ab"


def test_content_length_error_on_a_response_has_the_response() -> None:
    """A framing error in a response keeps the partial response."""
    error = fails(b"SIP/2.0 200 OK\r\nContent-Length: 9\r\n\r\nab")
    assert isinstance(error, ParseError)
    assert isinstance(error.message, Response)


# --- limits -----------------------------------------------------------------------------


def test_message_size_limit_is_513() -> None:
    """A datagram over max_message_size is a 513; one at the limit is fine."""
    limits = ParseLimits(max_message_size=len(OPTIONS))
    assert parse(OPTIONS, limits).to_bytes() == OPTIONS
    error = fails(OPTIONS + b"x", limits)
    assert error.status == 513


def test_header_count_limit_is_513() -> None:
    """More header lines than max_headers is a 513; exactly max_headers is fine."""
    limits = ParseLimits(max_headers=8)
    assert OPTIONS.count(b"\r\n") - 2 == 7
    parse(OPTIONS.replace(b"Max-Forwards", b"Subject: s\r\nMax-Forwards"), limits)
    error = fails(OPTIONS.replace(b"Max-Forwards", b"Subject: s\r\nX: 1\r\nMax-Forwards"), limits)
    assert (error.status, error.reason) == (513, "More than 8 header lines")


def test_folded_lines_count_as_one_header() -> None:
    """Continuation lines do not count towards max_headers."""
    limits = ParseLimits(max_headers=2)
    message = parse(b"OPTIONS sip:a@b SIP/2.0\r\nSubject: a\r\n b\r\n c\r\n d\r\nCall-ID: x\r\n\r\n", limits)
    assert message.get("subject") == "a b c d"


def test_header_line_length_limit_is_400() -> None:
    """A header line longer than max_line_length is a 400; one at the limit is fine."""
    limits = ParseLimits(max_line_length=40)
    line = b"Subject: " + b"x" * 31
    assert len(line) == 40
    parse(b"OPTIONS sip:a@b SIP/2.0\r\n" + line + b"\r\n\r\n", limits)
    error = fails(b"OPTIONS sip:a@b SIP/2.0\r\n" + line + b"x\r\n\r\n", limits)
    assert (error.status, error.reason) == (400, "Header line longer than 40 octets")


def test_long_request_line_is_414_and_long_status_line_400() -> None:
    """A start line over max_line_length: 414 for a request, 400 for a response."""
    limits = ParseLimits(max_line_length=30)
    assert fails(b"OPTIONS sip:" + b"a" * 30 + b"@b SIP/2.0\r\n\r\n", limits).status == 414
    assert fails(b"SIP/2.0 200 " + b"O" * 30 + b"\r\n\r\n", limits).status == 400


# --- start-line errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        b"INVITE  sip:bob@example.com SIP/2.0",
        b"INVITE sip:bob@example.com  SIP/2.0",
        b"INVITE sip:bob@example.com SIP/2.0 ",
        b"INVITE\tsip:bob@example.com SIP/2.0",
    ],
    ids=["two spaces before uri", "two spaces before version", "trailing space", "tab"],
)
def test_sloppy_request_line_is_400_with_partial_request(line: bytes) -> None:
    """Extra or wrong whitespace in the Request-Line is a 400 that can still be answered."""
    error = fails(line + b"\r\nCall-ID: x\r\n\r\n")
    assert isinstance(error, ParseError)
    assert (error.status, error.reason) == (400, "Malformed Request-Line")
    assert isinstance(error.message, Request)
    assert error.message.method == "INVITE"
    assert error.message.call_id == "x"


def test_request_line_without_version_is_400() -> None:
    """A Request-Line with two elements is a 400."""
    error = fails(b"INVITE sip:bob@example.com\r\nCall-ID: x\r\n\r\n")
    assert error.status == 400


def test_unsupported_version_is_505_with_partial_request() -> None:
    """SIP/7.0 is a 505 carrying the request, so that it can be answered."""
    error = fails(b"INVITE sip:bob@example.com SIP/7.0\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n")
    assert isinstance(error, ParseError)
    assert error.status == 505
    assert isinstance(error.message, Request)
    assert error.message.cseq == (1, "INVITE")


def test_request_uri_in_angle_brackets_is_400() -> None:
    """A Request-URI written as <sip:...> is a 400 with the partial request."""
    error = fails(b"INVITE <sip:bob@example.com> SIP/2.0\r\nCall-ID: x\r\n\r\n")
    assert isinstance(error, ParseError)
    assert (error.status, error.reason) == (400, "Request-URI in angle brackets")
    assert isinstance(error.message, Request)


def test_bad_method_token_is_400() -> None:
    """A method with characters outside token is a 400."""
    assert fails(b"INV(TE sip:bob@example.com SIP/2.0\r\n\r\n").status == 400


@pytest.mark.parametrize(
    "line",
    [b"SIP/2.0 20 OK", b"SIP/2.0 2000 OK", b"SIP/2.0 2x0 OK", b"SIP/2.0", b"SIP/X 200 OK", b"SIP/2.0  200 OK"],
)
def test_bad_status_line_is_400(line: bytes) -> None:
    """A malformed status line is a 400."""
    error = fails(line + b"\r\nContent-Length: 0\r\n\r\n")
    assert error.status == 400


@pytest.mark.parametrize("code", [b"700", b"999", b"099", b"000"])
def test_status_code_out_of_range_is_400(code: bytes) -> None:
    """Status codes outside 100-699 are rejected."""
    error = fails(b"SIP/2.0 " + code + b" Odd\r\nContent-Length: 0\r\n\r\n")
    assert error.status == 400
    assert "out of range" in error.reason


@pytest.mark.parametrize("code", [100, 199, 699])
def test_status_code_range_edges_are_accepted(code: int) -> None:
    """100 and 699 are the edges of the valid range."""
    message = parse(b"SIP/2.0 %d X\r\nContent-Length: 0\r\n\r\n" % code)
    assert isinstance(message, Response) and message.status == code


# --- header-line errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "reason"),
    [
        (b"OPTIONS sip:a@b SIP/2.0\r\n folded first\r\n", "Continuation line before the first header"),
        (b"OPTIONS sip:a@b SIP/2.0\r\nno colon here\r\n", "Malformed header line 'no colon here'"),
        (b"OPTIONS sip:a@b SIP/2.0\r\n: no name\r\n", "Malformed header line ': no name'"),
        (b"OPTIONS sip:a@b SIP/2.0\r\nBad Name: x\r\n", "Bad header name 'Bad Name'"),
        (b"OPTIONS sip:a@b SIP/2.0\r\nBad(Name): x\r\n", "Bad header name 'Bad(Name)'"),
    ],
)
def test_bad_header_lines_are_400(head: bytes, reason: str) -> None:
    """Malformed header lines are a 400 that names the problem."""
    error = fails(head + b"\r\n")
    assert (error.status, error.reason) == (400, reason)


# --- byte by byte ----------------------------------------------------------------------------


@pytest.mark.parametrize("data", list(ROUND_TRIP.values()), ids=list(ROUND_TRIP))
def test_every_truncation_parses_or_raises_sip_error(data: bytes) -> None:
    """Cut at every byte, a datagram gives a message, None or SIPError, never another exception."""
    for end in range(len(data) + 1):
        try:
            parse_datagram(data[:end])
        except SIPError:
            pass


@pytest.mark.parametrize("data", list(ROUND_TRIP.values()), ids=list(ROUND_TRIP))
def test_truncated_body_is_a_content_length_error(data: bytes) -> None:
    """A datagram cut inside its Content-Length body is a 400 with the partial message."""
    body_start = data.index(b"\r\n\r\n") + 4
    for end in range(body_start, len(data)):
        error = fails(data[:end])
        assert isinstance(error, ParseError)
        assert error.reason == "Content-Length larger than the datagram"
        assert error.message is not None
