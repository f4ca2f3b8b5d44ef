"""The stateful proxy core (RFC 3261 section 16), without I/O.

Bytes come in with the address they came from and the time; bytes leave
through ``transmit``; timers wait on the transaction layer's heap. The I/O
layer calls :meth:`ProxyCore.next_deadline` after every call into the core
and :meth:`ProxyCore.handle_timers` when that time has come. When a router
answers later (a Deferred), the core calls ``on_wakeup`` so that the I/O
layer re-arms its timer.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from ..routing.decisions import Answer, Forward, Redirect, Reject, RequestContext, Target
from ..security.admission import CallCounter
from .branching import BranchControl
from .context import Branch, ResponseContext
from .errors import SIPError
from .forwarding import Forwarding, Locate, NextHop
from .headers import parse_name_addr, parse_via, split_values
from .message import Message, Request, Response, cached_name_addr, make_response
from .parser import ParseError, parse_datagram
from .settings import ALLOW, CoreSettings, Interface, Router, bare, undeliverable, via_destination
from .transaction import (
    MAGIC_COOKIE,
    Destination,
    TransactionLayer,
    Transmit,
)
from .uri import URI
from .validate import stamp_via, validate_request

log = Logger(namespace="sipgate_proxy.core")


class ProxyCore(Forwarding, BranchControl):
    def __init__(
        self,
        interfaces: list[Interface],
        settings: CoreSettings,
        router: Router,
        transmit: Transmit,
        clock: Callable[[], float],
    ) -> None:
        if not interfaces:
            raise ValueError("the proxy needs at least one interface")
        self.interfaces = interfaces
        self.settings = settings
        self.router = router
        self.transmit = transmit
        self.clock = clock
        self.on_wakeup: Callable[[], None] | None = None
        #: server location (RFC 3263) of the I/O layer; None: hosts go out as named
        self.locate: Locate | None = None
        self.layer = TransactionLayer(transmit, settings.timers, settings.max_transactions)
        self._by_name = {i.name: i for i in interfaces}
        self._names = {i.advertise.lower() for i in interfaces} | {i.host for i in interfaces}
        self._names.update(settings.domains)
        self._ports = {i.advertise_port for i in interfaces} | {i.port for i in interfaces}
        self._sent_by = {(bare(i.advertise.lower()), i.advertise_port) for i in interfaces}
        self._sent_by_text = tuple({i.sent_by() for i in interfaces})
        self.calls = CallCounter(settings.admission)
        self._prefix = os.urandom(4).hex()
        self._counter = 0
        self.info_enabled = True
        self.debug_enabled = False

    # -- entry points --------------------------------------------------------

    def next_deadline(self) -> float | None:
        return self.layer.next_deadline()

    def handle_timers(self, now: float) -> None:
        self.layer.handle_timers(now)

    def receive_datagram(self, data: bytes, source: Destination, now: float) -> None:
        try:
            message = parse_datagram(data, self.settings.limits)
        except ParseError as error:
            self._bad_message(error, error.message, source, now)
            return
        except SIPError as error:
            self._bad_message(error, None, source, now)
            return
        if message is not None:
            self.receive_message(message, source, now)

    def receive_message(self, message: Message | ParseError, source: Destination, now: float) -> None:
        if isinstance(message, ParseError):
            self._bad_message(message, message.message, source, now)
            return
        if self.debug_enabled:
            log.debug(
                "recv {transport} {host}:{port}\n{text}",
                transport=source.transport,
                host=source.host,
                port=source.port,
                text=message.header_text(),
            )
        try:
            if isinstance(message, Request):
                self._request(message, source, now)
            else:
                assert isinstance(message, Response)
                self._response(message, now)
        except SIPError as error:
            self._bad_message(error, message, source, now)

    def connection_failed(self, destination: Destination, now: float) -> None:
        """A stream to ``destination`` could not be opened or broke."""
        for txn in list(self.layer.client.values()):
            dest = txn.destination
            if (dest.transport, dest.host, dest.port) == destination[:3]:
                txn.transport_error(now)

    # -- bad input -------------------------------------------------------------

    def _bad_message(self, error: SIPError, message: Message | None, source: Destination, now: float) -> None:
        if not isinstance(message, Request) or message.method == "ACK":
            log.info(
                "dropped message from {host}:{port}: {status} {reason}",
                host=source.host,
                port=source.port,
                status=error.status,
                reason=error.reason,
            )
            return
        try:
            # the error may come before the request's Via was stamped (18.2.1)
            stamp_via(message, source.host, source.port)
            dest = self._response_destination(message, source)
            response = make_response(message, error.status, error.reason, self._tag(), error.headers)
            self._server_header(response)
        except SIPError:
            # no usable Via: answer the address the request came from
            headers = [h for h in message.headers if h[0] in ("via", "from", "to", "call-id", "cseq")]
            response = Response(error.status, error.reason, headers)
            dest = source
        self.transmit(response.to_bytes(), dest)
        self._log_txn(message, error.status, 0, now, now, "invalid")

    # -- requests --------------------------------------------------------------

    def _request(self, request: Request, source: Destination, now: float) -> None:
        stamp_via(request, source.host, source.port)
        method = request.method
        layer = self.layer
        key, server = layer.match_server(request)
        if server is not None:
            if method == "ACK" and server.state != "completed":
                # ACK for a 2xx: a request of its own, routed statelessly
                self._forward_ack(request, source, now)
                return
            server.receive_retransmission(request, now)
            return
        if method == "ACK":
            self._forward_ack(request, source, now)
            return
        max_forwards = validate_request(request)
        if method == "BYE" and self.calls:
            self.calls.ended(request.call_id)
        if method == "CANCEL":
            self._cancel(request, source, now)
            return
        response_dest = self._response_destination(request, source)
        server = layer.new_server(key, request, response_dest)
        context = ResponseContext(self, server, request, now)
        server.user_data = context
        if method == "INVITE":
            trying = make_response(request, 100, "Trying")
            server.send_response(trying, response_dest, now)
        if request.method == "OPTIONS" and self._to_self(request):
            return self._answer_self(context, now)
        if max_forwards == 0:
            return self.reply(context, 483, "Too Many Hops", now)
        if self._is_loop(request):
            return self.reply(context, 482, "Loop Detected", now)
        had_route = request.has("route")
        self._preprocess_route(request)
        if request.has("route") or (had_route and request.to_tag is not None):
            # a request with a route set follows it, and so does an in-dialog
            # request that only named us: routers are not asked (16.12).
            # An initial request whose only Route was us (we are its
            # outbound proxy) is routed like any other.
            return self._forward(context, Forward((Target(request.uri_text),)), now, "route")
        ctx = RequestContext(source.transport, source.host, source.port, now)
        trusted = self.settings.trusted
        if trusted:
            tag = trusted.tag(source.transport, source.host, source.port)
            if tag is not None:
                ctx.attrs["trusted"] = tag
        try:
            result = self.router.route(request, ctx)
        except Exception:
            log.failure("router failed on Call-ID {call_id}", call_id=request.get("call-id"))
            return self.reply(context, 500, "Server Internal Error (routing failed)", now)
        if hasattr(result, "addCallbacks"):
            result.addCallbacks(
                self._routed_later,
                self._route_failed,
                callbackArgs=(context, ctx),
                errbackArgs=(context,),
            )
            return
        self._decide(context, result, ctx, now)

    def _routed_later(self, result: Any, context: ResponseContext, ctx: RequestContext) -> None:
        self._decide(context, result, ctx, self.clock())
        self._wakeup()

    def _route_failed(self, failure: Any, context: ResponseContext) -> None:
        log.failure(
            "router failed on Call-ID {call_id}",
            failure=failure,
            call_id=context.request.get("call-id"),
        )
        self.reply(context, 500, "Server Internal Error (routing failed)", self.clock())
        self._wakeup()

    def _wakeup(self) -> None:
        if self.on_wakeup is not None:
            self.on_wakeup()

    def _decide(self, context: ResponseContext, decision: Any, ctx: RequestContext, now: float) -> None:
        if context.cancelled:
            return self.reply(context, 487, "Request Terminated", now)
        context.decided_by = ctx.decided_by or ""
        request = context.request
        if decision is None:
            uri = request.uri
            if uri.scheme == "tel":
                return self.reply(context, 404, "Not Found (no route for tel URI)", now)
            if self._is_ours(uri):
                if uri.user is None and not request.has("route"):
                    # addressed to the proxy itself, and no router (registrar) took it
                    return self._answer_self(context, now)
                return self.reply(context, 404, "Not Found", now)
            context.decided_by = context.decided_by or "request-uri"
            decision = Forward((Target(request.uri_text),))
        if isinstance(decision, Forward):
            if self.settings.admission.enabled and request.method == "INVITE" and request.to_tag is None:
                keys = self.calls.keys_for(ctx.attrs)
                full = self.calls.over_limit(keys, now)
                if full is not None:
                    admission = self.settings.admission
                    context.decision = f"{context.decided_by}:admission"
                    if admission.status == 486:
                        return self.reply(context, 486, f"Busy Here (call limit of {full})", now)
                    retry = (("Retry-After", str(admission.retry_after)),)
                    return self.reply(context, 503, f"Service Unavailable (call limit of {full})", now, retry)
                context.admission_keys = keys
            self._forward(context, decision, now, context.decided_by)
        elif isinstance(decision, Reject):
            context.decision = f"{context.decided_by}:reject"
            self.reply(context, decision.status, decision.reason, now)
        elif isinstance(decision, Answer):
            context.decision = f"{context.decided_by}:answer"
            self.reply(context, decision.status, decision.reason, now, decision.headers)
        elif isinstance(decision, Redirect):
            context.decision = f"{context.decided_by}:redirect"
            contacts = ", ".join(f"<{c}>" for c in decision.contacts)
            self.reply(context, decision.status, None, now, (("Contact", contacts),))
        else:
            log.error("router returned {decision!r}", decision=decision)
            self.reply(context, 500, "Server Internal Error (bad routing decision)", now)

    def call_answered(self, context: ResponseContext, now: float) -> None:
        """An admitted INVITE got its 2xx: the call counts until its BYE."""
        self.calls.established(context.request.call_id, context.admission_keys, now)

    def reply(
        self,
        context: ResponseContext,
        status: int,
        reason: str | None,
        now: float,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """Answer the request of ``context`` ourselves and end it."""
        response = make_response(context.request, status, reason, self._tag(), extra)
        self._server_header(response)
        context.final_sent = True
        context.finished = True
        context.logged = True
        context.server.send_response(response, context.server.source, now)
        self._log_txn(
            context.request, status, len(context.branches), context.started, now, context.decision or context.decided_by
        )
        context.release()

    def _answer_self(self, context: ResponseContext, now: float) -> None:
        request = context.request
        if request.method == "OPTIONS":
            extra = (("Allow", ALLOW), ("Supported", ""), ("Accept", "application/sdp"))
            return self.reply(context, 200, "OK", now, extra)
        return self.reply(context, 405, "Method Not Allowed", now, (("Allow", "OPTIONS"),))

    def _cancel(self, request: Request, source: Destination, now: float) -> None:
        response_dest = self._response_destination(request, source)
        invite_key = list(self.layer.match_server(request)[0])
        invite_key[-1] = "INVITE"
        invite = self.layer.server.get(tuple(invite_key))
        cancel_key = self.layer.match_server(request)[0]
        server = self.layer.new_server(cancel_key, request, response_dest)
        if invite is None or not isinstance(invite.user_data, ResponseContext):
            response = make_response(request, 481, "Call/Transaction Does Not Exist", self._tag())
            server.send_response(response, response_dest, now)
            self._log_txn(request, 481, 0, now, now, "cancel")
            return
        server.send_response(make_response(request, 200, "OK", self._tag()), response_dest, now)
        self._log_txn(request, 200, 0, now, now, "cancel")
        context: ResponseContext = invite.user_data
        if not context.final_sent:
            context.cancel(now)
            if not context.branches and not context.finished:
                self.reply(context, 487, "Request Terminated", now)

    # -- route information -----------------------------------------------------

    def _is_ours(self, uri: URI) -> bool:
        if bare(uri.host) not in self._names and uri.host not in self._names:
            return False
        return uri.port is None or uri.port in self._ports

    def _to_self(self, request: Request) -> bool:
        uri = request.uri
        return uri.user is None and uri.scheme != "tel" and not request.has("route") and self._is_ours(uri)

    def _preprocess_route(self, request: Request) -> None:
        """RFC 3261 16.4: undo a strict router; pop our own Route entries."""
        uri = request.uri
        if uri.has_param("lr") and self._is_ours(uri):
            routes = request.values("route")
            if routes:
                request.uri = parse_name_addr(routes[-1]).uri
                request.remove("route")
                if len(routes) > 1:
                    request.append("route", ", ".join(routes[:-1]))
        while True:
            value = request.get("route")
            if value is None:
                return
            first = split_values(value)[0] if "," in value else value
            if not self._is_ours(cached_name_addr(first).uri):
                return
            request.pop_first_value("route")

    def _is_loop(self, request: Request) -> bool:
        """16.3 step 4: our own Via with the same loop hash means a loop."""
        marks = self._sent_by_text
        for name, value, _ in request.headers:
            if name == "via" and any(mark in value for mark in marks):
                break
        else:
            return False
        for via in request.vias:
            if (bare(via.host.lower()), via.port or 5060) in self._sent_by:
                branch = via.branch or ""
                if branch[7:15] == self._loop_hash(request):
                    return True
        return False

    def _loop_hash(self, request: Request) -> str:
        text = f"{request.uri_text}|{request.from_tag}|{request.to_tag}|{request.call_id}|{request.cseq[0]}"
        return f"{zlib.crc32(text.encode('latin-1')):08x}"

    def _new_branch(self, request: Request) -> str:
        self._counter += 1
        return f"{MAGIC_COOKIE}{self._loop_hash(request)}.{self._prefix}{self._counter:x}"

    def _tag(self) -> str:
        self._counter += 1
        return f"{self._prefix}{self._counter:x}"

    # -- forwarding ------------------------------------------------------------

    def _forward(self, context: ResponseContext, decision: Forward, now: float, decided_by: str) -> None:
        targets = list(decision.targets)
        context.decided_by = decided_by
        context.decision = f"{decided_by}:forward/{decision.mode}/{len(targets)}"
        if not targets:
            return self.reply(context, 480, "Temporarily Unavailable (no targets)", now)
        context.serial = decision.mode != "parallel"
        context.failover = self.settings.failover if decision.failover is None else decision.failover
        context.fail_silent = decision.fail_silent
        context.silent_after = decision.silent_after
        if decision.mode == "grouped":
            context.grouped = True
            targets.sort(key=lambda target: target.group)
            first = targets[0].group
            context.pending_targets = [t for t in targets if t.group != first]
            targets = [t for t in targets if t.group == first]
        elif context.serial:
            context.pending_targets = targets[1:]
            targets = targets[:1]
        context.starting = True
        for target in targets:
            self.start_branch(context, target, now)
        context.starting = False
        context.check_done(now)

    def start_branch(self, context: ResponseContext, target: Target, now: float) -> bool:
        """Send the request of ``context`` to ``target`` (16.6); False if impossible."""
        original = context.request
        request = original.copy()
        try:
            hop = self._prepare(request, target)
            located = self._locate_hop(hop)
        except SIPError as error:
            branch = Branch(context, target, request)
            context.branches.append(branch)
            return self._unroutable(branch, error.status, error.reason)
        branch = Branch(context, target, request)
        branch.hop_transport = hop.transport
        context.branches.append(branch)
        if isinstance(located, list):
            branch.hops = located
            return self._attempt(branch, now, None, initial=True)
        # a name to look up first; the branch waits for it (and fails on its own)
        located.addCallbacks(self._located, self._not_located, callbackArgs=(branch,), errbackArgs=(branch, hop))
        return True

    def _unroutable(self, branch: Branch, status: int, reason: str) -> bool:
        """A branch that could not leave while its target was being started: it
        ends now, and the caller of start_branch moves on by itself."""
        context = branch.context
        branch.final = status
        context.consider(make_response(context.request, status, reason))
        log.info(
            "cannot send to {target}: {reason} (Call-ID {call_id})",
            target=branch.target.uri,
            reason=reason,
            call_id=context.request.get("call-id"),
        )
        return False

    def _located(self, hops: list[Destination], branch: Branch) -> None:
        if branch.done:
            return
        context = branch.context
        now = self.clock()
        if context.cancelled or context.final_sent:
            context.branch_failed(branch, 487, "Request Terminated", now)
        else:
            branch.hops = list(hops)
            self._attempt(branch, now, None)
        self._wakeup()

    def _not_located(self, failure: Any, branch: Branch, hop: NextHop) -> None:
        if branch.done:
            return
        reason = getattr(failure.value, "reason", None) or failure.getErrorMessage()
        log.info("cannot resolve {host}: {reason}", host=hop.host, reason=reason)
        branch.context.branch_failed(branch, 503, f"Service Unavailable (cannot resolve {hop.host})", self.clock())
        self._wakeup()

    def _attempt(self, branch: Branch, now: float, failure: tuple[int, str] | None, initial: bool = False) -> bool:
        """Send the branch's request to its next untried destination.

        False when none is left or usable; then the branch fails with
        ``failure`` (or the last reason a destination could not be used):
        at once when ``initial`` (the caller moves on), else through the
        context, which moves on by itself.
        """
        context = branch.context
        while branch.hops:
            dest = branch.hops.pop(0)
            last = not branch.hops
            # the request as prepared, before Record-Route and Via: copied while
            # other destinations may still need it, used itself by the last one
            base = branch.base if branch.base is not None else branch.request
            request = base if last else base.copy()
            branch.base = None if last else base
            dest = self._size_transport(dest, branch.hop_transport, request)
            try:
                interface = self._interface_for(dest)
            except SIPError as error:
                failure = (error.status, error.reason)
                continue
            self._record_route(request, interface, context.server.source)
            dest = dest._replace(local=interface.name)
            branch_id = self._new_branch(context.request)
            request.insert_first("via", f"SIP/2.0/{dest.transport.upper()} {interface.sent_by()};branch={branch_id}")
            branch.request = request
            txn = self.layer.new_client(request, branch_id, dest, self)
            txn.user_data = branch
            branch.txn = txn
            if request.method == "INVITE":
                if branch.timer_c is not None:
                    branch.timer_c.cancel()
                branch.timer_c = self._arm_timer_c(branch, now)
                if context.fail_silent and context.silent_after is not None:
                    if branch.silence_timer is not None:
                        branch.silence_timer.cancel()
                    branch.silence_timer = self._arm_silence(branch, now + context.silent_after)
            if self.debug_enabled:
                log.debug("send {dest}\n{text}", dest=dest, text=request.header_text())
            txn.start(now)
            return True
        status, reason = failure or (503, "Service Unavailable (no usable destination)")
        if initial:
            return self._unroutable(branch, status, reason)
        context.branch_failed(branch, status, reason, now)
        return False

    def next_destination(self, branch: Branch, status: int, reason: str, now: float) -> bool:
        """RFC 3263 4.3: after a transport error, a timeout or a 503, try the
        hop's next destination within the same branch. False: none left."""
        if not branch.hops or branch.done or branch.provisional or branch.cancel_wanted:
            return False
        context = branch.context
        if context.cancelled or context.final_sent:
            return False
        previous = branch.txn
        if self.info_enabled and previous is not None:
            dest = previous.destination
            log.info(
                "{transport}:{host}:{port} failed ({status} {reason}); trying the next destination (Call-ID {call_id})",
                transport=dest.transport,
                host=dest.host,
                port=dest.port,
                status=status,
                reason=reason,
                call_id=context.request.get("call-id"),
            )
        self._attempt(branch, now, (status, reason))
        return True

    def _forward_ack(self, request: Request, source: Destination, now: float) -> None:
        """ACK for a 2xx: forward by its route set, without a transaction."""
        try:
            max_forwards = validate_request(request)
            if max_forwards == 0:
                return
            self._preprocess_route(request)
            if not request.has("route") and self._is_ours(request.uri):
                return
            hop = self._prepare(request, Target(request.uri_text))
            located = self._locate_hop(hop)
        except SIPError as error:
            log.info("dropped ACK: {reason}", reason=error.reason)
            return
        if isinstance(located, list):
            self._send_ack(request, located, hop.transport)
        else:
            located.addCallbacks(lambda hops: self._send_ack(request, hops, hop.transport), self._ack_not_located)

    def _ack_not_located(self, failure: Any) -> None:
        log.info("dropped ACK: {reason}", reason=failure.getErrorMessage())

    def _send_ack(self, request: Request, hops: list[Destination], hop_transport: str | None) -> None:
        if not hops:
            return
        dest = self._size_transport(hops[0], hop_transport, request)
        try:
            interface = self._interface_for(dest)
        except SIPError as error:
            log.info("dropped ACK: {reason}", reason=error.reason)
            return
        dest = dest._replace(local=interface.name)
        request.insert_first(
            "via", f"SIP/2.0/{dest.transport.upper()} {interface.sent_by()};branch={self._new_branch(request)}"
        )
        self.transmit(request.to_bytes(), dest)

    # -- responses -------------------------------------------------------------

    def _response(self, response: Response, now: float) -> None:
        top = response.top_via
        if (bare(top.host.lower()), top.port or 5060) not in self._sent_by:
            if self.info_enabled:
                log.info("dropped response not sent to us: {status}", status=response.status)
            return
        txn = self.layer.match_client(response)
        if txn is not None:
            txn.receive(response, now)
            return
        # no transaction: forward a retransmitted 2xx statelessly (16.7, 16.11)
        if 200 <= response.status < 300 and response.cseq[1] == "INVITE":
            upstream = response.via_at(1)
            if upstream is None:
                return
            dest = via_destination(upstream)
            if undeliverable(dest.host):
                log.info("dropped response to undeliverable address {host}", host=dest.host)
                return
            out = response.copy()
            out.pop_first_value("via")
            self.transmit(out.to_bytes(), self._with_local(dest))

    def _with_local(self, dest: Destination) -> Destination:
        try:
            return dest._replace(local=self._interface_for(dest).name)
        except SIPError:
            return dest

    # ClientUser

    def forward_response(self, context: ResponseContext, response: Response, now: float, ours: bool = True) -> None:
        """Send a response upstream through the server transaction.

        ``ours``: the top Via is this proxy's (a branch's response) and goes.
        """
        out = response.copy()
        if ours:
            out.pop_first_value("via")
        server = context.server
        server.send_response(out, server.source, now)
        if response.status >= 200 and not context.logged:
            context.logged = True
            self._log_txn(
                context.request,
                response.status,
                len(context.branches),
                context.started,
                now,
                context.decision or context.decided_by,
            )

    # -- logging ---------------------------------------------------------------

    def _server_header(self, response: Response) -> None:
        if self.settings.server:
            response.append("server", self.settings.server)

    def _log_txn(self, request: Request, status: int, branches: int, started: float, now: float, decision: str) -> None:
        if not self.info_enabled:
            return
        log.info(
            "txn method={method} call_id={call_id} status={status} branches={branches} "
            "duration_ms={duration:.1f} decision={decision}",
            method=request.method,
            call_id=request.get("call-id"),
            status=status,
            branches=branches,
            duration=(now - started) * 1000.0,
            decision=decision or "-",
        )


__all__ = ["CoreSettings", "Interface", "ProxyCore", "Router", "parse_via", "via_destination"]
