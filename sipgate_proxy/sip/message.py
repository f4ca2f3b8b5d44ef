"""SIP requests and responses over the original text.

A message keeps its start line, its header lines as written and its body
bytes. Header values are parsed only when asked for; a header that is not
touched is written back exactly as it arrived. Text is latin-1 decoded wire
bytes, so every octet round-trips.
"""

from __future__ import annotations

from collections.abc import Iterator

from .errors import SIPError
from .headers import NameAddr, Via, parse_cseq, parse_name_addr, parse_via, split_values
from .uri import URI, parse_uri

#: header entry: (canonical lower-case name, value with folding undone,
#: line as written without its CRLF)
Header = tuple[str, str, str]

#: headers whose value may hold several comma-separated elements
MULTI_VALUE = frozenset(
    {
        "via",
        "route",
        "record-route",
        "contact",
        "allow",
        "supported",
        "require",
        "proxy-require",
        "unsupported",
        "accept",
        "accept-encoding",
        "accept-language",
        "allow-events",
        "path",
        "content-encoding",
        "in-reply-to",
        "warning",
        "error-info",
        "alert-info",
        "call-info",
        "security-client",
        "security-server",
        "security-verify",
    }
)

#: how a canonical name is written when the proxy adds a header
PRETTY_NAMES = {
    "via": "Via",
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "max-forwards": "Max-Forwards",
    "record-route": "Record-Route",
    "content-length": "Content-Length",
    "content-type": "Content-Type",
    "mime-version": "MIME-Version",
}


_name_addr_cache: dict[str, NameAddr] = {}


def cached_name_addr(value: str) -> NameAddr:
    """Parse a To/From value once per process: a call's requests repeat them.

    A pure memo of a pure function, bounded; it holds no proxy state.
    """
    parsed = _name_addr_cache.get(value)
    if parsed is None:
        parsed = parse_name_addr(value)
        if len(_name_addr_cache) >= 8192:
            _name_addr_cache.clear()
        _name_addr_cache[value] = parsed
    return parsed


def pretty_name(key: str) -> str:
    """The usual spelling of a canonical header name ("call-id" -> "Call-ID")."""
    name = PRETTY_NAMES.get(key)
    if name is None:
        name = "-".join(part.capitalize() for part in key.split("-"))
    return name


