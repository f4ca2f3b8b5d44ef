"""A minimal blocking SIP user agent over TLS, for integration tests.

Debian's SIPp is built without TLS, so the TLS tests bring their own user
agents, written with the standard library only (ssl, socket, threading):

* :class:`TlsCallee` listens on 127.0.0.1, answers INVITE with 100/180/200
  (or a chosen final status) and every other request but ACK with 200, and
  records each request, the SNI name and the certificate each client sent.
* :class:`TlsCaller` opens one TLS connection to a proxy and runs calls over
  it: INVITE, ACK, BYE following the route set (RFC 3261 12.1.2, 12.2.1.1),
  or the ACK of a non-2xx final response (RFC 3261 17.1.1.3).
* :class:`MessageFramer` cuts a byte stream into :class:`SipMessage` by
  Content-Length; both agents use it.

Everything talks to 127.0.0.1 only. A TLS failure surfaces as ``ssl.SSLError``
(certificate problems as its subclass ``ssl.SSLCertVerificationError``) or as
a ``ConnectionError``, so a test can assert a refusal. Note that under TLS 1.3
a server refusing the client's certificate is only seen by the client on its
first read, i.e. from :meth:`TlsCaller.call` rather than :meth:`TlsCaller.connect`.
"""

from __future__ import annotations

import re
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

LOOPBACK = "127.0.0.1"
#: largest message the framer accepts before giving up on the stream
MAX_MESSAGE = 1 << 20
#: how often blocked threads look whether they should stop (seconds)
POLL = 0.05
HANDSHAKE_TIMEOUT = 5.0

#: RFC 3261 7.3.3 and later RFCs: compact header names and their long forms
COMPACT_FORMS = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
}

REASONS = {
    100: "Trying",
    180: "Ringing",
    183: "Session Progress",
    200: "OK",
    403: "Forbidden",
    404: "Not Found",
    480: "Temporarily Unavailable",
    486: "Busy Here",
    487: "Request Terminated",
    500: "Server Internal Error",
    503: "Service Unavailable",
    603: "Decline",
}

_HEAD_END = re.compile(rb"\r?\n\r?\n")
_LINE_END = re.compile(r"\r?\n")


class FramingError(ValueError):
    """The byte stream is not SIP: no start line, a bad header, a bad or huge Content-Length."""


class ConnectionClosed(ConnectionError):
    """The peer closed the TLS connection while a message was awaited."""


def canonical(name: str) -> str:
    """A header name in lower case, compact forms expanded (``"v"`` -> ``"via"``)."""
    lowered = name.strip().lower()
    return COMPACT_FORMS.get(lowered, lowered)


def split_values(value: str) -> list[str]:
    """Split a comma-separated header value, leaving commas in quotes and <...> alone."""
    parts: list[str] = []
    current: list[str] = []
    quoted = angled = False
    escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif not quoted and char in "<>":
            angled = char == "<"
        elif char == "," and not quoted and not angled:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    parts.append("".join(current).strip())
    return [part for part in parts if part]


def name_addr_uri(value: str) -> str:
    """The URI of a name-addr (``"Bob" <sip:b@h;lr>;tag=1`` -> ``sip:b@h;lr``) or addr-spec."""
    if "<" in value:
        return value[value.index("<") + 1 : value.index(">")].strip()
    return value.split(";", 1)[0].strip()


def header_param(value: str, name: str) -> str | None:
    """A header parameter (outside any <...>), e.g. the ``tag`` of a To value; "" if valueless."""
    params = value[value.index(">") + 1 :] if "<" in value else value.partition(";")[2]
    for param in params.split(";"):
        key, _, param_value = param.partition("=")
        if key.strip().lower() == name.lower():
            return param_value.strip()
    return None


def new_branch() -> str:
    """A fresh RFC 3261 branch (magic cookie z9hG4bK)."""
    return "z9hG4bK" + secrets.token_hex(8)


def new_tag() -> str:
    return secrets.token_hex(6)


