"""Bytes -> messages: datagram parsing and a stream framer.

Errors carry what the element should answer. When the start line and headers
could be read before the error was found, :class:`ParseError` keeps the
partial message so that a request can still be answered (400, 505 ...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import FramingError, SIPError
from .headers import COMPACT_FORMS
from .message import Header, Message, Request, Response

_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
_VERSION = re.compile(r"SIP/(\d+)\.(\d+)\Z", re.IGNORECASE)
_STATUS = re.compile(r"(\d{3})\Z")


@dataclass(frozen=True, slots=True)
class ParseLimits:
    max_message_size: int = 65535
    max_headers: int = 128
    max_line_length: int = 8192


DEFAULT_LIMITS = ParseLimits()


class ParseError(SIPError):
    """The message is malformed; ``message`` is what could be read of it."""

    def __init__(self, status: int, reason: str, message: Message | None = None) -> None:
        super().__init__(status, reason)
        self.message = message


_canonical_cache: dict[str, str] = {}


def _canonical_name(name: str) -> str:
    """Check a header name as written and map it to its canonical form."""
    stripped = name.rstrip(" \t")
    if not _TOKEN.match(stripped):
        raise SIPError(400, f"Bad header name {stripped[:40]!r}")
    key = stripped.lower()
    key = COMPACT_FORMS.get(key, key)
    if len(_canonical_cache) < 4096:
        _canonical_cache[name] = key
    return key


def _split_head(head: str, eol: str, limits: ParseLimits) -> tuple[str, list[Header]]:
    """Start line and header entries, with folded lines joined."""
    lines = head.split(eol)
    start = lines[0]
    max_line = limits.max_line_length
    if len(start) > max_line:
        raise SIPError(414 if not start.startswith("SIP/") else 400, "Start line too long")
    headers: list[Header] = []
    append = headers.append
    cached = _canonical_cache.get
    for line in lines[1:]:
        if len(line) > max_line:
            raise SIPError(400, f"Header line longer than {max_line} octets")
        first = line[:1]
        if first == " " or first == "\t":
            if not headers:
                raise SIPError(400, "Continuation line before the first header")
            key, value, raw = headers[-1]
            value = f"{value} {line.strip()}".strip()
            headers[-1] = (key, value, raw + eol + line)
            continue
        name, colon, rest = line.partition(":")
        if not colon or not name:
            if not line.strip():
                continue
            raise SIPError(400, f"Malformed header line {line[:40]!r}")
        append((cached(name) or _canonical_name(name), rest.strip(), line))
    if len(headers) > limits.max_headers:
        raise SIPError(513, f"More than {limits.max_headers} header lines")
    return start, headers


def _content_length(headers: list[Header]) -> int | None:
    found: int | None = None
    for key, value, _ in headers:
        if key == "content-length":
            text = value.strip()
            # more than 10 significant digits is never a SIP body (and int() refuses > 4300)
            if not text.isdigit() or not text.isascii() or len(text.lstrip("0")) > 10:
                raise FramingError(f"Bad Content-Length {text[:20]!r}")
            length = int(text)
            if found is not None and found != length:
                raise FramingError("Conflicting Content-Length headers")
            found = length
    return found


def _make(start: str, headers: list[Header], body: bytes) -> Message:
    if start.startswith("SIP/") or start[:4].upper() == "SIP/":
        parts = start.split(" ", 2)
        if len(parts) < 3:
            if len(parts) == 2:
                parts.append("")
            else:
                raise SIPError(400, "Malformed status line")
        version, code, reason = parts
        if not _VERSION.match(version) or not _STATUS.match(code):
            raise SIPError(400, "Malformed status line")
        status = int(code)
        if not 100 <= status <= 699:
            raise SIPError(400, f"Status code {status} out of range")
        return Response(status, reason, headers, body, version)
    parts = start.split(" ")
    if len(parts) != 3 or not all(parts):
        message = _loose_request(start, headers, body)
        raise ParseError(400, "Malformed Request-Line", message)
    method, uri_text, version = parts
    if not _TOKEN.match(method):
        raise SIPError(400, "Bad method token")
    request = Request(method, uri_text, headers, body, version)
    if version != "SIP/2.0":
        if _VERSION.match(version) and version.upper() == "SIP/2.0":
            request.version = version
        else:
            raise ParseError(505, f"Version {version[:16]} Not Supported", request)
    if "<" in uri_text or ">" in uri_text:
        raise ParseError(400, "Request-URI in angle brackets", request)
    return request


def _loose_request(start: str, headers: list[Header], body: bytes) -> Request | None:
    """A request built from a sloppy Request-Line, only to answer it."""
    parts = start.split()
    if len(parts) >= 2 and _TOKEN.match(parts[0]):
        return Request(parts[0], parts[1], headers, body, parts[-1])
    return None


def _find_head(data: bytes | bytearray, start: int) -> tuple[int, int, str]:
    """(end of head, start of body, line ending) or (-1, -1, '').

    The earlier blank line wins: an LF-only head followed by CRLFCRLF (in
    its body, or in the next message on a stream) ends at its own LFLF.
    """
    end = data.find(b"\r\n\r\n", start)
    lf_end = data.find(b"\n\n", start) if end < 0 else data.find(b"\n\n", start, end)
    if lf_end >= 0:
        return lf_end, lf_end + 2, "\n"
    if end >= 0:
        return end, end + 4, "\r\n"
    return -1, -1, ""


def parse_datagram(data: bytes, limits: ParseLimits = DEFAULT_LIMITS) -> Message | None:
    """One message from one datagram (RFC 3261 18.3).

    Returns None for a keep-alive (only CR/LF). Octets after Content-Length
    are ignored; a Content-Length larger than the datagram is an error.
    """
    if len(data) > limits.max_message_size:
        raise SIPError(513, f"Message larger than {limits.max_message_size} octets")
    offset = 0
    size = len(data)
    while offset < size and data[offset] in (13, 10):
        offset += 1
    if offset == size:
        return None
    head_end, body_start, eol = _find_head(data, offset)
    if head_end < 0:
        head = data[offset:].decode("latin-1").rstrip("\r\n")
        eol = "\r\n" if "\r\n" in head else "\n"
        body_start = size
    else:
        head = data[offset:head_end].decode("latin-1")
    start, headers = _split_head(head, eol, limits)
    try:
        length = _content_length(headers)
    except SIPError as error:
        raise ParseError(error.status, error.reason, _partial(start, headers)) from None
    available = size - body_start
    if length is None:
        body = data[body_start:]
    elif length > available:
        raise ParseError(400, "Content-Length larger than the datagram", _partial(start, headers))
    else:
        body = data[body_start : body_start + length]
    return _make(start, headers, body)


def _partial(start: str, headers: list[Header]) -> Message | None:
    try:
        return _make(start, headers, b"")
    except ParseError as error:
        return error.message
    except SIPError:
        return None


class StreamFramer:
    """Splits a byte stream (TCP, TLS) into messages by Content-Length.

    ``feed`` returns the complete messages so far and keeps the rest; a
    message that was framed but could not be parsed comes as its
    :class:`ParseError`, and the stream goes on. A
    ``FramingError`` means the stream cannot be resynchronised: close it.
    CRLF keep-alives between messages are counted in ``pings`` (a double CRLF,
    RFC 5626 section 4.4.1, wants a single CRLF back).
    """

    def __init__(self, limits: ParseLimits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self._buffer = bytearray()
        self._need: int | None = None  # total length of the message in the buffer
        self._head: tuple[str, list[Header]] | None = None
        self._body_start = 0
        self.pings = 0
        self._lfs = 0  # line feeds of a keep-alive run not yet counted as a ping
        self._scanned = 0  # bytes of a partial head already searched for its blank line

    def feed(self, data: bytes) -> list[Message | ParseError]:
        messages: list[Message | ParseError] = []
        try:
            self._feed(data, messages)
        except FramingError as error:
            # what was complete before the fault is not lost
            error.messages = messages
            raise
        return messages

    def _feed(self, data: bytes, messages: list[Message | ParseError]) -> None:
        buffer = self._buffer
        buffer += data
        limits = self.limits
        while buffer:
            if self._head is None:
                # keep-alives and stray line ends between messages
                skip = 0
                while skip < len(buffer) and buffer[skip] in (13, 10):
                    skip += 1
                if skip:
                    # every two line ends are one ping, however the run was split into feeds
                    lfs = self._lfs + buffer.count(b"\n", 0, skip)
                    self.pings += lfs // 2
                    self._lfs = lfs % 2
                    del buffer[:skip]
                    self._scanned = 0
                    if not buffer:
                        break
                self._lfs = 0
                # resume where the last search stopped (less 3: a CRLFCRLF may straddle feeds)
                head_end, body_start, eol = _find_head(buffer, max(0, self._scanned - 3))
                if head_end < 0:
                    self._scanned = len(buffer)
                    if len(buffer) > limits.max_message_size:
                        raise FramingError(f"Header section larger than {limits.max_message_size} octets")
                    break
                head = bytes(buffer[:head_end]).decode("latin-1")
                try:
                    start, headers = _split_head(head, eol, limits)
                    length = _content_length(headers) or 0
                except SIPError as error:
                    raise FramingError(error.reason) from None
                if body_start + length > limits.max_message_size:
                    raise FramingError(f"Message larger than {limits.max_message_size} octets")
                self._scanned = 0
                self._head = (start, headers)
                self._body_start = body_start
                self._need = body_start + length
            need = self._need
            assert need is not None
            if len(buffer) < need:
                break
            start, headers = self._head
            body = bytes(buffer[self._body_start : need])
            del buffer[:need]
            self._head = None
            self._need = None
            # a framed message with a bad start line does not break the stream
            try:
                messages.append(_make(start, headers, body))
            except ParseError as error:
                messages.append(error)
            except SIPError as error:
                messages.append(ParseError(error.status, error.reason, None))

    @property
    def buffered(self) -> int:
        return len(self._buffer)
