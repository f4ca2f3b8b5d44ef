"""The routing chain: routers asked in order, first decision wins, Deferreds awaited, decided_by recorded."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed

from sipgate_proxy.routing.chain import RoutingChain
from sipgate_proxy.routing.decisions import Forward, Redirect, Reject, RequestContext, Target
from sipgate_proxy.sip.message import Request
from sipgate_proxy.sip.parser import parse_datagram
from sipgate_proxy.sip.proxy import CoreSettings, Interface, ProxyCore
from sipgate_proxy.sip.transaction import Destination

FORWARD = Forward((Target("sip:bob@192.0.2.20"),))
REJECT = Reject(403, "Forbidden")
REDIRECT = Redirect(("sip:bob@192.0.2.30",))


class Recorder:
    """A router that answers ``result`` (or raises it) and logs that it was asked."""

    def __init__(self, name: str, log: list[str], result: Any = None) -> None:
        self.name = name
        self.log = log
        self.result = result

    def route(self, request: Request, context: RequestContext) -> Any:
        self.log.append(self.name)
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


def request() -> Request:
    message = parse_datagram(
        b"INVITE sip:bob@example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.5:5061;branch=z9hG4bKchain1\r\n"
        b"Max-Forwards: 70\r\n"
        b"From: <sip:alice@example.com>;tag=a1\r\n"
        b"To: <sip:bob@example.com>\r\n"
        b"Call-ID: chain-1\r\n"
        b"CSeq: 1 INVITE\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert isinstance(message, Request)
    return message


def context() -> RequestContext:
    return RequestContext("udp", "192.0.2.5", 5061, 0.0)


def chain(log: list[str], *results: Any) -> RoutingChain:
    names = "abcdefgh"
    return RoutingChain([(names[i], Recorder(names[i], log, r)) for i, r in enumerate(results)])


def result_of(deferred: Deferred[Any]) -> Any:
    out: list[Any] = []
    deferred.addBoth(out.append)
    assert out, "the Deferred has not fired"
    return out[0]


# -- plain values --------------------------------------------------------------


def test_routers_are_asked_in_order_and_none_passes_on() -> None:
    """Routers answering None pass the request on; the first decision ends the chain and later routers are not asked."""
    log: list[str] = []
    ctx = context()
    decision = chain(log, None, None, REJECT, FORWARD).route(request(), ctx)
    assert decision is REJECT
    assert log == ["a", "b", "c"]
    assert ctx.decided_by == "c"


def test_first_router_deciding_wins() -> None:
    """A decision from the first router is returned as it is (not wrapped) and names that router."""
    log: list[str] = []
    ctx = context()
    assert chain(log, REDIRECT, FORWARD).route(request(), ctx) is REDIRECT
    assert log == ["a"]
    assert ctx.decided_by == "a"


def test_all_none_gives_none_and_decided_by_stays_unset() -> None:
    """When every router passes, the chain returns None and records no decider."""
    log: list[str] = []
    ctx = context()
    assert chain(log, None, None).route(request(), ctx) is None
    assert log == ["a", "b"]
    assert ctx.decided_by is None


def test_empty_chain_passes() -> None:
    """A chain without routers returns None."""
    assert RoutingChain([]).route(request(), context()) is None


def test_routers_see_the_same_context_and_attrs_from_earlier_routers() -> None:
    """Every router gets the same RequestContext, so attrs set by one are read by the next."""

    class Tagger:
        def route(self, request: Request, context: RequestContext) -> None:
            context.attrs["number"] = "+4930123"

    class Reader:
        def route(self, request: Request, context: RequestContext) -> Reject:
            return Reject(404, context.attrs["number"])

    ctx = context()
    decision = RoutingChain([("tagger", Tagger()), ("reader", Reader())]).route(request(), ctx)
    assert decision == Reject(404, "+4930123")
    assert ctx.decided_by == "reader"


# -- Deferreds ---------------------------------------------------------------------


def test_deferred_none_moves_on_to_the_next_router() -> None:
    """A router's Deferred firing None makes the chain ask the next router only after it fired."""
    log: list[str] = []
    pending: Deferred[Any] = Deferred()
    ctx = context()
    result = chain(log, pending, FORWARD).route(request(), ctx)
    assert isinstance(result, Deferred)
    assert log == ["a"]
    pending.callback(None)
    assert result_of(result) is FORWARD
    assert log == ["a", "b"]
    assert ctx.decided_by == "b"


