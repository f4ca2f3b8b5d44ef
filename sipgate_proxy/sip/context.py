"""The response context of a stateful proxy (RFC 3261 16.7, 16.10).

One context per server transaction: its branches (one client transaction
each), Timer C, the best response so far, serial failover to the next
target and CANCEL of the branches that are still pending.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.logger import Logger

from .message import RELEASED, Header, Request, Response, make_response, pretty_name
from .timers import Timer
from .transaction import ClientTransaction, Destination, ServerTransaction

if TYPE_CHECKING:
    from ..routing.decisions import Target
    from .proxy import ProxyCore

log = Logger(namespace="sipgate_proxy.core")

#: 4xx statuses RFC 3261 16.7 step 6 prefers within the 4xx class
_PREFERRED_4XX = (401, 407, 415, 420, 484)


def response_rank(status: int) -> tuple[int, int]:
    """Sort key: lower is better (RFC 3261 16.7 step 6)."""
    if 600 <= status < 700:
        return (0, status)
    if 200 <= status < 300:
        return (1, status)
    klass = status // 100
    if klass == 4 and status in _PREFERRED_4XX:
        return (2, _PREFERRED_4XX.index(status))
    if klass == 5 and status == 503:
        # a 503 from downstream says nothing about us: least preferred 5xx
        return (klass + 1, 99)
    return (klass + 1, status)


class Branch:
    """One client transaction of a response context."""

    __slots__ = (
        "base",
        "cancel_wanted",
        "cancelled",
        "context",
        "final",
        "hop_transport",
        "hops",
        "provisional",
        "request",
        "responded",
        "silence_timer",
        "target",
        "timer_c",
        "txn",
    )

    def __init__(self, context: ResponseContext, target: Target, request: Request) -> None:
        self.context = context
        self.target = target
        self.request = request
        #: the request before Record-Route and Via, kept while other
        #: destinations of the same hop may still be tried (RFC 3263 4.3)
        self.base: Request | None = None
        #: destinations of the hop not tried yet, in failover order
        self.hops: list[Destination] = []
        #: the transport the URI named, if any (18.1.1 may switch UDP to TCP otherwise)
        self.hop_transport: str | None = None
        self.txn: ClientTransaction | None = None
        self.provisional = False
        self.final: int | None = None
        self.cancel_wanted = False
        self.cancelled = False
        self.timer_c: Timer | None = None
        #: any response at all (100 included) came: the destination lives
        self.responded = False
        #: armed for Forward.silent_after; cancelled by the first response
        self.silence_timer: Timer | None = None

    @property
    def done(self) -> bool:
        return self.final is not None

    def notify(self, event: str, status: int, now: float) -> None:
        """Tell the target's observer (passive health) how the branch goes."""
        observer = self.target.observer
        if observer is None:
            return
        try:
            observer.branch_event(self.target, event, status, now)
        except Exception:
            log.failure("branch observer failed on {event}", event=event)


