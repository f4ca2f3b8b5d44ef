"""Property tests: whole messages survive parse -> serialise -> parse unchanged."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sipgate_proxy.sip.errors import SIPError
from sipgate_proxy.sip.message import Request, Response
from sipgate_proxy.sip.parser import StreamFramer, parse_datagram

TOKEN = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~", min_size=1, max_size=12
)
VALUE = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"), max_size=40
).map(str.strip)
NAMES = st.sampled_from(["Via", "v", "To", "t", "From", "f", "Call-ID", "i", "CSeq", "Subject", "X-Custom", "Route"])


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    headers = draw(st.lists(st.tuples(st.one_of(NAMES, TOKEN), VALUE), max_size=15))
    folded = draw(st.booleans())
    body = draw(st.binary(max_size=200))
    if draw(st.booleans()):
        start = f"{draw(TOKEN).upper()} sip:{draw(TOKEN)}@example.com SIP/2.0"
    else:
        start = f"SIP/2.0 {draw(st.integers(100, 699))} {draw(VALUE)}"
    lines = [start]
    for name, value in headers:
        if name.lower() in ("content-length", "l"):
            continue
        if folded and " " in value:
            head, _, tail = value.partition(" ")
            lines.append(f"{name}: {head}\r\n  {tail}")
        else:
            lines.append(f"{name}: {value}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@settings(max_examples=300, deadline=None)
@given(messages())
def test_untouched_message_round_trips_byte_for_byte(data: bytes) -> None:
    """A message the proxy does not change is written back exactly as it came."""
    try:
        message = parse_datagram(data)
    except SIPError:
        return
    assert message is not None
    assert message.to_bytes() == data


@settings(max_examples=300, deadline=None)
@given(messages())
def test_parse_serialise_parse_is_stable(data: bytes) -> None:
    """Parsing what was serialised gives the same start line, headers and body."""
    try:
        first = parse_datagram(data)
    except SIPError:
        return
    assert first is not None
    second = parse_datagram(first.to_bytes())
    assert second is not None
    assert [(k, v) for k, v, _ in second.headers] == [(k, v) for k, v, _ in first.headers]
    assert second.body == first.body
    assert second.start_line() == first.start_line()
    assert type(second) is type(first)
    assert isinstance(second, Request | Response)


@settings(max_examples=100, deadline=None)
@given(st.lists(messages(), min_size=1, max_size=4), st.data())
def test_stream_framing_does_not_depend_on_segmentation(batch: list[bytes], data: st.DataObject) -> None:
    """The framer yields the same messages however the stream is cut into segments."""
    stream = b"".join(batch)
    whole = StreamFramer().feed(stream)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    framer = StreamFramer()
    pieces = []
    last = 0
    for cut in [*cuts, len(stream)]:
        pieces.extend(framer.feed(stream[last:cut]))
        last = cut
    assert [m.to_bytes() if not isinstance(m, SIPError) else m.reason for m in pieces] == [
        m.to_bytes() if not isinstance(m, SIPError) else m.reason for m in whole
    ]
