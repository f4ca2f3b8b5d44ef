"""Tests for sipgate_proxy.sip.parser.StreamFramer: framing a TCP/TLS byte stream by Content-Length."""

from __future__ import annotations

import pytest

from sipgate_proxy.sip.errors import FramingError, SIPError
from sipgate_proxy.sip.message import Message, Request, Response
from sipgate_proxy.sip.parser import ParseError, ParseLimits, StreamFramer

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP client.example.com;branch=z9hG4bK74bf9\r\n"
    b"Subject: folded\r\n"
    b" over two lines\r\n"
    b"Call-ID: 3848276298220188511@example.com\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 12\r\n"
    b"\r\n"
    b"v=0\r\n\r\nx\x00\n\ny"
)
OK = (
    b"SIP/2.0 200 OK\r\n"
    b"v: SIP/2.0/TCP client.example.com;branch=z9hG4bK74bf9\r\n"
    b"i: 3848276298220188511@example.com\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"l: 0\r\n"
    b"\r\n"
)
BYE = (
    b"BYE sip:alice@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP server.example.com;branch=z9hG4bK776\r\n"
    b"Call-ID: 3848276298220188511@example.com\r\n"
    b"CSeq: 2 BYE\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

Item = Message | ParseError


def summary(items: list[Item]) -> list[tuple[str, object]]:
    """Comparable description of framer output: message bytes or error status/reason."""
    result: list[tuple[str, object]] = []
    for item in items:
        if isinstance(item, ParseError):
            result.append(("error", (item.status, item.reason)))
        else:
            result.append((type(item).__name__, item.to_bytes()))
    return result


def feed_all(chunks: list[bytes], limits: ParseLimits | None = None) -> tuple[list[Item], StreamFramer]:
    framer = StreamFramer(limits) if limits else StreamFramer()
    items: list[Item] = []
    for chunk in chunks:
        items.extend(framer.feed(chunk))
    return items, framer


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


# --- whole input ------------------------------------------------------------------------


def test_many_messages_in_one_feed() -> None:
    """Several messages in one chunk all come out, in order, byte for byte."""
    items, framer = feed_all([INVITE + OK + BYE])
    assert summary(items) == [("Request", INVITE), ("Response", OK), ("Request", BYE)]
    assert framer.buffered == 0


def test_body_is_framed_by_content_length() -> None:
    """The body may hold CRLFCRLF, LFLF and NUL; Content-Length alone decides where it ends."""
    items, _ = feed_all([INVITE])
    assert isinstance(items[0], Request)
    assert items[0].body == b"v=0\r\n\r\nx\x00\n\ny"
    assert items[0].get("subject") == "folded over two lines"


def test_partial_message_is_kept() -> None:
    """An incomplete message stays in the buffer until the rest arrives."""
    framer = StreamFramer()
    assert framer.feed(INVITE[:-3]) == []
    assert framer.buffered == len(INVITE) - 3
    assert summary(framer.feed(INVITE[-3:] + OK[:10])) == [("Request", INVITE)]
    assert framer.buffered == 10


def test_missing_content_length_means_empty_body() -> None:
    """On a stream, a message without Content-Length has an empty body; what follows is the next message."""
    bare = b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x\r\n\r\n"
    items, _ = feed_all([bare + BYE])
    assert [type(item) for item in items] == [Request, Request]
    assert items[0].body == b""
    assert summary(items[1:]) == [("Request", BYE)]


def test_lf_only_message_then_crlf_message() -> None:
    """An LF-only message followed by a CRLF one in the same feed frames both."""
    lf_only = b"OPTIONS sip:a@b SIP/2.0\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\nContent-Length: 0\n\n"
    items, _ = feed_all([lf_only + BYE])
    assert [type(item) for item in items] == [Request, Request]
    assert items[0].top_via.branch == "z9hG4bK1"
    assert summary(items[1:]) == [("Request", BYE)]
    assert summary(feed_all(bytewise(lf_only + BYE))[0]) == summary(items)


# --- byte by byte ------------------------------------------------------------------------


@pytest.mark.parametrize("data", [INVITE, OK, BYE, INVITE + OK + BYE], ids=["invite", "ok", "bye", "three"])
def test_one_byte_at_a_time(data: bytes) -> None:
    """Feeding one byte at a time gives the same messages as one feed."""
    whole, _ = feed_all([data])
    items, framer = feed_all(bytewise(data))
    assert summary(items) == summary(whole)
    assert framer.buffered == 0


def test_every_split_point_of_two_messages() -> None:
    """Splitting a two-message stream at any byte gives the same two messages."""
    stream = INVITE + b"\r\n\r\n" + OK
    expected = [("Request", INVITE), ("Response", OK)]
    for cut in range(len(stream) + 1):
        items, framer = feed_all([stream[:cut], stream[cut:]])
        assert summary(items) == expected, cut
        assert framer.pings == 1, cut
        assert framer.buffered == 0


def test_every_split_point_of_mixed_line_endings() -> None:
    """An LF-only message followed by a CRLF one frames the same at every split point."""
    lf_only = b"OPTIONS sip:a@b SIP/2.0\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\nContent-Length: 2\n\n\r\n"
    stream = lf_only + b"\r\n" + OK
    expected = summary(feed_all([stream])[0])
    assert [kind for kind, _ in expected] == ["Request", "Response"]
    for first in range(len(stream) + 1):
        for second in range(first, len(stream) + 1, 7):
            items, _ = feed_all([stream[:first], stream[first:second], stream[second:]])
            assert summary(items) == expected, (first, second)


def test_every_pair_of_split_points() -> None:
    """Splitting a message in three at any two points gives the same message."""
    for first in range(0, len(OK) + 1):
        for second in range(first, len(OK) + 1):
            items, _ = feed_all([OK[:first], OK[first:second], OK[second:]])
            assert summary(items) == [("Response", OK)], (first, second)


# --- keep-alives -------------------------------------------------------------------------


def test_crlf_between_messages_is_skipped() -> None:
    """Stray CRLFs before and between messages are dropped."""
    items, framer = feed_all([b"\r\n" + INVITE + b"\r\n" + OK + b"\r\n"])
    assert summary(items) == [("Request", INVITE), ("Response", OK)]
    assert framer.pings == 0
    assert framer.buffered == 0


@pytest.mark.parametrize(
    ("chunks", "pings"),
    [
        ([b"\r\n\r\n"], 1),
        ([b"\r\n", b"\r\n"], 1),
        (bytewise(b"\r\n\r\n"), 1),
        ([b"\r\n"], 0),
        ([b"\n\n"], 1),
        ([b"\r\n\r\n\r\n\r\n"], 2),
        ([b"\r\n\r\n", b"\r\n\r\n"], 2),
        ([b"\r\n\r\n" + BYE + b"\r\n\r\n"], 2),
        ([b"\r\n" + BYE + b"\r\n"], 0),
        ([b"\r\n", BYE, b"\r\n"], 0),
    ],
    ids=[
        "double crlf",
        "split in two",
        "byte by byte",
        "single crlf",
        "double lf",
        "two pings",
        "two pings in two feeds",
        "around a message",
        "single crlfs around a message",
        "single crlfs in separate feeds",
    ],
)
def test_pings_are_counted_per_double_crlf(chunks: list[bytes], pings: int) -> None:
    """Each double CRLF keep-alive (RFC 5626 4.4.1) counts one ping, however it was split."""
    items, framer = feed_all(chunks)
    assert framer.pings == pings
    assert framer.buffered == 0
    assert all(isinstance(item, Request) for item in items)


# --- framing errors ------------------------------------------------------------------------


def test_header_section_over_the_limit() -> None:
    """A header section that grows past max_message_size without ending is a FramingError."""
    limits = ParseLimits(max_message_size=1024)
    framer = StreamFramer(limits)
    head = b"OPTIONS sip:a@b SIP/2.0\r\n" + b"X-Filler: " + b"y" * 2000
    assert framer.feed(head[:1024]) == []
    with pytest.raises(FramingError) as info:
        framer.feed(head[1024:1025])
    assert info.value.status == 400
    assert "Header section larger than 1024" in info.value.reason


def test_header_section_trickled_one_byte_at_a_time() -> None:
    """A head fed byte by byte up to the default limit is searched once, then refused past the limit."""
    framer = StreamFramer()
    head = b"OPTIONS sip:a@b SIP/2.0\r\nX-Filler: " + b"y" * 65535
    for index in range(65535):
        assert framer.feed(head[index : index + 1]) == []
    assert framer.buffered == 65535
    with pytest.raises(FramingError):
        framer.feed(head[65535:65536])


def test_content_length_over_the_limit() -> None:
    """A Content-Length that makes the message larger than the limit is a FramingError at once."""
    limits = ParseLimits(max_message_size=1024)

    def head(length: int) -> bytes:
        return b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: %d\r\n\r\n" % length

    head_size = len(head(999))  # three digits, like the lengths below
    exact = head(1024 - head_size)
    items, _ = feed_all([exact + b"z" * (1024 - head_size)], limits)
    assert len(items) == 1 and isinstance(items[0], Request)
    assert len(items[0].to_bytes()) == 1024
    with pytest.raises(FramingError) as info:
        StreamFramer(limits).feed(head(1025 - head_size))
    assert info.value.reason == "Message larger than 1024 octets"
    with pytest.raises(FramingError):
        StreamFramer().feed(head(10_000_000))


@pytest.mark.parametrize("value", [b"-1", b"-0", b"ten", b"1e3", b""])
def test_bad_content_length_is_a_framing_error(value: bytes) -> None:
    """A negative or non-numeric Content-Length cannot be framed."""
    with pytest.raises(FramingError) as info:
        StreamFramer().feed(b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: " + value + b"\r\n\r\nabc")
    assert info.value.reason.startswith("Bad Content-Length")


def test_absurdly_long_content_length_is_a_framing_error() -> None:
    """Thousands of digits in Content-Length are a FramingError, not a ValueError from int()."""
    with pytest.raises(FramingError) as info:
        StreamFramer().feed(b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n")
    assert info.value.reason.startswith("Bad Content-Length")


def test_conflicting_content_lengths_are_a_framing_error() -> None:
    """Two different Content-Length values cannot be framed."""
    with pytest.raises(FramingError):
        StreamFramer().feed(b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 1\r\nl: 2\r\n\r\nab")


def test_bad_header_line_is_a_framing_error() -> None:
    """A head that cannot be split into header lines cannot be framed."""
    with pytest.raises(FramingError):
        StreamFramer().feed(b"OPTIONS sip:a@b SIP/2.0\r\nno colon\r\n\r\n")


def test_header_limits_are_framing_errors() -> None:
    """Too many header lines or a line too long end the stream."""
    limits = ParseLimits(max_headers=8, max_line_length=128)
    many = b"OPTIONS sip:a@b SIP/2.0\r\n" + b"X-A: 1\r\n" * 9 + b"\r\n"
    with pytest.raises(FramingError):
        StreamFramer(limits).feed(many)
    long_line = b"OPTIONS sip:a@b SIP/2.0\r\nSubject: " + b"s" * 200 + b"\r\n\r\n"
    with pytest.raises(FramingError):
        StreamFramer(limits).feed(long_line)


def test_framing_error_is_a_sip_error() -> None:
    """FramingError is a SIPError with status 400 (the transport catches SIPError)."""
    error = FramingError("why")
    assert isinstance(error, SIPError)
    assert (error.status, error.reason) == (400, "why")


# --- parse errors inside a framed message ------------------------------------------------------


def test_bad_version_comes_out_as_parse_error_and_stream_goes_on() -> None:
    """A framed request with SIP/7.0 is a 505 ParseError item (with the request); the next message follows."""
    bad = b"INVITE sip:bob@example.com SIP/7.0\r\nCall-ID: x\r\nContent-Length: 3\r\n\r\nabc"
    items, framer = feed_all([bad + OK])
    assert len(items) == 2
    error = items[0]
    assert isinstance(error, ParseError)
    assert error.status == 505
    assert isinstance(error.message, Request)
    assert error.message.body == b"abc"
    assert summary(items[1:]) == [("Response", OK)]
    assert framer.buffered == 0


def test_sloppy_request_line_comes_out_as_parse_error() -> None:
    """A framed request with a malformed Request-Line is a 400 ParseError item."""
    items, _ = feed_all([b"INVITE  sip:bob@example.com SIP/2.0\r\nContent-Length: 0\r\n\r\n" + BYE])
    assert isinstance(items[0], ParseError)
    assert (items[0].status, items[0].reason) == (400, "Malformed Request-Line")
    assert isinstance(items[0].message, Request)
    assert summary(items[1:]) == [("Request", BYE)]


def test_bad_status_line_comes_out_as_parse_error_without_message() -> None:
    """A framed response with a bad status code is a ParseError with no message; the stream goes on."""
    items, _ = feed_all([b"SIP/2.0 999 Odd\r\nContent-Length: 0\r\n\r\n" + OK])
    assert isinstance(items[0], ParseError)
    assert items[0].status == 400
    assert items[0].message is None
    assert isinstance(items[1], Response)


def test_parse_error_items_byte_by_byte() -> None:
    """Parse errors inside a stream come out the same when fed one byte at a time."""
    stream = b"INVITE sip:b SIP/7.0\r\nContent-Length: 1\r\n\r\nz" + b"\r\n\r\n" + OK + b"SIP/2.0 7 x\r\n\r\n" + BYE
    whole, whole_framer = feed_all([stream])
    items, framer = feed_all(bytewise(stream))
    assert summary(items) == summary(whole)
    assert [kind for kind, _ in summary(items)] == ["error", "Response", "error", "Request"]
    assert framer.pings == whole_framer.pings == 1


def test_framing_error_carries_the_messages_framed_before_it() -> None:
    """The FramingError lists the complete messages that preceded the fault in the same feed."""
    good = (
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nCall-ID: 1\r\n"
        b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    bad = good.replace(b"Content-Length: 0", b"Content-Length: -5")
    with pytest.raises(FramingError) as info:
        StreamFramer().feed(good + good + bad)
    assert [m.to_bytes() for m in info.value.messages] == [good, good]