class Message:
    """What requests and responses share: headers and body."""

    __slots__ = ("_cseq", "_from", "_to", "_top_via", "_vias", "body", "headers")

    def __init__(self, headers: list[Header], body: bytes = b"") -> None:
        self.headers = headers
        self.body = body
        self._vias: list[Via] | None = None
        self._top_via: Via | None = None
        self._cseq: tuple[int, str] | None = None
        self._to: NameAddr | None = None
        self._from: NameAddr | None = None

    # -- reading ------------------------------------------------------------

    def get(self, key: str) -> str | None:
        """The value of the first header named ``key`` (canonical name)."""
        for name, value, _ in self.headers:
            if name == key:
                return value
        return None

    def get_all(self, key: str) -> list[str]:
        """The values of every header line named ``key``, unsplit."""
        return [value for name, value, _ in self.headers if name == key]

    def values(self, key: str) -> list[str]:
        """All elements of a multi-value header, over all its lines."""
        result: list[str] = []
        for name, value, _ in self.headers:
            if name == key:
                if "," in value:
                    result.extend(split_values(value))
                elif value:
                    result.append(value)
        return result

    def has(self, key: str) -> bool:
        for name, _, _ in self.headers:
            if name == key:
                return True
        return False

    def count(self, key: str) -> int:
        return sum(1 for name, _, _ in self.headers if name == key)

    def single(self, key: str) -> str:
        """The one value of a header that must appear exactly once (400 otherwise)."""
        found: str | None = None
        for name, value, _ in self.headers:
            if name == key:
                if found is not None:
                    raise SIPError(400, f"More than one {pretty_name(key)} header")
                found = value
        if found is None:
            raise SIPError(400, f"Missing {pretty_name(key)} header")
        return found

    # -- parsed views (cached) ----------------------------------------------

    @property
    def call_id(self) -> str:
        return self.single("call-id")

    @property
    def cseq(self) -> tuple[int, str]:
        if self._cseq is None:
            self._cseq = parse_cseq(self.single("cseq"))
        return self._cseq

    @property
    def vias(self) -> list[Via]:
        if self._vias is None:
            vias = [parse_via(v) for v in self.values("via")]
            if not vias:
                raise SIPError(400, "Missing Via header")
            self._vias = vias
        return self._vias

    @property
    def top_via(self) -> Via:
        if self._top_via is not None:
            return self._top_via
        if self._vias is not None:
            return self._vias[0]
        for name, value, _ in self.headers:
            if name == "via":
                via = parse_via(split_values(value)[0] if "," in value else value)
                self._top_via = via
                return via
        raise SIPError(400, "Missing Via header")

    def via_at(self, index: int) -> Via | None:
        """The Via value at ``index`` (0 is the top), parsing no further."""
        if self._vias is not None:
            return self._vias[index] if index < len(self._vias) else None
        seen = 0
        for name, value, _ in self.headers:
            if name == "via":
                parts = split_values(value) if "," in value else [value]
                if index < seen + len(parts):
                    return parse_via(parts[index - seen])
                seen += len(parts)
        return None

    @property
    def to(self) -> NameAddr:
        """To, parsed (shared with other messages with the same value: read only)."""
        if self._to is None:
            self._to = cached_name_addr(self.single("to"))
        return self._to

    @property
    def from_(self) -> NameAddr:
        """From, parsed (shared with other messages with the same value: read only)."""
        if self._from is None:
            self._from = cached_name_addr(self.single("from"))
        return self._from

    @property
    def to_tag(self) -> str | None:
        return self.to.tag

    @property
    def from_tag(self) -> str | None:
        return self.from_.tag

    def name_addrs(self, key: str) -> list[NameAddr]:
        """Route, Record-Route, Path, Contact values as parsed name-addrs."""
        return [parse_name_addr(v) for v in self.values(key)]

    # -- writing ------------------------------------------------------------

    def _invalidate(self, key: str) -> None:
        if key == "via":
            self._vias = None
            self._top_via = None
        elif key == "cseq":
            self._cseq = None
        elif key == "to":
            self._to = None
        elif key == "from":
            self._from = None

    def insert_first(self, key: str, value: str) -> None:
        """Add a header line in front of all others (Via, Record-Route)."""
        self.headers.insert(0, (key, value, f"{pretty_name(key)}: {value}"))
        self._invalidate(key)

    def insert_before(self, key: str, value: str) -> None:
        """Add a header line before the first line with the same name, or first."""
        line = (key, value, f"{pretty_name(key)}: {value}")
        for index, entry in enumerate(self.headers):
            if entry[0] == key:
                self.headers.insert(index, line)
                break
        else:
            self.headers.insert(0, line)
        self._invalidate(key)

    def append(self, key: str, value: str) -> None:
        self.headers.append((key, value, f"{pretty_name(key)}: {value}"))
        self._invalidate(key)

    def set(self, key: str, value: str) -> None:
        """Replace every ``key`` line by one line holding ``value``."""
        line = (key, value, f"{pretty_name(key)}: {value}")
        new: list[Header] = []
        placed = False
        for entry in self.headers:
            if entry[0] == key:
                if not placed:
                    new.append(line)
                    placed = True
            else:
                new.append(entry)
        if not placed:
            new.append(line)
        self.headers = new
        self._invalidate(key)

    def remove(self, key: str) -> None:
        self.headers = [entry for entry in self.headers if entry[0] != key]
        self._invalidate(key)

    def pop_first_value(self, key: str) -> str | None:
        """Remove the first element of a multi-value header (Via, Route)."""
        for index, (name, value, _) in enumerate(self.headers):
            if name == key:
                parts = split_values(value) if "," in value else [value]
                first = parts[0]
                if len(parts) == 1:
                    del self.headers[index]
                else:
                    rest = ", ".join(parts[1:])
                    self.headers[index] = (key, rest, f"{pretty_name(key)}: {rest}")
                self._invalidate(key)
                return first
        return None

    def start_line(self) -> str:
        raise NotImplementedError

    def header_text(self) -> str:
        """Start line and header lines, each ending in CRLF, without the blank line."""
        lines = [self.start_line()]
        lines.extend(raw for _, _, raw in self.headers)
        return "\r\n".join(lines) + "\r\n"

    def to_bytes(self) -> bytes:
        """The message on the wire; Content-Length is made to match the body."""
        body = self.body
        parts = [self.start_line()]
        has_length = False
        length = str(len(body))
        for name, value, raw in self.headers:
            if name == "content-length":
                if has_length:
                    continue
                has_length = True
                if value.strip() != length:
                    raw = f"Content-Length: {length}"
            parts.append(raw)
        if not has_length:
            parts.append(f"Content-Length: {length}")
        parts.append("")
        parts.append("")
        return "\r\n".join(parts).encode("latin-1") + body

    def __iter__(self) -> Iterator[Header]:
        return iter(self.headers)