class ResponseContext:
    """Branches and best response for one proxied request."""

    __slots__ = (
        "admission_keys",
        "auth_headers",
        "best",
        "branches",
        "cancelled",
        "core",
        "decided_by",
        "decision",
        "fail_silent",
        "failover",
        "final_sent",
        "finished",
        "grouped",
        "invite",
        "logged",
        "on_done",
        "pending_targets",
        "redirect_mode",
        "redirects",
        "request",
        "serial",
        "server",
        "silent_after",
        "started",
        "starting",
    )

    def __init__(
        self,
        core: ProxyCore,
        server: ServerTransaction,
        request: Request,
        started: float,
    ) -> None:
        self.core = core
        self.server = server
        self.request = request
        self.invite = request.method == "INVITE"
        self.branches: list[Branch] = []
        self.pending_targets: list[Target] = []
        self.serial = False
        #: targets come in groups: a group rings in parallel, the next group
        #: starts when every branch of the current one failed (not with 6xx)
        self.grouped = False
        #: call admission keys counted once the call is answered
        self.admission_keys: tuple[str, ...] = ()
        self.failover: frozenset[int] = frozenset()
        self.best: Response | None = None
        self.auth_headers: list[Header] = []
        self.final_sent = False
        self.cancelled = False
        self.started = started
        self.decided_by = ""
        self.on_done: Callable[[ResponseContext, int], None] | None = None
        self.finished = False
        self.logged = False
        #: set while branches are being started, so none ends the context early
        self.starting = False
        #: give up on INVITE branches silent at Timer A (Forward.fail_silent)
        self.fail_silent = False
        self.silent_after: float | None = None
        #: 3xx responses followed so far; while following, any failure moves on
        self.redirects = 0
        self.redirect_mode = False
        #: what was decided, for the log line ("static:forward/serial/2")
        self.decision = ""

    def release(self) -> None:
        """Drop the messages a finished context no longer needs.

        The transactions linger (32 s for an accepted INVITE) to absorb
        retransmissions; holding whole requests that long made the garbage
        collector walk them again and again. Kept: what a late 2xx needs to
        go upstream, and the request of a branch that may still have to be
        cancelled.
        """
        for branch in self.branches:
            if branch.cancel_wanted and not branch.cancelled:
                continue
            branch.request = RELEASED
            branch.base = None
            branch.hops = []
            if branch.txn is not None:
                branch.txn.request = RELEASED
        self.server.request = RELEASED
        self.request = RELEASED
        self.best = None

    def active_branches(self) -> list[Branch]:
        return [b for b in self.branches if not b.done]

    # -- responses from branches ------------------------------------------

    def branch_response(self, branch: Branch, response: Response, now: float) -> None:
        status = response.status
        core = self.core
        if not branch.responded:
            branch.responded = True
            if branch.silence_timer is not None:
                branch.silence_timer.cancel()
                branch.silence_timer = None
            branch.notify("response", status, now)
        if status < 200:
            branch.provisional = True
            if branch.cancel_wanted and not branch.cancelled:
                # a branch we gave up on (or the caller cancelled) rings now
                core.send_cancel(branch, now)
            if branch.final is not None or status == 100:
                return
            if self.invite and branch.timer_c is not None:
                core.restart_timer_c(branch, now)
            if not self.final_sent:
                core.forward_response(self, response, now)
            return
        if 200 <= status < 300:
            if branch.final is None:
                branch.final = status
                core.stop_timer_c(branch)
                branch.notify("final", status, now)
                if self.admission_keys and self.invite:
                    core.call_answered(self, now)
            # every 2xx to an INVITE goes upstream, even after a final one
            if self.invite or not self.final_sent:
                self.final_sent = True
                core.forward_response(self, response, now)
            self.cancel_pending(now, "200")
            self.check_done(now)
            return
        if branch.final is not None:
            return
        branch.final = status
        core.stop_timer_c(branch)
        branch.notify("final", status, now)
        if 300 <= status < 400 and core.follow_redirect(self, branch, response, now):
            self.check_done(now)
            return
        if status in (401, 407):
            key = "www-authenticate" if status == 401 else "proxy-authenticate"
            self.auth_headers.extend(entry for entry in response.headers if entry[0] == key)
        self.consider(response)
        if status >= 600:
            self.cancel_pending(now, "600")
        else:
            self.serial_step(status, now)
        self.check_done(now)

    def branch_failed(self, branch: Branch, status: int, reason: str, now: float) -> None:
        """A branch ended without a final response: timeout or transport error."""
        if branch.final is not None:
            return
        if branch.cancel_wanted:
            status, reason = 487, "Request Terminated"
        branch.final = status
        self.core.stop_timer_c(branch)
        branch.notify("final", status, now)
        self.consider(make_response(branch.request, status, reason))
        self.serial_step(status, now)
        self.check_done(now)

    def consider(self, response: Response) -> None:
        best = self.best
        if best is None or response_rank(response.status) < response_rank(best.status):
            self.best = response

    def serial_step(self, status: int, now: float) -> None:
        """After a failed branch: try the next target, or stop trying."""
        if not self.pending_targets:
            return
        if self.grouped:
            self._group_step(status, now)
            return
        moves_on = status in self.failover or (self.redirect_mode and 300 <= status < 600)
        if not moves_on or self.cancelled or self.final_sent:
            self.pending_targets.clear()
            return
        while self.pending_targets:
            target = self.pending_targets.pop(0)
            if self.core.start_branch(self, target, now):
                return

    def _group_step(self, status: int, now: float) -> None:
        if status >= 600 or self.cancelled or self.final_sent:
            self.pending_targets.clear()
            return
        if any(not branch.done for branch in self.branches):
            return  # the rest of this group is still ringing
        group = self.pending_targets[0].group
        starting = [t for t in self.pending_targets if t.group == group]
        self.pending_targets = [t for t in self.pending_targets if t.group != group]
        self.starting = True
        for target in starting:
            self.core.start_branch(self, target, now)
        self.starting = False

    def check_done(self, now: float) -> None:
        if self.finished or self.starting:
            return
        if any(not b.done for b in self.branches):
            return
        self.finished = True
        status = 0
        if not self.final_sent:
            best = self.best
            ours = best is not None
            if best is None:
                best = make_response(self.request, 408, "Request Timeout")
            best = self._finalise(best)
            self.final_sent = True
            self.core.forward_response(self, best, now, ours)
            status = best.status
        elif self.best is not None and self.best.status < 300:
            status = self.best.status
        if self.on_done is not None:
            self.on_done(self, status)
        self.release()

    def _finalise(self, best: Response) -> Response:
        status = best.status
        if status == 503:
            # RFC 3261 16.7 step 6: a downstream 503 becomes our 500
            best = best.copy()
            best.status = 500
            best.reason = "Server Internal Error (all destinations unavailable)"
        elif status in (401, 407) and self.auth_headers:
            key = "www-authenticate" if status == 401 else "proxy-authenticate"
            best = best.copy()
            best.headers = [entry for entry in best.headers if entry[0] != key]
            best.headers.extend(self.auth_headers)
        return best

    # -- cancel ------------------------------------------------------------

    def cancel_pending(self, now: float, cause: str) -> None:
        """CANCEL every branch without a final response (16.7 step 10, 16.10)."""
        self.pending_targets.clear()
        if not self.invite:
            return
        for branch in self.branches:
            if branch.done or branch.cancel_wanted:
                continue
            branch.cancel_wanted = True
            if branch.provisional:
                self.core.send_cancel(branch, now)

    def cancel(self, now: float) -> None:
        """The caller sent CANCEL."""
        self.cancelled = True
        self.cancel_pending(now, "cancel")


def reason_header(cause: str) -> tuple[str, str] | None:
    if cause == "200":
        return ("Reason", 'SIP;cause=200;text="Call completed elsewhere"')
    if cause == "600":
        return ("Reason", 'SIP;cause=600;text="Busy Everywhere"')
    return None


__all__ = ["Branch", "ResponseContext", "pretty_name", "reason_header", "response_rank"]
