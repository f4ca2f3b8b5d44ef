"""The dispatcher router: set selection, every algorithm's order and spread, health, lifecycle, config."""

from __future__ import annotations

import random
import tomllib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.plugin import IPlugin
from zope.interface.verify import verifyObject

from sipgate_proxy.config import ConfigError, parse_config
from sipgate_proxy.interfaces import IBranchObserver, IRouter, IRouterFactory, IRouterLifecycle
from sipgate_proxy.routing.decisions import Forward, Reject, RequestContext, Target
from sipgate_proxy.routing.dispatcher import (
    DispatcherRouter,
    DispatcherRouterFactory,
    parse_dispatcher_config,
)
from sipgate_proxy.routing.hashring import HashRing, stable_hash
from sipgate_proxy.routing.health import ACTIVE, DISABLED, INACTIVE, PROBING
from sipgate_proxy.sip.message import Request
from sipgate_proxy.sip.parser import parse_datagram
from sipgate_proxy.sip.proxy import CoreSettings, Interface, ProxyCore
from sipgate_proxy.sip.transaction import Destination, TimerValues

EXAMPLE = Path(__file__).resolve().parents[2] / "etc" / "dispatcher-example.toml"


def uri(n: int) -> str:
    return f"sip:10.0.0.{n}:5060;transport=udp"