class Request(Message):
    """A SIP request; ``uri`` is parsed on first use."""

    __slots__ = ("_uri", "method", "uri_text", "version")

    def __init__(
        self,
        method: str,
        uri_text: str,
        headers: list[Header],
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        super().__init__(headers, body)
        self.method = method
        self.uri_text = uri_text
        self.version = version
        self._uri: URI | None = None

    @property
    def uri(self) -> URI:
        if self._uri is None:
            self._uri = parse_uri(self.uri_text)
        return self._uri

    @uri.setter
    def uri(self, value: URI) -> None:
        self._uri = value
        self.uri_text = str(value)

    def start_line(self) -> str:
        return f"{self.method} {self.uri_text} {self.version}"

    def copy(self) -> Request:
        """A copy whose header list and caches can be changed independently."""
        clone = Request(self.method, self.uri_text, list(self.headers), self.body, self.version)
        clone._uri = self._uri
        return clone

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri_text}>"


class Response(Message):
    __slots__ = ("reason", "status", "version")

    def __init__(
        self,
        status: int,
        reason: str,
        headers: list[Header],
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        super().__init__(headers, body)
        self.status = status
        self.reason = reason
        self.version = version

    def start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    def copy(self) -> Response:
        return Response(self.status, self.reason, list(self.headers), self.body, self.version)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


REASONS = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    493: "Undecipherable",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}

#: headers a response copies from its request (RFC 3261 8.2.6.2)
_COPIED = ("via", "from", "call-id", "cseq")


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    to_tag: str | None = None,
    extra: tuple[tuple[str, str], ...] = (),
) -> Response:
    """A response to ``request`` built as RFC 3261 8.2.6 says.

    Via, From, Call-ID and CSeq lines are copied as written (all Via lines, in
    order); To gets ``to_tag`` unless it has a tag already.
    """
    headers: list[Header] = []
    to_entry: Header | None = None
    for entry in request.headers:
        name = entry[0]
        if name in _COPIED:
            headers.append(entry)
        elif name == "to" and to_entry is None:
            to_entry = entry
            if to_tag is not None and status > 100 and ";tag=" not in entry[1].replace(" ", "").lower():
                value = f"{entry[1]};tag={to_tag}"
                to_entry = ("to", value, f"To: {value}")
            headers.append(to_entry)
    for name, value in extra:
        key = name.lower()
        headers.append((key, value, f"{name}: {value}"))
    return Response(status, reason or REASONS.get(status, "Unknown"), headers)


#: stands in for a request a finished transaction no longer needs, so that
#: lingering transactions (Timers J, K, L, M) keep no message alive
RELEASED = Request("RELEASED", "sip:released.invalid", [])