def sdp(user: str, host: str = LOOPBACK, port: int = 6000) -> bytes:
    """A small audio offer/answer body."""
    lines = [
        "v=0",
        f"o={user} 1 1 IN IP4 {host}",
        "s=-",
        f"c=IN IP4 {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP 0",
        "a=rtpmap:0 PCMU/8000",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


@dataclass
class SipMessage:
    """A parsed SIP request or response; header names keep their original spelling and order."""

    start_line: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    raw: bytes = b""

    @classmethod
    def parse_head(cls, head: bytes) -> SipMessage:
        """Parse a start line and headers (no body); folded lines are joined."""
        lines = _LINE_END.split(head.decode("utf-8", errors="replace").strip("\r\n"))
        start_line = lines[0].strip()
        headers: list[tuple[str, str]] = []
        if not start_line or (" " not in start_line):
            raise FramingError(f"not a SIP start line: {start_line!r}")
        for line in lines[1:]:
            if line[:1] in (" ", "\t") and headers:
                name, value = headers[-1]
                headers[-1] = (name, f"{value} {line.strip()}")
                continue
            name, colon, value = line.partition(":")
            if not colon or not name.strip():
                raise FramingError(f"not a header line: {line!r}")
            headers.append((name.strip(), value.strip()))
        return cls(start_line, headers)

    @classmethod
    def parse(cls, data: bytes) -> SipMessage:
        """Parse one whole message: head, then a body of Content-Length bytes."""
        messages = MessageFramer().feed(data)
        if len(messages) != 1:
            raise FramingError(f"expected one whole message, found {len(messages)}")
        return messages[0]

    @property
    def is_request(self) -> bool:
        return not self.start_line.startswith("SIP/")

    @property
    def method(self) -> str:
        """The request method ("" for a response)."""
        return self.start_line.split(" ", 1)[0] if self.is_request else ""

    @property
    def request_uri(self) -> str:
        return self.start_line.split(" ")[1] if self.is_request else ""

    @property
    def status(self) -> int:
        """The response status (0 for a request)."""
        return 0 if self.is_request else int(self.start_line.split(" ")[1])

    @property
    def reason(self) -> str:
        return "" if self.is_request else self.start_line.split(" ", 2)[2]

    def header_lines(self, name: str) -> list[str]:
        """Every value of header ``name`` (any case, compact form or not), one per header line."""
        key = canonical(name)
        return [value for header, value in self.headers if canonical(header) == key]

    def header(self, name: str) -> str | None:
        """The first value of header ``name``, or None."""
        lines = self.header_lines(name)
        return lines[0] if lines else None

    def values(self, name: str) -> list[str]:
        """All values of a list header (Via, Route, Record-Route, Contact), commas split."""
        return [part for line in self.header_lines(name) for part in split_values(line)]

    @property
    def call_id(self) -> str:
        return self.header("call-id") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        number, _, method = (self.header("cseq") or "0 ").partition(" ")
        return int(number), method.strip()

    def to_bytes(self) -> bytes:
        return build_message(self.start_line, self.headers, self.body)


def build_message(start_line: str, headers: Sequence[tuple[str, str]], body: bytes = b"") -> bytes:
    """Serialise a message; Content-Length is (re)computed and written last."""
    lines = [start_line]
    lines += [f"{name}: {value}" for name, value in headers if canonical(name) != "content-length"]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class MessageFramer:
    """Cut a stream into SIP messages by Content-Length (RFC 3261 18.3).

    Bytes may arrive in any split; ``feed`` returns the messages completed so
    far. CRLF keep-alives between messages (RFC 5626) are skipped and counted.
    """

    def __init__(self, max_size: int = MAX_MESSAGE) -> None:
        self._buffer = bytearray()
        self._max_size = max_size
        self.keepalives = 0

    def feed(self, data: bytes) -> list[SipMessage]:
        self._buffer += data
        messages: list[SipMessage] = []
        while True:
            stripped = self._buffer.lstrip(b"\r\n")
            if len(stripped) != len(self._buffer):
                self.keepalives += 1
                self._buffer = bytearray(stripped)
            match = _HEAD_END.search(self._buffer)
            if match is None:
                if len(self._buffer) > self._max_size:
                    raise FramingError(f"no end of headers within {self._max_size} bytes")
                return messages
            message = SipMessage.parse_head(bytes(self._buffer[: match.start()]))
            length_text = message.header("content-length") or "0"
            if not length_text.isdigit() or int(length_text) > self._max_size:
                raise FramingError(f"bad Content-Length: {length_text!r}")
            end = match.end() + int(length_text)
            if len(self._buffer) < end:
                return messages
            message.body = bytes(self._buffer[match.end() : end])
            message.raw = bytes(self._buffer[:end])
            del self._buffer[:end]
            messages.append(message)


def make_response(
    request: SipMessage,
    status: int,
    *,
    to_tag: str | None = None,
    record_route: bool = False,
    extra: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
) -> bytes:
    """A response to ``request`` (RFC 3261 8.2.6.2): Via(s), From, To, Call-ID, CSeq copied.

    ``to_tag`` is added to To when it has none; ``record_route`` copies the
    Record-Route headers (for 18x/2xx to a dialog-creating request, 12.1.1).
    """
    copied = {"via", "from", "call-id", "cseq"} | ({"record-route"} if record_route else set())
    headers: list[tuple[str, str]] = []
    for name, value in request.headers:
        key = canonical(name)
        if key == "to":
            if to_tag and header_param(value, "tag") is None:
                value = f"{value};tag={to_tag}"
            headers.append((name, value))
        elif key in copied:
            headers.append((name, value))
    headers += extra
    return build_message(f"SIP/2.0 {status} {REASONS.get(status, 'Status')}", headers, body)


# -- the callee ----------------------------------------------------------------


@dataclass
class TlsConnection:
    """One TLS connection a :class:`TlsCallee` accepted, as the handshake left it."""

    peer: tuple[str, int]
    #: the SNI name the client sent (None when it sent none, e.g. for an IP address)
    server_name: str | None = None
    #: the client's certificate as ``SSLSocket.getpeercert()`` gives it (None without one)
    peer_certificate: dict[str, Any] | None = None
    peer_certificate_der: bytes | None = None
    version: str | None = None
    #: why the handshake failed, or None
    error: BaseException | None = None
    established: bool = False


@dataclass(frozen=True)
class ReceivedRequest:
    """A request a :class:`TlsCallee` received, and the connection it came on."""

    message: SipMessage
    connection: TlsConnection

    @property
    def method(self) -> str:
        return self.message.method

    @property
    def request_line(self) -> str:
        return self.message.start_line

    @property
    def headers(self) -> list[tuple[str, str]]:
        return self.message.headers

    def header(self, name: str) -> str | None:
        return self.message.header(name)


class TlsCallee:
    """A SIP user agent server over TLS on 127.0.0.1 that answers every call.

    INVITE gets 100 (``send_trying``), 180 (``ringing``) and ``final_status``
    (200 with SDP and a Contact by default); ACK is swallowed; any other
    request gets 200. Responses go back on the connection the request came on.
    With ``ca`` the callee asks for a client certificate (and requires one
    with ``require_client_cert``). Use as a context manager, or call ``stop``.
    """

    def __init__(
        self,
        cert: Path,
        key: Path,
        ca: Path | None = None,
        require_client_cert: bool = False,
        port: int = 0,
        *,
        user: str = "callee",
        final_status: int = 200,
        send_trying: bool = True,
        ringing: bool = True,
        maximum_version: ssl.TLSVersion | None = None,
    ) -> None:
        if require_client_cert and ca is None:
            raise ValueError("require_client_cert needs the ca that issues client certificates")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if maximum_version is not None:
            context.maximum_version = maximum_version
        context.load_cert_chain(cert, key)
        if ca is not None:
            context.load_verify_locations(ca)
            context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
        context.sni_callback = self._on_server_name
        self._context = context
        self.user = user
        self.final_status = final_status
        self.send_trying = send_trying
        self.ringing = ringing
        self._listener = socket.create_server((LOOPBACK, port))
        self._listener.settimeout(POLL)
        self.host, self.port = self._listener.getsockname()[:2]
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._requests: list[ReceivedRequest] = []
        self._connections: list[TlsConnection] = []
        self._server_names: dict[int, str | None] = {}
        self._tags: dict[str, str] = {}
        self._threads: list[threading.Thread] = []
        #: every message in and out, ("received" | "sent", bytes), for failure messages
        self.transcript: list[tuple[str, bytes]] = []
        #: unexpected exceptions in the callee's threads (a test may assert there are none)
        self.errors: list[BaseException] = []
        self._accepting = threading.Thread(target=self._accept_loop, name=f"tls-callee-{self.port}", daemon=True)
        self._accepting.start()

    @property
    def uri(self) -> str:
        """The callee's SIP URI, also its Contact: ``sip:callee@127.0.0.1:PORT;transport=tls``."""
        return f"sip:{self.user}@{self.host}:{self.port};transport=tls"

    @property
    def contact(self) -> str:
        return f"<{self.uri}>"

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Every request received so far, in order."""
        with self._changed:
            return list(self._requests)

    @property
    def connections(self) -> list[TlsConnection]:
        """Every connection accepted so far (also those whose handshake failed)."""
        with self._changed:
            return list(self._connections)

    @property
    def handshake_errors(self) -> list[BaseException]:
        return [connection.error for connection in self.connections if connection.error is not None]

    def methods(self) -> list[str]:
        return [request.method for request in self.requests]

    def wait_for(self, condition: Callable[[], T | None], timeout: float = 5.0, what: str = "condition") -> T:
        """Wait until ``condition()`` (called under the callee's lock) is true; return its value."""
        with self._changed:
            value = self._changed.wait_for(condition, timeout)
        if not value:
            raise TimeoutError(f"callee on port {self.port}: no {what} within {timeout:.1f} s")
        return value

    def wait_for_request(self, method: str, count: int = 1, timeout: float = 5.0) -> ReceivedRequest:
        """Wait for the ``count``-th request with ``method``; return it."""

        def found() -> ReceivedRequest | None:
            matching = [request for request in self._requests if request.method == method]
            return matching[count - 1] if len(matching) >= count else None

        return self.wait_for(found, timeout, what=f"{method} #{count}")

    def wait_for_connection(self, timeout: float = 5.0) -> TlsConnection:
        """Wait until a connection's handshake has ended (either way); return the first such."""

        def ended() -> TlsConnection | None:
            done = [c for c in self._connections if c.established or c.error is not None]
            return done[0] if done else None

        return self.wait_for(ended, timeout, what="finished TLS handshake")

    def stop(self) -> None:
        """Stop accepting, close every connection, and wait for the threads to end."""
        self._stopping.set()
        self._accepting.join(timeout=5)
        for thread in list(self._threads):
            thread.join(timeout=5)

    def __enter__(self) -> TlsCallee:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _record(self, action: Callable[[], None]) -> None:
        with self._changed:
            action()
            self._changed.notify_all()

    def _on_server_name(self, tls: ssl.SSLSocket | ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        with self._changed:
            self._server_names[id(tls)] = server_name

    def _accept_loop(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    raw, peer = self._listener.accept()
                except TimeoutError:
                    continue
                thread = threading.Thread(target=self._serve, args=(raw, peer), daemon=True)
                self._threads.append(thread)
                thread.start()
        finally:
            self._listener.close()

    def _serve(self, raw: socket.socket, peer: tuple[str, int]) -> None:
        connection = TlsConnection(peer=peer)
        self._record(lambda: self._connections.append(connection))
        try:
            with raw:
                raw.settimeout(POLL)
                tls = self._context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
                with tls:
                    if self._handshake(tls, connection):
                        self._read_loop(tls, connection)
        except Exception as exc:  # a bug here must show in the test, not vanish with the thread
            self._record(partial(self.errors.append, exc))

    def _handshake(self, tls: ssl.SSLSocket, connection: TlsConnection) -> bool:
        deadline = time.monotonic() + HANDSHAKE_TIMEOUT
        while True:
            try:
                tls.do_handshake()
                break
            except TimeoutError as exc:
                if self._stopping.is_set() or time.monotonic() > deadline:
                    self._record(partial(setattr, connection, "error", exc))
                    return False
            except (ssl.SSLError, OSError) as exc:
                self._record(partial(setattr, connection, "error", exc))
                return False

        def established() -> None:
            connection.server_name = self._server_names.pop(id(tls), None)
            connection.peer_certificate = tls.getpeercert() or None
            connection.peer_certificate_der = tls.getpeercert(binary_form=True)
            connection.version = tls.version()
            connection.established = True

        self._record(established)
        return True

    def _read_loop(self, tls: ssl.SSLSocket, connection: TlsConnection) -> None:
        framer = MessageFramer()
        while not self._stopping.is_set():
            try:
                data = tls.recv(65536)
            except TimeoutError:
                continue
            except OSError:  # includes ssl.SSLError: the peer went away
                return
            if not data:
                return
            try:
                messages = framer.feed(data)
            except FramingError:
                return
            for message in messages:
                self._handle(tls, connection, message)

    def _handle(self, tls: ssl.SSLSocket, connection: TlsConnection, message: SipMessage) -> None:
        def record() -> None:
            self.transcript.append(("received", message.raw))
            if message.is_request:
                self._requests.append(ReceivedRequest(message, connection))

        self._record(record)
        if not message.is_request or message.method == "ACK":
            return
        tag = self._to_tag(message)
        responses: list[bytes] = []
        if message.method == "INVITE":
            if self.send_trying:
                responses.append(make_response(message, 100))
            if self.ringing:
                responses.append(make_response(message, 180, to_tag=tag, record_route=True))
            if 200 <= self.final_status < 300:
                extra = [("Contact", self.contact), ("Content-Type", "application/sdp")]
                body = sdp(self.user, self.host)
                responses.append(
                    make_response(message, self.final_status, to_tag=tag, record_route=True, extra=extra, body=body)
                )
            else:
                responses.append(make_response(message, self.final_status, to_tag=tag))
        else:
            responses.append(make_response(message, 200, to_tag=tag))
        for response in responses:
            self._record(partial(self.transcript.append, ("sent", response)))
            try:
                tls.sendall(response)
            except OSError:
                return

    def _to_tag(self, request: SipMessage) -> str | None:
        to_value = request.header("to") or ""
        if header_param(to_value, "tag") is not None:
            return None
        with self._changed:
            return self._tags.setdefault(request.call_id, new_tag())


# -- the caller ----------------------------------------------------------------


@dataclass
class CallResult:
    """What happened in one call made by :meth:`TlsCaller.call`."""

    call_id: str
    #: status of the final response to the INVITE
    final_status: int
    #: status of every response to the INVITE, in order (e.g. [100, 180, 200])
    statuses: list[int]
    #: status of the final response to the BYE (None when no BYE was sent)
    bye_status: int | None
    responses: list[SipMessage]
    bye_response: SipMessage | None
    #: the dialog's route set (Record-Route of the 2xx, reversed) and remote target
    route_set: list[str] = field(default_factory=list)
    remote_target: str | None = None
    #: every message of the call, ("sent" | "received", bytes)
    messages: list[tuple[str, bytes]] = field(default_factory=list)

    @property
    def completed(self) -> bool:
        """The call was answered and hung up cleanly (2xx to INVITE, 200 to BYE)."""
        return 200 <= self.final_status < 300 and self.bye_status == 200

    def transcript(self) -> str:
        """The messages of the call as text, for assertion messages."""
        return "\n".join(f"--- {way}\n{raw.decode(errors='replace')}" for way, raw in self.messages)


class TlsCaller:
    """A SIP user agent client that sends every request over one TLS connection to ``proxy``.

    The server certificate must chain to ``ca`` and, unless ``server_hostname``
    is None, name ``server_hostname`` (also sent as SNI, except for an IP
    address). ``cert``/``key`` give the client certificate, if any.
    """

    def __init__(
        self,
        proxy: tuple[str, int],
        ca: Path,
        cert: Path | None = None,
        key: Path | None = None,
        server_hostname: str | None = "localhost",
        *,
        user: str = "caller",
        domain: str = "localhost",
        maximum_version: ssl.TLSVersion | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        context = ssl.create_default_context(cafile=str(ca))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if maximum_version is not None:
            context.maximum_version = maximum_version
        if server_hostname is None:
            context.check_hostname = False
        if cert is not None:
            context.load_cert_chain(cert, key)
        self._context = context
        self.proxy = proxy
        self.server_hostname = server_hostname
        self.user = user
        self.domain = domain
        self.connect_timeout = connect_timeout
        self._tls: ssl.SSLSocket | None = None
        self._framer = MessageFramer()
        self._pending: list[SipMessage] = []
        #: requests the caller received and answered with 200 (other than ACK)
        self.received_requests: list[SipMessage] = []

    def connect(self) -> ssl.SSLSocket:
        """Open the TLS connection (once); raises ssl.SSLError or OSError when that fails."""
        if self._tls is None:
            raw = socket.create_connection(self.proxy, timeout=self.connect_timeout)
            try:
                self._tls = self._context.wrap_socket(raw, server_hostname=self.server_hostname)
            except BaseException:
                raw.close()
                raise
        return self._tls

    @property
    def local_address(self) -> tuple[str, int]:
        host, port = self.connect().getsockname()[:2]
        return host, port

    @property
    def contact(self) -> str:
        host, port = self.local_address
        return f"<sip:{self.user}@{host}:{port};transport=tls>"

    @property
    def peer_certificate(self) -> dict[str, Any]:
        """The server's certificate as ``SSLSocket.getpeercert()`` gives it."""
        return self.connect().getpeercert() or {}

    def close(self) -> None:
        if self._tls is not None:
            self._tls.close()
            self._tls = None

    def __enter__(self) -> TlsCaller:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def call(
        self,
        request_uri: str,
        from_user: str | None = None,
        timeout: float = 5.0,
        *,
        to_uri: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
        hang_up: bool = True,
    ) -> CallResult:
        """Make a call to ``request_uri``: INVITE, then ACK and BYE (or the ACK of a non-2xx).

        ``headers`` are added to the INVITE (e.g. a pre-loaded Route). Raises
        TimeoutError when a final response does not come within ``timeout``.
        """
        self.connect()
        deadline = time.monotonic() + timeout
        log: list[tuple[str, bytes]] = []
        call_id = f"{secrets.token_hex(8)}@{self.local_address[0]}"
        from_value = f"<sip:{from_user or self.user}@{self.domain}>;tag={new_tag()}"
        branch = new_branch()
        common = [("From", from_value), ("To", f"<{to_uri or request_uri}>"), ("Call-ID", call_id)]
        invite_headers = [
            ("Via", self._via(branch)),
            ("Max-Forwards", "70"),
            *common,
            ("CSeq", "1 INVITE"),
            ("Contact", self.contact),
            *headers,
            ("Content-Type", "application/sdp"),
        ]
        self._send(build_message(f"INVITE {request_uri} SIP/2.0", invite_headers, sdp(self.user)), log)
        responses = [self._response(call_id, 1, "INVITE", deadline, log)]
        while responses[-1].status < 200:
            responses.append(self._response(call_id, 1, "INVITE", deadline, log))
        final = responses[-1]
        dialog = [("From", from_value), ("To", final.header("to") or ""), ("Call-ID", call_id)]
        result = CallResult(call_id, final.status, [r.status for r in responses], None, responses, None, messages=log)
        if final.status >= 300:  # RFC 3261 17.1.1.3: same branch, Request-URI and Route as the INVITE
            invite_routes = [(name, value) for name, value in headers if canonical(name) == "route"]
            ack_headers = [invite_headers[0], ("Max-Forwards", "70"), *dialog, ("CSeq", "1 ACK"), *invite_routes]
            self._send(build_message(f"ACK {request_uri} SIP/2.0", ack_headers), log)
            return result
        result.route_set = list(reversed(final.values("record-route")))
        contact = final.header("contact")
        result.remote_target = name_addr_uri(contact) if contact else request_uri
        target, routes = dialog_target(result.remote_target, result.route_set)
        self._send(self._in_dialog("ACK", target, routes, dialog, 1), log)
        if hang_up:
            self._send(self._in_dialog("BYE", target, routes, dialog, 2), log)
            bye = self._response(call_id, 2, "BYE", deadline, log)
            while bye.status < 200:
                bye = self._response(call_id, 2, "BYE", deadline, log)
            result.bye_response, result.bye_status = bye, bye.status
        return result

    def options(self, uri: str, timeout: float = 5.0, *, headers: Sequence[tuple[str, str]] = ()) -> SipMessage:
        """Send OPTIONS to ``uri`` through the connection; return the final response."""
        self.connect()
        deadline = time.monotonic() + timeout
        call_id = f"{secrets.token_hex(8)}@{self.local_address[0]}"
        request_headers = [
            ("Via", self._via(new_branch())),
            ("Max-Forwards", "70"),
            ("From", f"<sip:{self.user}@{self.domain}>;tag={new_tag()}"),
            ("To", f"<{uri}>"),
            ("Call-ID", call_id),
            ("CSeq", "1 OPTIONS"),
            ("Contact", self.contact),
            *headers,
        ]
        log: list[tuple[str, bytes]] = []
        self._send(build_message(f"OPTIONS {uri} SIP/2.0", request_headers), log)
        response = self._response(call_id, 1, "OPTIONS", deadline, log)
        while response.status < 200:
            response = self._response(call_id, 1, "OPTIONS", deadline, log)
        return response

    def _via(self, branch: str) -> str:
        host, port = self.local_address
        return f"SIP/2.0/TLS {host}:{port};branch={branch};rport"

    def _in_dialog(
        self, method: str, target: str, routes: list[str], dialog: list[tuple[str, str]], cseq: int
    ) -> bytes:
        headers = [("Via", self._via(new_branch())), ("Max-Forwards", "70"), *dialog, ("CSeq", f"{cseq} {method}")]
        headers += [("Route", route) for route in routes]
        if method != "ACK":
            headers.append(("Contact", self.contact))
        return build_message(f"{method} {target} SIP/2.0", headers)

    def _send(self, data: bytes, log: list[tuple[str, bytes]]) -> None:
        log.append(("sent", data))
        self.connect().sendall(data)

    def _receive(self, deadline: float) -> SipMessage:
        tls = self.connect()
        while not self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no message from the peer in time")
            tls.settimeout(remaining)
            try:
                data = tls.recv(65536)
            finally:
                tls.settimeout(self.connect_timeout)
            if not data:
                raise ConnectionClosed(f"the peer {self.proxy} closed the TLS connection")
            self._pending += self._framer.feed(data)
        return self._pending.pop(0)

    def _response(
        self, call_id: str, cseq: int, method: str, deadline: float, log: list[tuple[str, bytes]]
    ) -> SipMessage:
        """The next response to (call_id, cseq, method); other requests get a 200 meanwhile."""
        while True:
            try:
                message = self._receive(deadline)
            except TimeoutError:
                got = [raw.split(b"\r\n", 1)[0].decode(errors="replace") for way, raw in log if way == "received"]
                raise TimeoutError(f"no final response to {method} {call_id} in time; received {got}") from None
            log.append(("received", message.raw))
            if message.is_request:
                self.received_requests.append(message)
                if message.method != "ACK":
                    self._send(make_response(message, 200, to_tag=new_tag()), log)
            elif message.call_id == call_id and message.cseq == (cseq, method):
                return message


def dialog_target(remote_target: str, route_set: Sequence[str]) -> tuple[str, list[str]]:
    """Request-URI and Route values of a request within a dialog (RFC 3261 12.2.1.1).

    Loose routing (the first route has ``lr``): the remote target, and the
    route set as it is. Strict routing: the first route's URI, and the rest of
    the route set followed by the remote target.
    """
    if not route_set:
        return remote_target, []
    first = name_addr_uri(route_set[0])
    if re.search(r";lr(?:[;=>]|$)", first, re.IGNORECASE):
        return remote_target, list(route_set)
    return first, [*route_set[1:], f"<{remote_target}>"]