def request(
    call_id: str = "call-1",
    ruri: str = "sip:bob@example.com",
    from_uri: str = "sip:alice@example.com",
    to_uri: str | None = None,
    method: str = "INVITE",
) -> Request:
    message = parse_datagram(
        (
            f"{method} {ruri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 192.0.2.5:5061;branch=z9hG4bKd1\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <{from_uri}>;tag=a1\r\n"
            f"To: <{to_uri or ruri}>\r\n"
            f"Call-ID: {call_id}\r\n"
            f"CSeq: 1 {method}\r\n"
            f"Content-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(message, Request)
    return message


def context(now: float = 0.0) -> RequestContext:
    return RequestContext("udp", "192.0.2.5", 5061, now)


def dispatch_set(algorithm: str = "round-robin", count: int = 3, **extra: Any) -> dict[str, Any]:
    destinations = extra.pop("destinations", [{"uri": uri(n)} for n in range(1, count + 1)])
    return {"id": extra.pop("id", 1), "algorithm": algorithm, "destinations": destinations, **extra}


def make(*sets: dict[str, Any], clock: Clock | None = None, seed: int = 7, **top: Any) -> DispatcherRouter:
    config = parse_dispatcher_config({"sets": list(sets) or [dispatch_set()], **top})
    return DispatcherRouter(config, clock if clock is not None else Clock(), random.Random(seed))


def forward(router: DispatcherRouter, req: Request | None = None, now: float = 0.0) -> Forward:
    decision = router.route(req or request(), context(now))
    assert isinstance(decision, Forward)
    return decision


def hops(decision: Forward) -> list[str]:
    return [target.next_hop or "" for target in decision.targets]


def first_hop(router: DispatcherRouter, req: Request | None = None) -> str:
    return hops(forward(router, req))[0]


def finish(router: DispatcherRouter, decision: Forward, status: int = 200) -> None:
    """The first branch of ``decision`` answers and ends with ``status``."""
    target = decision.targets[0]
    router.branch_event(target, "response", status, 0.0)
    router.branch_event(target, "final", status, 0.0)


# -- the decision ------------------------------------------------------------------------


def test_forward_keeps_the_request_uri_and_sends_to_destinations_serially() -> None:
    """Targets keep the Request-URI, name the destination as next hop and label, and report to the router."""
    router = make()
    decision = forward(router, request(ruri="sip:+4930123@example.com"))
    assert decision.mode == "serial"
    assert decision.fail_silent is True and decision.failover is None
    assert decision.targets[0] == Target("sip:+4930123@example.com", next_hop=uri(1), label=uri(1))
    assert all(t.observer is router for t in decision.targets)
    assert [t.label for t in decision.targets] == hops(decision) == [uri(1), uri(2), uri(3)]
    assert decision.attrs == {"dispatcher.set": "1", "dispatcher.dst": uri(1)}


def test_attrs_of_the_first_destination_are_passed_on() -> None:
    """A destination's attrs string reaches the Forward as 'dispatcher.attrs'."""
    router = make(dispatch_set(destinations=[{"uri": uri(1), "attrs": "rack=a;media=yes"}], id="media"))
    assert forward(router).attrs == {
        "dispatcher.set": "media",
        "dispatcher.dst": uri(1),
        "dispatcher.attrs": "rack=a;media=yes",
    }


def test_set_failover_and_passive_fail_silent_reach_the_forward() -> None:
    """The set's failover list becomes the Forward's failover set; passive.fail_silent = false turns it off."""
    router = make(dispatch_set(failover=[486, 503]), passive={"fail_silent": False})
    decision = forward(router)
    assert decision.failover == frozenset({486, 503})
    assert decision.fail_silent is False


def test_sets_are_tried_in_order_by_match() -> None:
    """The first set whose match is found in the Request-URI decides; a set without match takes the rest."""
    router = make(
        dispatch_set(id="conf", match="^sip:8[0-9]+@", destinations=[{"uri": uri(8)}]),
        dispatch_set(id="all", destinations=[{"uri": uri(1)}]),
        dispatch_set(id="never", destinations=[{"uri": uri(9)}]),
    )
    decision = forward(router, request(ruri="sip:8001@example.com"))
    assert hops(decision) == [uri(8)] and decision.attrs["dispatcher.set"] == "conf"
    assert hops(forward(router, request(ruri="sip:bob@example.com"))) == [uri(1)]


def test_no_matching_set_passes_on() -> None:
    """A request no set takes goes to the next router (None)."""
    router = make(dispatch_set(match="@conference\\."))
    assert router.route(request(ruri="sip:bob@example.com"), context()) is None


def test_max_targets_limits_the_failover_list() -> None:
    """max_targets cuts the ordered list of destinations."""
    router = make(dispatch_set(count=5, max_targets=2))
    assert hops(forward(router)) == [uri(1), uri(2)]


# -- algorithms --------------------------------------------------------------------------


def test_round_robin_rotates_the_start_and_keeps_the_rest_in_order() -> None:
    """Each request starts one destination further on; the others follow in config order, wrapping round."""
    router = make(dispatch_set("round-robin"))
    orders = [hops(forward(router)) for _ in range(4)]
    assert orders == [
        [uri(1), uri(2), uri(3)],
        [uri(2), uri(3), uri(1)],
        [uri(3), uri(1), uri(2)],
        [uri(1), uri(2), uri(3)],
    ]


def test_round_robin_spreads_evenly_over_the_destinations_that_are_up() -> None:
    """With one of four down, the other three share the calls evenly (no neighbour takes double)."""
    router = make(dispatch_set("round-robin", count=4))
    router.health.down(uri(2), 0.0, 503)
    shares = Counter(first_hop(router) for _ in range(300))
    assert shares == {uri(1): 100, uri(3): 100, uri(4): 100}


def test_weighted_shares_follow_the_weights_smoothly() -> None:
    """Smooth weighted round robin: over 10,000 calls each destination is first in proportion to its weight,
    and the heavy one is not picked in a burst."""
    weights = [1, 2, 7]
    destinations = [{"uri": uri(n + 1), "weight": w} for n, w in enumerate(weights)]
    router = make(dispatch_set("weighted", destinations=destinations))
    firsts = [first_hop(router) for _ in range(10_000)]
    shares = Counter(firsts)
    for n, weight in enumerate(weights):
        assert abs(shares[uri(n + 1)] / 10_000 - weight / 10) < 0.01
    # the first cycle of 10: the light ones are interleaved, not left to the end
    cycle = firsts[:10]
    assert cycle.count(uri(3)) == 7 and cycle[-1] == uri(3)
    assert max(len(run) for run in "".join("h" if f == uri(3) else "." for f in cycle).split(".")) <= 3


def test_weighted_failover_order_is_by_weight() -> None:
    """After the weighted pick the others follow heaviest first; weight 0 is never first while others are up."""
    destinations = [
        {"uri": uri(1), "weight": 1},
        {"uri": uri(2), "weight": 0},
        {"uri": uri(3), "weight": 5},
    ]
    router = make(dispatch_set("weighted", destinations=destinations))
    orders = [hops(forward(router)) for _ in range(60)]
    assert all(order[-1] == uri(2) for order in orders)
    assert Counter(order[0] for order in orders) == {uri(3): 50, uri(1): 10}
    assert [uri(3), uri(1), uri(2)] in orders and [uri(1), uri(3), uri(2)] in orders
    router.health.down(uri(1), 0.0, 503)
    router.health.down(uri(3), 0.0, 503)
    assert hops(forward(router)) == [uri(2)]


def test_random_order_is_a_uniform_shuffle() -> None:
    """'random' returns every destination once, and each is first about as often as the others."""
    router = make(dispatch_set("random", count=4), seed=1)
    orders = [hops(forward(router)) for _ in range(10_000)]
    assert all(sorted(order) == [uri(n) for n in range(1, 5)] for order in orders)
    shares = Counter(order[0] for order in orders)
    assert all(abs(count / 10_000 - 0.25) < 0.02 for count in shares.values())


@pytest.mark.parametrize(
    ("algorithm", "key"),
    [
        ("hash-callid", {"call_id": "abc@host"}),
        ("hash-from", {"from_uri": "sip:alice@a.example"}),
        ("hash-to", {"to_uri": "sip:+4930555@b.example"}),
        ("hash-ruri", {"ruri": "sip:+4930555@b.example"}),
    ],
)
def test_hash_algorithms_follow_their_key_only(algorithm: str, key: dict[str, str]) -> None:
    """A hash set sends equal keys to the same start whatever else differs, and spreads different keys."""
    router = make(dispatch_set(algorithm, count=5))
    starts = set()
    for n in range(20):
        fields: dict[str, Any] = {"call_id": f"noise-{n}", "from_uri": f"sip:u{n}@x.example"}
        if algorithm != "hash-ruri":
            fields["ruri"] = f"sip:r{n}@z.example"
            fields["to_uri"] = f"sip:v{n}@y.example"
        starts.add(first_hop(router, request(**{**fields, **key})))
    assert len(starts) == 1
    (field,) = key
    spread = Counter(first_hop(router, request(**{field: _key_value(field, f"k{n}")})) for n in range(500))
    assert len(spread) == 5 and min(spread.values()) > 50


def _key_value(field: str, key: str) -> str:
    return key if field == "call_id" else f"sip:{key}@example.com"


def test_hash_order_starts_at_the_hash_and_wraps_in_config_order() -> None:
    """The start is stable_hash(key) % destinations; the rest follow in config order."""
    router = make(dispatch_set("hash-callid", count=4))
    start = stable_hash("known-call") % 4
    expected = [uri((start + step) % 4 + 1) for step in range(4)]
    assert hops(forward(router, request(call_id="known-call"))) == expected


def test_hash_spreads_call_ids_evenly() -> None:
    """10,000 Call-IDs in the usual counter form spread over four destinations within a few percent."""
    router = make(dispatch_set("hash-callid", count=4))
    shares = Counter(first_hop(router, request(call_id=f"{n}-4711@192.0.2.5")) for n in range(10_000))
    assert len(shares) == 4
    assert all(abs(count / 10_000 - 0.25) < 0.03 for count in shares.values())


def test_hash_key_of_a_down_destination_goes_to_the_next_and_others_stay() -> None:
    """With one destination down, its keys go to the next in order; every other key keeps its destination."""
    router = make(dispatch_set("hash-callid", count=4))
    ids = [f"call-{n}" for n in range(400)]
    before = {cid: first_hop(router, request(call_id=cid)) for cid in ids}
    router.health.down(uri(2), 0.0, 503)
    after = {cid: first_hop(router, request(call_id=cid)) for cid in ids}
    for cid in ids:
        if before[cid] == uri(2):
            assert after[cid] == uri(3)
        else:
            assert after[cid] == before[cid]


def test_hash_is_the_same_in_every_router_instance() -> None:
    """Two routers built from the same config (other workers, other hosts) agree on every key."""
    sets = [dispatch_set("hash-from", count=5, id="a"), dispatch_set("consistent-hash", count=5, id="b")]
    one = make(*sets, seed=1)
    two = make(*sets, seed=2)
    for n in range(200):
        req = request(call_id=f"{n}@h", from_uri=f"sip:{n}@example.com")
        assert hops(forward(one, req)) == hops(forward(two, req))


def test_stable_hash_does_not_depend_on_the_process() -> None:
    """stable_hash is crc32 plus a fixed finaliser: a known value, unlike the salted hash()."""
    import zlib

    value = zlib.crc32(b"abc")
    value ^= value >> 16
    value = (value * 0x85EBCA6B) & 0xFFFFFFFF
    value ^= value >> 13
    value = (value * 0xC2B2AE35) & 0xFFFFFFFF
    value ^= value >> 16
    assert stable_hash("abc") == value
    assert 0 <= stable_hash("") < 2**32


def consistent_router(count: int = 5) -> DispatcherRouter:
    return make(dispatch_set("consistent-hash", count=count))


def test_consistent_hash_spreads_call_ids() -> None:
    """With 5 destinations and 100 points each, each gets a fair share of 10,000 Call-IDs (12% to 28%)."""
    router = consistent_router()
    shares = Counter(first_hop(router, request(call_id=f"{n}-1@192.0.2.5")) for n in range(10_000))
    assert len(shares) == 5
    assert all(0.12 < count / 10_000 < 0.28 for count in shares.values())


def test_consistent_hash_moves_only_the_keys_of_a_failed_destination() -> None:
    """Taking one of 5 destinations down moves at most about 1/5 of 10,000 keys: only those it had,
    and they spread over more than one of the others."""
    router = consistent_router()
    ids = [f"{n}-1@192.0.2.5" for n in range(10_000)]
    before = {cid: first_hop(router, request(call_id=cid)) for cid in ids}
    victim = uri(3)
    router.health.down(victim, 0.0, 503)
    after = {cid: first_hop(router, request(call_id=cid)) for cid in ids}
    moved = [cid for cid in ids if before[cid] != after[cid]]
    assert all(before[cid] == victim for cid in moved)
    assert all(after[cid] != victim for cid in ids)
    assert len(moved) == sum(1 for cid in ids if before[cid] == victim)
    assert len(moved) / len(ids) <= 1 / 5 + 0.08
    assert len({after[cid] for cid in moved}) >= 2
    router.health.alive(victim, 1.0, 200)
    assert {cid: first_hop(router, request(call_id=cid)) for cid in ids} == before


def test_consistent_hash_failover_order_lists_every_destination_once() -> None:
    """The failover order is the ring order from the key: all destinations, each once, the owner first."""
    router = consistent_router()
    ring = HashRing([uri(n) for n in range(1, 6)])
    for n in range(50):
        cid = f"order-{n}"
        order = hops(forward(router, request(call_id=cid)))
        assert sorted(order) == sorted(uri(k) for k in range(1, 6))
        assert order[0] == uri(ring.owner(cid) + 1)  # type: ignore[operator]


def test_hash_ring_basics() -> None:
    """An empty ring owns nothing; a ring of one member owns everything; order() is cached per point."""
    empty = HashRing([])
    assert empty.owner("x") is None and empty.order("x") == ()
    single = HashRing(["only"], vnodes=3)
    assert single.owner("anything") == 0 and single.order("anything") == (0,)
    ring = HashRing(["a", "b", "c"])
    assert ring.order("k") is ring.order("k")
    with pytest.raises(ValueError):
        HashRing(["a"], vnodes=0)


def test_least_calls_prefers_the_destination_with_fewest_invites_in_flight() -> None:
    """Each INVITE counts for its destination until its branch ends; the least loaded comes first."""
    router = make(dispatch_set("least-calls"))
    first = forward(router)
    second = forward(router)
    third = forward(router)
    assert [hops(d)[0] for d in (first, second, third)] == [uri(1), uri(2), uri(3)]
    assert router.calls == {uri(1): 1, uri(2): 1, uri(3): 1}
    finish(router, second)
    assert router.calls[uri(2)] == 0
    assert hops(forward(router)) == [uri(2), uri(1), uri(3)]


def test_least_calls_counts_failover_branches_and_not_other_methods() -> None:
    """A failover branch counts from its first event; a MESSAGE is never counted."""
    router = make(dispatch_set("least-calls", count=2))
    decision = forward(router)
    first, second = decision.targets
    router.branch_event(first, "final", 503, 0.0)
    router.branch_event(second, "response", 100, 0.0)
    assert router.calls == {uri(1): 0, uri(2): 1}
    forward(router, request(method="MESSAGE"))
    assert router.calls == {uri(1): 0, uri(2): 1}


def test_priority_orders_by_priority_then_config_order() -> None:
    """'priority': lowest priority value first, config order between equals; health skips but keeps order."""
    destinations = [
        {"uri": uri(1), "priority": 10},
        {"uri": uri(2), "priority": 0},
        {"uri": uri(3), "priority": 10},
        {"uri": uri(4), "priority": 5},
    ]
    router = make(dispatch_set("priority", destinations=destinations))
    assert hops(forward(router)) == [uri(2), uri(4), uri(1), uri(3)]
    assert hops(forward(router)) == [uri(2), uri(4), uri(1), uri(3)]
    router.health.down(uri(2), 0.0, 503)
    assert hops(forward(router)) == [uri(4), uri(1), uri(3)]


# -- health in routing -----------------------------------------------------------------


def test_disabled_destinations_are_never_used_or_probed() -> None:
    """A destination with disabled = true takes no call, in any algorithm, and gets no probe."""
    destinations = [{"uri": uri(1), "disabled": True}, {"uri": uri(2)}, {"uri": uri(3)}]
    for algorithm in ("round-robin", "weighted", "random", "hash-callid", "consistent-hash", "least-calls"):
        router = make(dispatch_set(algorithm, destinations=destinations))
        for n in range(30):
            assert uri(1) not in hops(forward(router, request(call_id=f"c{n}")))
    assert router.states()[uri(1)] == DISABLED
    sender = FakeSender()
    router.attach(sender)
    assert uri(1) not in sender.sent


def test_operator_can_disable_and_enable_a_destination() -> None:
    """set_disabled takes a destination out of routing at once and puts it back."""
    router = make()
    router.set_disabled(uri(1), True)
    assert uri(1) not in hops(forward(router))
    router.set_disabled(uri(1), False)
    assert uri(1) in hops(forward(router))


def test_passive_timeout_without_answer_marks_down() -> None:
    """A branch that ends 408 without any response takes its destination down; new calls avoid it."""
    router = make()
    decision = forward(router)
    router.branch_event(decision.targets[0], "final", 408, 5.0)
    assert router.states()[uri(1)] == INACTIVE
    assert router.health.get(uri(1)).since == 5.0  # type: ignore[union-attr]
    for _ in range(6):
        assert uri(1) not in hops(forward(router))


def test_passive_503_marks_down_even_when_it_is_a_real_answer() -> None:
    """A transport error (503 without response) and a real 503 response both take the destination down."""
    router = make()
    decision = forward(router)
    router.branch_event(decision.targets[0], "final", 503, 1.0)
    decision = forward(router)
    assert hops(decision)[0] == uri(3)  # the turn moved on, over the two still up
    finish(router, decision, 503)
    assert router.states() == {uri(1): INACTIVE, uri(2): ACTIVE, uri(3): INACTIVE}


def test_a_real_408_after_a_response_keeps_the_destination() -> None:
    """408 after the destination answered is its own downstream timing out: it stays active."""
    router = make()
    decision = forward(router)
    router.branch_event(decision.targets[0], "response", 100, 0.0)
    router.branch_event(decision.targets[0], "final", 408, 1.0)
    assert router.states()[uri(1)] == ACTIVE


def test_passive_checks_can_be_turned_off() -> None:
    """passive.enabled = false: timeouts and 503s change nothing."""
    router = make(passive={"enabled": False})
    decision = forward(router)
    router.branch_event(decision.targets[0], "final", 408, 0.0)
    router.branch_event(decision.targets[1], "final", 503, 0.0)
    assert set(router.states().values()) == {ACTIVE}


def test_suspect_destination_is_left_out_until_it_answers() -> None:
    """After 'suspect', a destination takes no new calls until it answers anything, then it is back."""
    router = make()
    decision = forward(router)
    target = decision.targets[0]
    router.branch_event(target, "suspect", 0, 0.5)
    assert router.states()[uri(1)] == PROBING
    assert all(uri(1) not in hops(forward(router)) for _ in range(6))
    router.branch_event(target, "response", 180, 0.9)
    assert router.states()[uri(1)] == ACTIVE
    assert any(hops(forward(router))[0] == uri(1) for _ in range(3))


def test_suspect_can_be_turned_off() -> None:
    """passive.suspect = false: a retransmitted INVITE does not take the destination out."""
    router = make(passive={"suspect": False})
    router.branch_event(forward(router).targets[0], "suspect", 0, 0.5)
    assert router.states()[uri(1)] == ACTIVE


def test_other_finals_show_the_destination_alive() -> None:
    """A final status other than 408/503/487 (even without a response event first) counts as an answer."""
    router = make()
    router.health.suspect(uri(1), 0.0)
    foreign = Target("sip:bob@example.com", next_hop=uri(1), label=uri(1))
    router.branch_event(foreign, "final", 486, 1.0)
    assert router.states()[uri(1)] == ACTIVE
    router.health.suspect(uri(1), 2.0)
    router.branch_event(foreign, "final", 487, 3.0)
    assert router.states()[uri(1)] == PROBING


def test_all_down_falls_back_to_probing_then_rejects() -> None:
    """No active destination: the probing ones are used; none at all: 503."""
    router = make(probing={"up_after": 2})
    for n in (1, 2, 3):
        router.health.down(uri(n), 0.0, 503)
    assert router.route(request(), context()) == Reject(503, "Service Unavailable (no destination available)")
    router.health.alive(uri(2), 1.0, 200)  # one answer of two needed: on its way back
    assert router.states()[uri(2)] == PROBING
    assert hops(forward(router)) == [uri(2)]
    router.health.suspect(uri(3), 1.0)  # an inactive one cannot be suspect, still down
    assert hops(forward(router)) == [uri(2)]


def test_probing_destinations_are_not_used_while_one_is_active() -> None:
    """A destination on its way back up waits while any destination of the set is active."""
    router = make(probing={"up_after": 3})
    router.health.down(uri(1), 0.0, 503)
    router.health.alive(uri(1), 1.0, 200)
    assert router.states()[uri(1)] == PROBING
    assert all(uri(1) not in hops(forward(router)) for _ in range(6))


def test_sets_sharing_a_destination_share_its_health() -> None:
    """Health is per URI: a destination down through one set is down in every set."""
    router = make(
        dispatch_set(id="a", match="^sip:a", destinations=[{"uri": uri(1)}, {"uri": uri(2)}]),
        dispatch_set(id="b", destinations=[{"uri": uri(1)}, {"uri": uri(3)}]),
    )
    decision = forward(router, request(ruri="sip:a@example.com"))
    router.branch_event(decision.targets[0], "final", 503, 0.0)
    assert hops(forward(router, request(ruri="sip:b@example.com"))) == [uri(3)]


# -- probing and lifecycle -------------------------------------------------------------


class FakeSender:
    """Records OPTIONS probes; tests answer through the callbacks."""

    def __init__(self) -> None:
        self.waiting: list[tuple[str, Callable[[int], None], float | None]] = []

    @property
    def sent(self) -> list[str]:
        return [probe[0] for probe in self.waiting]

    def send_options(self, uri: str, on_result: Callable[[int], None], timeout: float | None = None) -> None:
        self.waiting.append((uri, on_result, timeout))

    def answer(self, statuses: dict[str, int], default: int = 200) -> None:
        waiting, self.waiting = self.waiting, []
        for target, on_result, _ in waiting:
            on_result(statuses.get(target, default))


def test_attach_probes_with_the_configured_timeout_and_interval() -> None:
    """attach() sends OPTIONS to every destination at once, then every interval, with the probe timeout."""
    clock = Clock()
    router = make(clock=clock, probing={"interval": 30, "timeout": 3})
    sender = FakeSender()
    router.attach(sender)
    assert sender.sent == [uri(1), uri(2), uri(3)]
    assert {probe[2] for probe in sender.waiting} == {3.0}
    sender.answer({})
    clock.advance(29.0)
    assert sender.sent == []
    clock.advance(1.0)
    assert sender.sent == [uri(1), uri(2), uri(3)]


def test_probes_take_destinations_down_and_bring_them_back() -> None:
    """down_after failed probes remove a destination from routing; up_after answered ones restore it."""
    clock = Clock()
    router = make(clock=clock, probing={"interval": 10, "down_after": 2, "up_after": 2})
    sender = FakeSender()
    router.attach(sender)
    for _ in range(2):
        sender.answer({uri(1): 408})
        clock.advance(10.0)
    assert router.states()[uri(1)] == INACTIVE
    assert all(uri(1) not in hops(forward(router)) for _ in range(3))
    for expected in (PROBING, ACTIVE):
        sender.answer({})
        assert router.states()[uri(1)] == expected
        clock.advance(10.0)


def test_probing_mode_inactive_leaves_active_destinations_alone() -> None:
    """probing.mode = 'inactive' probes only destinations that are down or on their way back."""
    clock = Clock()
    router = make(clock=clock, probing={"mode": "inactive", "interval": 5})
    router.health.down(uri(2), 0.0, 503)
    sender = FakeSender()
    router.attach(sender)
    assert sender.sent == [uri(2)]
    sender.answer({})
    clock.advance(5.0)
    assert sender.sent == []


def test_alive_codes_decide_what_a_probe_answer_means() -> None:
    """With alive_codes = [200], a 404 to OPTIONS counts as a failure; by default it would be alive."""
    strict = make(probing={"alive_codes": [200], "down_after": 1})
    lenient = make(probing={"down_after": 1})
    for router in (strict, lenient):
        sender = FakeSender()
        router.attach(sender)
        sender.answer({uri(1): 404})
    assert strict.states()[uri(1)] == INACTIVE
    assert lenient.states()[uri(1)] == ACTIVE


def test_stop_cancels_the_probe_timer() -> None:
    """stop() leaves no delayed call on the reactor."""
    clock = Clock()
    router = make(clock=clock)
    router.attach(FakeSender())
    assert clock.getDelayedCalls()
    router.stop()
    assert clock.getDelayedCalls() == []


def test_take_over_keeps_the_health_of_destinations_with_the_same_uri() -> None:
    """A reloaded router starts with the old router's states for URIs it still has; new ones are active."""
    old = make(dispatch_set(count=3))
    old.health.down(uri(1), 0.0, 503)
    old.health.suspect(uri(2), 0.0)
    new = make(dispatch_set(destinations=[{"uri": uri(1)}, {"uri": uri(2)}, {"uri": uri(4)}]))
    new.take_over(old)
    assert new.states() == {uri(1): INACTIVE, uri(2): PROBING, uri(4): ACTIVE}
    assert hops(forward(new)) == [uri(4)]
    new.take_over(object())  # another kind of router: nothing to take
    assert new.states()[uri(4)] == ACTIVE


def test_interfaces_are_provided() -> None:
    """The router provides IRouter, IBranchObserver and IRouterLifecycle; the factory IRouterFactory and IPlugin."""
    router = make()
    assert verifyObject(IRouter, router)
    assert verifyObject(IBranchObserver, router)
    assert verifyObject(IRouterLifecycle, router)
    factory = DispatcherRouterFactory()
    assert verifyObject(IRouterFactory, factory) and verifyObject(IPlugin, factory)
    assert factory.name == "dispatcher"
    assert isinstance(factory.make_router({"sets": [dispatch_set()]}, Clock()), DispatcherRouter)


def test_forgotten_requests_do_not_pile_up() -> None:
    """Requests whose branches all ended are forgotten; those that never report go after an hour."""
    router = make(dispatch_set("least-calls"))
    finish(router, forward(router))
    assert len(router.tracker) == 0
    forward(router, now=0.0)  # never reports
    assert len(router.tracker) == 1 and router.calls[uri(1)] == 1
    forward(router, now=3599.0)
    assert len(router.tracker) == 2 and router.calls == {uri(1): 1, uri(2): 1}
    forward(router, now=3600.0)
    # the lost one is released first, so its destination is the least loaded again
    assert len(router.tracker) == 2 and router.calls == {uri(1): 1, uri(2): 1}


# -- through the proxy core ------------------------------------------------------------

UDP = Interface("udp:127.0.0.1:5060", "udp", "127.0.0.1", 5060, "127.0.0.1", 5060)


class Core:
    """A ProxyCore routed by a dispatcher, driven without sockets."""

    def __init__(self, router: DispatcherRouter) -> None:
        self.now = 100.0
        self.sent: list[tuple[bytes, Destination]] = []
        self.core = ProxyCore(
            [UDP], CoreSettings(timers=TimerValues(0.5, 4.0, 5.0)), router, self._send, lambda: self.now
        )

    def _send(self, data: bytes, dest: Destination) -> None:
        self.sent.append((data, dest))

    def invite(self, call_id: str) -> None:
        data = (
            "INVITE sip:bob@example.com SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK{call_id}\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:bob@example.com>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:5061>\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        self.core.receive_datagram(data, Destination("udp", "127.0.0.1", 5061, None, UDP.name), self.now)

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while (deadline := self.core.next_deadline()) is not None and deadline <= end:
            self.now = max(self.now, deadline)
            self.core.handle_timers(self.now)
        self.now = end

    def invites(self) -> list[tuple[Request, int]]:
        sent, self.sent = self.sent, []
        out = []
        for data, dest in sent:
            message = parse_datagram(data)
            if isinstance(message, Request) and message.method == "INVITE":
                out.append((message, dest.port))
        return out

    def answer(self, forwarded: Request, status: int) -> None:
        vias = "".join(f"Via: {v}\r\n" for v in forwarded.get_all("via"))
        to = (forwarded.get("to") or "") + (";tag=b1" if status > 100 else "")
        data = (
            f"SIP/2.0 {status} X\r\n{vias}From: {forwarded.get('from')}\r\nTo: {to}\r\n"
            f"Call-ID: {forwarded.get('call-id')}\r\nCSeq: {forwarded.get('cseq')}\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        self.core.receive_datagram(data, Destination("udp", "127.0.0.1", 5070, None, UDP.name), self.now)


def test_silent_destination_is_skipped_at_timer_a_and_left_out_afterwards() -> None:
    """Through the real core: a destination silent at Timer A is abandoned for the next one and taken down,
    so the next call goes straight to a live destination."""
    router = make(
        dispatch_set(destinations=[{"uri": "sip:127.0.0.1:5070"}, {"uri": "sip:127.0.0.1:5071"}]),
        probing={"enabled": False},
    )
    core = Core(router)
    core.invite("first")
    ((_, port),) = core.invites()
    assert port == 5070
    core.advance(0.6)
    ((second, port),) = core.invites()
    assert port == 5071
    core.answer(second, 100)
    assert router.states() == {"sip:127.0.0.1:5070": INACTIVE, "sip:127.0.0.1:5071": ACTIVE}
    core.invite("next")
    ((_, port),) = core.invites()
    assert port == 5071


def test_probes_through_the_core_reach_the_destination() -> None:
    """attach(core) makes the core send OPTIONS to each destination; an answer keeps it up, silence takes it down."""
    clock = Clock()
    router = make(
        dispatch_set(destinations=[{"uri": "sip:127.0.0.1:5070"}]),
        clock=clock,
        probing={"timeout": 1.0, "down_after": 1},
    )
    core = Core(router)
    router.attach(core.core)
    options = [parse_datagram(d) for d, dest in core.sent if dest.port == 5070]
    assert [m.method for m in options if isinstance(m, Request)] == ["OPTIONS"]
    core.advance(1.5)
    assert router.states() == {"sip:127.0.0.1:5070": INACTIVE}
    router.stop()


# -- the example config ------------------------------------------------------------------


def example_router() -> DispatcherRouter:
    with EXAMPLE.open("rb") as handle:
        document = tomllib.load(handle)
    config = parse_config({"routing": {"routers": ["dispatcher"], **document["routing"]}}, str(EXAMPLE))
    return DispatcherRouterFactory().make_router(config.routing.tables["dispatcher"], Clock())


def test_example_config_is_valid_and_routes_as_its_comments_say() -> None:
    """The shipped example: conference numbers go round the media servers (two tries), the rest by weight 3:1."""
    with EXAMPLE.open("rb") as handle:
        document = tomllib.load(handle)
    assert set(document) == {"routing"} and set(document["routing"]) == {"dispatcher"}
    router = example_router()
    conference = [hops(forward(router, request(ruri="sip:8001@example.com"))) for _ in range(3)]
    assert [len(order) for order in conference] == [2, 2, 2]
    assert {order[0] for order in conference} == {f"sip:10.0.1.{n}:5060;transport=udp" for n in (11, 12, 13)}
    firsts = Counter(hops(forward(router, request(ruri="sip:+4930@example.com")))[0] for _ in range(400))
    assert firsts == {"sip:sbc1.example.net:5060;transport=tcp": 300, "sip:sbc2.example.net:5060;transport=tcp": 100}
    other = forward(router, request(ruri="sip:+4930@example.com"))
    assert hops(other)[-1] == "sip:sbc-backup.example.net:5060;transport=tcp"
    assert "sip:sbc3.example.net:5060;transport=tcp" not in hops(other)
    assert other.failover == frozenset({408, 480, 500, 502, 503, 504})


# -- config errors -----------------------------------------------------------------------

P = "routing.dispatcher"


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"sets": [dispatch_set()], "extra": 1}, f"{P}.extra"),
        ({}, f"{P}.sets"),
        ({"sets": []}, f"{P}.sets"),
        ({"sets": "one"}, f"{P}.sets"),
        ({"sets": ["one"]}, f"{P}.sets[0]"),
        ({"sets": [dispatch_set(), {**dispatch_set(), "colour": "red"}]}, f"{P}.sets[1].colour"),
        ({"sets": [{"algorithm": "random", "destinations": [{"uri": uri(1)}]}]}, f"{P}.sets[0].id"),
        ({"sets": [dispatch_set(id=True)]}, f"{P}.sets[0].id"),
        ({"sets": [dispatch_set(id=1), dispatch_set(id="1")]}, f"{P}.sets[1].id"),
        ({"sets": [dispatch_set("fastest")]}, f"{P}.sets[0].algorithm"),
        ({"sets": [dispatch_set(match="([")]}, f"{P}.sets[0].match"),
        ({"sets": [dispatch_set(match=5)]}, f"{P}.sets[0].match"),
        ({"sets": [dispatch_set(failover=[200])]}, f"{P}.sets[0].failover"),
        ({"sets": [dispatch_set(failover=[])]}, f"{P}.sets[0].failover"),
        ({"sets": [dispatch_set(max_targets=0)]}, f"{P}.sets[0].max_targets"),
        ({"sets": [dispatch_set(destinations=[])]}, f"{P}.sets[0].destinations"),
        ({"sets": [dispatch_set(destinations=[{"weight": 1}])]}, f"{P}.sets[0].destinations[0].uri"),
        (
            {"sets": [dispatch_set(), dispatch_set(id=2, destinations=[{"uri": uri(1)}, {"uri": "http://x"}])]},
            f"{P}.sets[1].destinations[1].uri",
        ),
        ({"sets": [dispatch_set(destinations=[{"uri": "sip:"}])]}, f"{P}.sets[0].destinations[0].uri"),
        (
            {"sets": [dispatch_set(destinations=[{"uri": "sip:10.0.0.1;transport=sctp"}])]},
            f"{P}.sets[0].destinations[0].uri",
        ),
        (
            {"sets": [dispatch_set(destinations=[{"uri": uri(1)}, {"uri": uri(2)}, {"uri": uri(1)}])]},
            f"{P}.sets[0].destinations[2].uri",
        ),
        ({"sets": [dispatch_set(destinations=[{"uri": uri(1), "weight": -1}])]}, f"{P}.sets[0].destinations[0].weight"),
        (
            {"sets": [dispatch_set(destinations=[{"uri": uri(1), "weight": "3"}])]},
            f"{P}.sets[0].destinations[0].weight",
        ),
        (
            {"sets": [dispatch_set(destinations=[{"uri": uri(1), "priority": 1.5}])]},
            f"{P}.sets[0].destinations[0].priority",
        ),
        ({"sets": [dispatch_set(destinations=[{"uri": uri(1), "attrs": 3}])]}, f"{P}.sets[0].destinations[0].attrs"),
        (
            {"sets": [dispatch_set(destinations=[{"uri": uri(1), "disabled": "yes"}])]},
            f"{P}.sets[0].destinations[0].disabled",
        ),
        ({"sets": [dispatch_set(destinations=[{"uri": uri(1), "port": 5060}])]}, f"{P}.sets[0].destinations[0].port"),
        ({"sets": [dispatch_set(destinations=["sip:10.0.0.1"])]}, f"{P}.sets[0].destinations[0]"),
        (
            {"sets": [dispatch_set("weighted", destinations=[{"uri": uri(1), "weight": 0}])]},
            f"{P}.sets[0].destinations",
        ),
        ({"sets": [dispatch_set()], "probing": []}, f"{P}.probing"),
        ({"sets": [dispatch_set()], "probing": {"interval": 0}}, f"{P}.probing.interval"),
        ({"sets": [dispatch_set()], "probing": {"timeout": "2s"}}, f"{P}.probing.timeout"),
        ({"sets": [dispatch_set()], "probing": {"down_after": 0}}, f"{P}.probing.down_after"),
        ({"sets": [dispatch_set()], "probing": {"up_after": True}}, f"{P}.probing.up_after"),
        ({"sets": [dispatch_set()], "probing": {"alive_codes": [100]}}, f"{P}.probing.alive_codes"),
        ({"sets": [dispatch_set()], "probing": {"alive_codes": "200"}}, f"{P}.probing.alive_codes"),
        ({"sets": [dispatch_set()], "probing": {"mode": "never"}}, f"{P}.probing.mode"),
        ({"sets": [dispatch_set()], "probing": {"enabled": 1}}, f"{P}.probing.enabled"),
        ({"sets": [dispatch_set()], "probing": {"method": "OPTIONS"}}, f"{P}.probing.method"),
        ({"sets": [dispatch_set()], "passive": {"enabled": "no"}}, f"{P}.passive.enabled"),
        ({"sets": [dispatch_set()], "passive": {"suspect": 0}}, f"{P}.passive.suspect"),
        ({"sets": [dispatch_set()], "passive": {"fail_silent": None}}, f"{P}.passive.fail_silent"),
        ({"sets": [dispatch_set()], "passive": {"threshold": 3}}, f"{P}.passive.threshold"),
    ],
)
def test_config_errors_name_the_key(table: dict[str, Any], key: str) -> None:
    """Every wrong value is refused with the full key of the setting at fault."""
    with pytest.raises(ConfigError) as info:
        parse_dispatcher_config(table)
    assert info.value.key == key