def test_deferred_decision_stops_the_chain() -> None:
    """A router's Deferred firing a decision is the chain's answer; later routers are not asked."""
    log: list[str] = []
    pending: Deferred[Any] = Deferred()
    ctx = context()
    result = chain(log, None, pending, FORWARD).route(request(), ctx)
    pending.callback(REJECT)
    assert result_of(result) is REJECT
    assert log == ["a", "b"]
    assert ctx.decided_by == "b"


def test_deferred_then_deferred() -> None:
    """Two routers in a row answering with Deferreds: None from the first, a decision from the second."""
    log: list[str] = []
    ctx = context()
    result = chain(log, succeed(None), succeed(REDIRECT), FORWARD).route(request(), ctx)
    assert result_of(result) is REDIRECT
    assert log == ["a", "b"]
    assert ctx.decided_by == "b"


def test_deferred_none_then_all_none_fires_none() -> None:
    """When a Deferred passes and every later router passes too, the chain's Deferred fires None."""
    log: list[str] = []
    ctx = context()
    result = chain(log, succeed(None), None).route(request(), ctx)
    assert result_of(result) is None
    assert ctx.decided_by is None


# -- errors --------------------------------------------------------------------------


def test_router_exception_propagates_and_later_routers_are_not_asked() -> None:
    """An exception raised by a router leaves the chain unchanged; the routers after it are not asked."""
    log: list[str] = []
    with pytest.raises(KeyError):
        chain(log, None, KeyError("boom"), FORWARD).route(request(), context())
    assert log == ["a", "b"]


def test_deferred_failure_propagates() -> None:
    """A router's failed Deferred makes the chain's Deferred fail with the same error."""
    log: list[str] = []
    result = chain(log, fail(ValueError("lookup failed")), FORWARD).route(request(), context())
    failure = result_of(result)
    assert failure.check(ValueError)
    assert log == ["a"]


class Core:
    """A ProxyCore over one UDP interface with ``router``, recording what it sends."""

    def __init__(self, router: Any) -> None:
        self.sent: list[tuple[bytes, Destination]] = []
        udp = Interface("udp:127.0.0.1:5060", "udp", "127.0.0.1", 5060, "127.0.0.1", 5060)
        self.core = ProxyCore([udp], CoreSettings(), router, lambda d, dest: self.sent.append((d, dest)), lambda: 0.0)
        self.core.info_enabled = False

    def statuses(self) -> list[int]:
        return [int(d[8:11]) for d, _ in self.sent if d.startswith(b"SIP/2.0 ")]


def test_core_answers_500_when_a_router_in_the_chain_raises() -> None:
    """Through the proxy core, a chain whose router raises gives the caller 100 then 500."""
    log: list[str] = []
    core = Core(chain(log, None, RuntimeError("router bug")))
    core.core.receive_message(request(), Destination("udp", "192.0.2.5", 5061, None, "udp:127.0.0.1:5060"), 0.0)
    assert core.statuses() == [100, 500]


def test_core_answers_500_when_a_router_deferred_fails() -> None:
    """Through the proxy core, a chain whose router's Deferred fails gives the caller 500 when it fails."""
    log: list[str] = []
    pending: Deferred[Any] = Deferred()
    core = Core(chain(log, pending))
    core.core.receive_message(request(), Destination("udp", "192.0.2.5", 5061, None, "udp:127.0.0.1:5060"), 0.0)
    assert core.statuses() == [100]
    pending.errback(RuntimeError("lookup failed"))
    assert core.statuses() == [100, 500]


def test_core_uses_the_deferred_decision_of_the_chain() -> None:
    """Through the proxy core, a decision that arrives later by Deferred is applied when it fires."""
    log: list[str] = []
    pending: Deferred[Any] = Deferred()
    core = Core(chain(log, None, pending))
    core.core.receive_message(request(), Destination("udp", "192.0.2.5", 5061, None, "udp:127.0.0.1:5060"), 0.0)
    pending.callback(Reject(403, "Forbidden"))
    assert core.statuses() == [100, 403]
