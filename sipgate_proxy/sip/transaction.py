"""RFC 3261 section 17 transaction machines (with the RFC 6026 Accepted state).

Time comes in as ``now``; messages leave through the ``transmit`` callable
given to :class:`TransactionLayer`; timers are armed on its heap. The user of
a client transaction (the proxy core) is told of responses, timeouts and
transport errors through the callbacks of :class:`ClientUser`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from .errors import SIPError
from .message import Request, Response
from .timers import Timer, TimerHeap

MAGIC_COOKIE = "z9hG4bK"


class Destination(NamedTuple):
    """Where bytes go: transport ("udp", "tcp", "tls"), host, port; ``connection``,
    a handle of the I/O layer for a stream to reuse; ``local``, the name of
    the listener to send from (its address is the one in our Via);
    ``server_name``, for TLS the SIP domain or host name the peer's
    certificate must carry (RFC 5922) when ``host`` was resolved from it."""

    transport: str
    host: str
    port: int
    connection: object | None = None
    local: str | None = None
    server_name: str | None = None

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"


Transmit = Callable[[bytes, Destination], None]


@dataclass(frozen=True, slots=True)
class TimerValues:
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0


class ClientUser(Protocol):
    """What a client transaction reports to."""

    def on_response(self, txn: ClientTransaction, response: Response, now: float) -> None: ...

    def on_timeout(self, txn: ClientTransaction, now: float) -> None: ...

    def on_transport_error(self, txn: ClientTransaction, now: float) -> None: ...

    def on_retransmit(self, txn: ClientTransaction, now: float) -> None:
        """An INVITE went out again: the destination has not answered yet."""


# -- states ------------------------------------------------------------------

CALLING = "calling"
TRYING = "trying"
PROCEEDING = "proceeding"
COMPLETED = "completed"
CONFIRMED = "confirmed"
ACCEPTED = "accepted"
TERMINATED = "terminated"


def server_key(request: Request) -> tuple[str, ...]:
    """RFC 3261 17.2.3 matching key; RFC 2543 fallback without the cookie.

    ACK matches its INVITE's transaction, so its method counts as INVITE.
    """
    via = request.top_via
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch
    if branch and branch.startswith(MAGIC_COOKIE) and len(branch) > len(MAGIC_COOKIE):
        return (branch, via.host, str(via.port or ""), method)
    to_tag = request.to_tag if request.method != "ACK" else None
    return (
        "2543",
        request.uri_text,
        request.call_id,
        request.from_tag or "",
        to_tag or "",
        str(request.cseq[0]),
        str(via),
        method,
    )


class ServerTransaction:
    """Receives one request; sends the responses the proxy gives it."""

    __slots__ = (
        "_interval",
        "_timer_end",
        "_timer_g",
        "invite",
        "key",
        "last_response",
        "layer",
        "request",
        "source",
        "state",
        "user_data",
    )

    def __init__(self, layer: TransactionLayer, key: tuple[str, ...], request: Request, source: Destination) -> None:
        self.layer = layer
        self.key = key
        self.request = request
        self.source = source
        self.invite = request.method == "INVITE"
        self.state = PROCEEDING if self.invite else TRYING
        self.last_response: bytes | None = None
        self._timer_g: Timer | None = None
        self._timer_end: Timer | None = None
        self._interval = layer.timers.t1
        self.user_data: object = None

    # the proxy (transaction user) side

    def send_response(self, response: Response, destination: Destination, now: float) -> None:
        """Send a response to the request (RFC 3261 17.2.1, 17.2.2)."""
        status = response.status
        data = response.to_bytes()
        state = self.state
        if state in (COMPLETED, CONFIRMED, TERMINATED):
            return
        if state == ACCEPTED:
            if 200 <= status < 300:
                self.layer.transmit(data, destination)
            return
        self.layer.transmit(data, destination)
        self.source = destination
        self.last_response = data
        if status < 200:
            if not self.invite:
                self.state = PROCEEDING
            return
        layer = self.layer
        t1 = layer.timers.t1
        if self.invite:
            if status < 300:
                # RFC 6026: stay to absorb INVITE retransmissions (Timer L);
                # 2xx retransmissions come from downstream, keep no copy
                self.state = ACCEPTED
                self.last_response = None
                self._timer_end = layer.heap.arm(now + 64 * t1, self._terminate)
            else:
                self.state = COMPLETED
                if not destination.reliable:
                    self._interval = t1
                    self._timer_g = layer.heap.arm(now + t1, self._fire_g)
                self._timer_end = layer.heap.arm(now + 64 * t1, self._fire_h)
        else:
            self.state = COMPLETED
            if destination.reliable:
                self._terminate(now)
            else:
                self._timer_end = layer.heap.arm(now + 64 * t1, self._terminate)

    # the transport side

    def receive_retransmission(self, request: Request, now: float) -> None:
        """The same request again (or the ACK of a non-2xx final response)."""
        if request.method == "ACK":
            if self.state == COMPLETED:
                self.state = CONFIRMED
                if self._timer_g is not None:
                    self._timer_g.cancel()
                    self._timer_g = None
                if self._timer_end is not None:
                    self._timer_end.cancel()
                t4 = 0.0 if self.source.reliable else self.layer.timers.t4
                self._timer_end = self.layer.heap.arm(now + t4, self._terminate)
            return
        if self.last_response is not None and self.state in (PROCEEDING, COMPLETED):
            self.layer.transmit(self.last_response, self.source)

    # timers

    def _fire_g(self, now: float) -> None:
        if self.state != COMPLETED or self.last_response is None:
            return
        self.layer.transmit(self.last_response, self.source)
        self._interval = min(2 * self._interval, self.layer.timers.t2)
        self._timer_g = self.layer.heap.arm(now + self._interval, self._fire_g)

    def _fire_h(self, now: float) -> None:
        # no ACK came: give up (RFC 3261 17.2.1)
        self._terminate(now)

    def _terminate(self, now: float) -> None:
        if self.state == TERMINATED:
            return
        self.state = TERMINATED
        for timer in (self._timer_g, self._timer_end):
            if timer is not None:
                timer.cancel()
        self.layer.server.pop(self.key, None)


class ClientTransaction:
    """Sends one request to one destination and collects its responses."""

    __slots__ = (
        "_end",
        "_interval",
        "_retransmit",
        "_silenced",
        "_timeout",
        "ack",
        "data",
        "destination",
        "invite",
        "key",
        "layer",
        "request",
        "state",
        "user",
        "user_data",
    )

    def __init__(
        self,
        layer: TransactionLayer,
        key: tuple[str, str],
        request: Request,
        destination: Destination,
        user: ClientUser,
    ) -> None:
        self.layer = layer
        self.key = key
        self.request = request
        self.data = b""
        self.destination = destination
        self.user = user
        self.invite = request.method == "INVITE"
        self.state = CALLING if self.invite else TRYING
        self._interval = layer.timers.t1
        self._retransmit: Timer | None = None
        self._timeout: Timer | None = None
        self._end: Timer | None = None
        self.user_data: object = None
        self.ack: bytes | None = None
        self._silenced = False

    def start(self, now: float) -> None:
        layer = self.layer
        self.data = self.request.to_bytes()
        layer.transmit(self.data, self.destination)
        if self.state == TERMINATED:  # a transport error came synchronously
            return
        t1 = layer.timers.t1
        if not self.destination.reliable:
            self._retransmit = layer.heap.arm(now + t1, self._fire_retransmit)
        self._timeout = layer.heap.arm(now + 64 * t1, self._fire_timeout)

    def receive(self, response: Response, now: float) -> None:
        status = response.status
        state = self.state
        if state == TERMINATED:
            return
        if self.invite:
            if state == COMPLETED:
                if status >= 300 and self.ack is not None:
                    self.layer.transmit(self.ack, self.destination)
                return
            if state == ACCEPTED:
                if 200 <= status < 300:
                    self.user.on_response(self, response, now)
                return
            if status < 200:
                self.state = PROCEEDING
                self._stop_retransmit()
                # Timer B only runs in Calling (17.1.1.2); Timer C bounds Proceeding
                self._stop_timeout()
                self.user.on_response(self, response, now)
                return
            self._stop_retransmit()
            self._stop_timeout()
            self.data = b""  # nothing is retransmitted after a final response
            layer = self.layer
            if status < 300:
                self.state = ACCEPTED
                self._end = layer.heap.arm(now + 64 * layer.timers.t1, self._terminate)
            else:
                self.state = COMPLETED
                self.ack = self._make_ack(response)
                layer.transmit(self.ack, self.destination)
                wait = 0.0 if self.destination.reliable else 32.0
                self._end = layer.heap.arm(now + wait, self._terminate)
            self.user.on_response(self, response, now)
            return
        # non-INVITE
        if state == COMPLETED:
            return
        if status < 200:
            if state == TRYING:
                self.state = PROCEEDING
            self.user.on_response(self, response, now)
            return
        self._stop_retransmit()
        self._stop_timeout()
        self.state = COMPLETED
        self.data = b""
        layer = self.layer
        wait = 0.0 if self.destination.reliable else layer.timers.t4
        self._end = layer.heap.arm(now + wait, self._terminate)
        self.user.on_response(self, response, now)

    def transport_error(self, now: float) -> None:
        if self.state in (TERMINATED, COMPLETED, ACCEPTED, CONFIRMED):
            return
        self._terminate(now)
        self.user.on_transport_error(self, now)

    def stop_retransmissions(self) -> None:
        """Send the request no more; the timeout still ends the transaction."""
        self._silenced = True
        self._stop_retransmit()

    def expire_in(self, now: float, seconds: float) -> None:
        """End the transaction (as a timeout) unless a final response comes first."""
        self._stop_retransmit()
        self._stop_timeout()
        self._timeout = self.layer.heap.arm(now + seconds, self._fire_expire)

    def _fire_expire(self, now: float) -> None:
        if self.state in (CALLING, TRYING, PROCEEDING):
            self._terminate(now)
            self.user.on_timeout(self, now)

    def _make_ack(self, response: Response) -> bytes:
        """ACK for a non-2xx final response (RFC 3261 17.1.1.3)."""
        request = self.request
        headers = []
        via_done = False
        for entry in request.headers:
            name = entry[0]
            if name == "via":
                if not via_done:
                    headers.append(("via", request.vias[0].__str__(), f"Via: {request.vias[0]}"))
                    via_done = True
            elif name in ("from", "call-id", "route", "max-forwards"):
                headers.append(entry)
        to_value = response.get("to") or request.get("to") or ""
        headers.append(("to", to_value, f"To: {to_value}"))
        seq = request.cseq[0]
        headers.append(("cseq", f"{seq} ACK", f"CSeq: {seq} ACK"))
        ack = Request("ACK", request.uri_text, headers)
        return ack.to_bytes()

    def _fire_retransmit(self, now: float) -> None:
        state = self.state
        if state not in (CALLING, TRYING, PROCEEDING) or (self.invite and state == PROCEEDING):
            return
        layer = self.layer
        self._retransmit = None
        if self.invite:
            # the user may give up on a silent destination before we resend
            self.user.on_retransmit(self, now)
            if self.state != CALLING or self._silenced:
                return
        layer.transmit(self.data, self.destination)
        if self.invite:
            self._interval = 2 * self._interval
        else:
            # Timer E: doubles up to T2; in Proceeding it stays at T2
            self._interval = layer.timers.t2 if state == PROCEEDING else min(2 * self._interval, layer.timers.t2)
        self._retransmit = layer.heap.arm(now + self._interval, self._fire_retransmit)

    def _fire_timeout(self, now: float) -> None:
        if self.state in (CALLING, TRYING, PROCEEDING):
            self._terminate(now)
            self.user.on_timeout(self, now)

    def _stop_retransmit(self) -> None:
        if self._retransmit is not None:
            self._retransmit.cancel()
            self._retransmit = None

    def _stop_timeout(self) -> None:
        if self._timeout is not None:
            self._timeout.cancel()
            self._timeout = None

    def _terminate(self, now: float) -> None:
        if self.state == TERMINATED:
            return
        self.state = TERMINATED
        self._stop_retransmit()
        self._stop_timeout()
        if self._end is not None:
            self._end.cancel()
            self._end = None
        self.layer.client.pop(self.key, None)


class TransactionLayer:
    """The transaction tables, the timer heap and the way out."""

    def __init__(
        self,
        transmit: Transmit,
        timers: TimerValues | None = None,
        max_transactions: int = 200_000,
    ) -> None:
        self.transmit = transmit
        self.timers = timers or TimerValues()
        self.max_transactions = max_transactions
        self.heap = TimerHeap()
        self.server: dict[tuple[str, ...], ServerTransaction] = {}
        self.client: dict[tuple[str, str], ClientTransaction] = {}

    def match_server(self, request: Request) -> tuple[tuple[str, ...], ServerTransaction | None]:
        key = server_key(request)
        return key, self.server.get(key)

    def new_server(self, key: tuple[str, ...], request: Request, source: Destination) -> ServerTransaction:
        if len(self.server) >= self.max_transactions:
            raise SIPError(503, "Too many transactions in progress")
        txn = ServerTransaction(self, key, request, source)
        self.server[key] = txn
        return txn

    def match_client(self, response: Response) -> ClientTransaction | None:
        via = response.top_via
        branch = via.branch
        if not branch:
            return None
        method = response.cseq[1]
        if method == "ACK":
            method = "INVITE"
        return self.client.get((branch, method))

    def new_client(
        self, request: Request, branch: str, destination: Destination, user: ClientUser
    ) -> ClientTransaction:
        method = request.method
        key = (branch, method)
        txn = ClientTransaction(self, key, request, destination, user)
        self.client[key] = txn
        return txn

    def next_deadline(self) -> float | None:
        return self.heap.next_deadline()

    def handle_timers(self, now: float) -> int:
        return self.heap.expire(now)