def test_defaults() -> None:
    """Defaults: round-robin, all destinations, probes every 10 s (2 s timeout, down after 2, up after 1,
    any answer but 408/503, always), passive checks, suspect and fail_silent on."""
    config = parse_dispatcher_config({"sets": [{"id": "x", "destinations": [{"uri": uri(1)}]}]})
    (only,) = config.sets
    assert (only.algorithm, only.match, only.failover, only.max_targets) == ("round-robin", None, None, None)
    (dst,) = only.destinations
    assert (dst.weight, dst.priority, dst.attrs, dst.disabled) == (1, 0, "", False)
    probing = config.probing
    assert (probing.enabled, probing.interval, probing.timeout) == (True, 10.0, 2.0)
    assert (probing.down_after, probing.up_after, probing.alive_codes, probing.mode) == (2, 1, None, "always")
    assert (config.passive.enabled, config.passive.suspect, config.passive.fail_silent) == (True, True, True)


def test_silent_after_reaches_the_forward_and_is_validated() -> None:
    """passive.silent_after (default 0.2 s, 0 = wait for Timer A) is passed on; a bad value names its key."""
    from sipgate_proxy.config import ConfigError
    from sipgate_proxy.routing.dispatcher import parse_dispatcher_config

    sets = [{"id": 1, "destinations": [{"uri": "sip:192.0.2.1:5060"}]}]
    assert parse_dispatcher_config({"sets": sets}).passive.silent_after == 0.2
    assert parse_dispatcher_config({"sets": sets, "passive": {"silent_after": 0}}).passive.silent_after == 0.0
    with pytest.raises(ConfigError) as error:
        parse_dispatcher_config({"sets": sets, "passive": {"silent_after": -1}})
    assert error.value.key == "routing.dispatcher.passive.silent_after"
