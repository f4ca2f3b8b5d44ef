"""What happens on a branch after it left: responses, CANCEL, Timer C, redirects,
silent destinations, and OPTIONS probes of our own (IRequestSender).

A mixin of :class:`~sipgate_proxy.sip.proxy.ProxyCore`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.logger import Logger

from ..routing.decisions import Target
from .context import Branch, ResponseContext, reason_header
from .errors import SIPError
from .message import Header, Request, Response
from .probe import ProbeUser
from .settings import CoreSettings, Interface
from .timers import Timer
from .transaction import MAGIC_COOKIE, ClientTransaction, Destination, TransactionLayer
from .uri import URI, parse_uri

log = Logger(namespace="sipgate_proxy.core")


class BranchControl:
    settings: CoreSettings
    layer: TransactionLayer
    clock: Callable[[], float]
    _prefix: str

    if TYPE_CHECKING:  # provided by ProxyCore and Forwarding

        def _tag(self) -> str: ...

        def _wakeup(self) -> None: ...

        def start_branch(self, context: ResponseContext, target: Target, now: float) -> bool: ...

        def next_destination(self, branch: Branch, status: int, reason: str, now: float) -> bool: ...

        def _destination(self, uri: URI, request: Request) -> Destination: ...

        def _interface_for(self, dest: Destination) -> Interface: ...

    def on_response(self, txn: ClientTransaction, response: Response, now: float) -> None:
        branch = txn.user_data
        if not isinstance(branch, Branch):
            return  # the answer to a CANCEL we sent
        if txn is not branch.txn:
            # a destination given up for the next one of the same hop answers
            # after all: only a 2xx matters (the call is up there)
            if 200 <= response.status < 300 and txn.invite:
                branch.context.branch_response(branch, response, now)
            return
        if response.status == 503 and self.next_destination(branch, 503, response.reason, now):
            return
        branch.context.branch_response(branch, response, now)

    def on_timeout(self, txn: ClientTransaction, now: float) -> None:
        branch = txn.user_data
        if isinstance(branch, Branch) and txn is branch.txn:
            if self.next_destination(branch, 408, "Request Timeout", now):
                return
            branch.context.branch_failed(branch, 408, "Request Timeout", now)

    def on_transport_error(self, txn: ClientTransaction, now: float) -> None:
        branch = txn.user_data
        if isinstance(branch, Branch) and txn is branch.txn:
            if self.next_destination(branch, 503, "transport error", now):
                return
            branch.context.branch_failed(branch, 503, "Service Unavailable (transport error)", now)

    def on_retransmit(self, txn: ClientTransaction, now: float) -> None:
        """Timer A fired: an INVITE branch has not answered at all yet."""
        branch = txn.user_data
        if not isinstance(branch, Branch) or branch.responded or branch.done:
            return
        branch.notify("suspect", 0, now)
        if branch.context.fail_silent and branch.context.silent_after is None:
            self._abandon_silent(branch, now)

    def _arm_silence(self, branch: Branch, deadline: float) -> Timer:
        def fire(now: float) -> None:
            branch.silence_timer = None
            if branch.responded or branch.done:
                return
            branch.notify("suspect", 0, now)
            self._abandon_silent(branch, now)

        return self.layer.heap.arm(deadline, fire)

    def _abandon_silent(self, branch: Branch, now: float) -> None:
        """A healthy destination answers 100 within milliseconds: move on now
        rather than after Timer B. Should it answer after all, a provisional
        response gets a CANCEL and a 2xx still goes upstream.

        The other INVITEs waiting on the same destination with no answer yet
        (sent after this one) are silent for the same reason: they move on
        at once instead of each waiting out its own silence timer.
        """
        txn = branch.txn
        self._give_up(branch, now)
        if txn is None:
            return
        where = txn.destination[:3]
        for other in list(self.layer.client.values()):
            peer = other.user_data
            if (
                isinstance(peer, Branch)
                and peer is not branch
                and other.invite
                and not peer.responded
                and not peer.done
                and peer.context.fail_silent
                and other.destination[:3] == where
            ):
                self._give_up(peer, now)

    def _give_up(self, branch: Branch, now: float) -> None:
        if branch.silence_timer is not None:
            branch.silence_timer.cancel()
            branch.silence_timer = None
        if branch.txn is not None:
            branch.txn.stop_retransmissions()
        branch.context.branch_failed(branch, 408, "Request Timeout (destination silent)", now)
        branch.cancel_wanted = True

    def follow_redirect(self, context: ResponseContext, branch: Branch, response: Response, now: float) -> bool:
        """Recurse on a 3xx (16.7 step 4): its Contacts become the next targets."""
        if not self.settings.follow_redirects or context.cancelled or context.final_sent:
            return False
        if context.redirects >= self.settings.max_redirects:
            return False
        try:
            contacts = response.name_addrs("contact")
        except SIPError:
            return False
        ranked = sorted(
            (c for c in contacts if c.uri.scheme in ("sip", "sips")),
            key=lambda c: -float(c.param("q") or "1"),
        )
        if not ranked:
            return False
        context.redirects += 1
        context.redirect_mode = True
        targets = [Target(str(c.uri)) for c in ranked]
        context.consider(response)
        context.pending_targets[:0] = targets[1:]
        if not self.start_branch(context, targets[0], now):
            context.serial_step(response.status, now)
        return True

    def send_cancel(self, branch: Branch, now: float) -> None:
        txn = branch.txn
        if txn is None or branch.cancelled:
            return
        branch.cancelled = True
        request = branch.request
        headers: list[Header] = []
        for entry in request.headers:
            name = entry[0]
            if name == "via":
                if not any(h[0] == "via" for h in headers):
                    top = str(request.vias[0])
                    headers.append(("via", top, f"Via: {top}"))
            elif name in ("from", "to", "call-id", "route"):
                headers.append(entry)
        seq = request.cseq[0]
        headers.append(("cseq", f"{seq} CANCEL", f"CSeq: {seq} CANCEL"))
        headers.append(("max-forwards", "70", "Max-Forwards: 70"))
        reason = reason_header("200" if branch.context.final_sent else "")
        if reason is not None:
            headers.append(("reason", reason[1], f"{reason[0]}: {reason[1]}"))
        cancel = Request("CANCEL", request.uri_text, headers)
        cancel_txn = self.layer.new_client(cancel, request.vias[0].branch or "", txn.destination, self)
        cancel_txn.start(now)

    def send_options(self, uri: str, on_result: Callable[[int], None], timeout: float | None = None) -> None:
        """Send an OPTIONS probe to ``uri``; ``on_result(status)`` once (408: no answer, 503: transport)."""
        now = self.clock()
        user = ProbeUser(on_result)
        try:
            target = parse_uri(uri)
            request = Request("OPTIONS", str(target), [])
            dest = self._destination(target, request)
            interface = self._interface_for(dest)
        except SIPError:
            on_result(503)
            return
        branch = f"{MAGIC_COOKIE}{self._prefix}p{self._tag()}"
        call_id = f"{self._tag()}@{interface.advertise}"
        lines = (
            ("via", f"SIP/2.0/{dest.transport.upper()} {interface.sent_by()};branch={branch}"),
            ("max-forwards", "70"),
            ("from", f"<sip:{self.settings.server}@{interface.sent_by()}>;tag={self._tag()}"),
            ("to", f"<{target}>"),
            ("call-id", call_id),
            ("cseq", "1 OPTIONS"),
        )
        for key, value in lines:
            request.append(key, value)
        txn = self.layer.new_client(request, branch, dest._replace(local=interface.name), user)
        if timeout is not None:
            user.timer = self.layer.heap.arm(now + timeout, user.expire)
        txn.start(now)
        self._wakeup()

    def _fire_timer_c(self, branch: Branch, now: float) -> None:
        branch.timer_c = None
        if branch.done:
            return
        if branch.provisional:
            branch.cancel_wanted = True
            self.send_cancel(branch, now)
            # the 487 ends the branch; should it never come, stop waiting
            self._arm_cancel_guard(branch, now)
        else:
            branch.context.branch_failed(branch, 408, "Request Timeout", now)
            if branch.txn is not None:
                branch.txn.expire_in(now, 0.0)

    def _arm_cancel_guard(self, branch: Branch, now: float) -> None:
        """After our CANCEL, wait 64*T1 for the 487, then end the branch (16.10)."""
        if branch.txn is not None:
            branch.txn.expire_in(now, 64 * self.settings.timers.t1)

    def _arm_timer_c(self, branch: Branch, now: float) -> Timer:
        def fire(t: float) -> None:
            self._fire_timer_c(branch, t)

        return self.layer.heap.arm(now + self.settings.timer_c, fire)

    def restart_timer_c(self, branch: Branch, now: float) -> None:
        timer: Timer | None = branch.timer_c
        if timer is not None:
            timer.cancel()
            branch.timer_c = self._arm_timer_c(branch, now)

    def stop_timer_c(self, branch: Branch) -> None:
        if branch.timer_c is not None:
            branch.timer_c.cancel()
            branch.timer_c = None
