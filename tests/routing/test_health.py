"""Destination health for the dispatcher: state changes, OPTIONS probes, branch tracking."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from sipgate_proxy.interfaces import IRequestSender
from sipgate_proxy.routing.decisions import Target
from sipgate_proxy.routing.health import (
    ACTIVE,
    DISABLED,
    INACTIVE,
    PROBING,
    BranchTracker,
    HealthTable,
    Prober,
    ProbeSettings,
)

A = "sip:10.0.0.1:5060;transport=udp"
B = "sip:10.0.0.2:5060;transport=udp"
C = "sip:10.0.0.3:5060;transport=udp"


@dataclass
class Probe:
    uri: str
    on_result: Callable[[int], None]
    timeout: float | None


@implementer(IRequestSender)
class FakeSender:
    """Records OPTIONS probes; a test answers them through their callbacks."""

    def __init__(self) -> None:
        self.probes: list[Probe] = []

    def send_options(self, uri: str, on_result: Callable[[int], None], timeout: float | None = None) -> None:
        self.probes.append(Probe(uri, on_result, timeout))

    def sent(self) -> list[str]:
        return [probe.uri for probe in self.probes]

    def answer(self, uri: str, status: int) -> None:
        """Answer the oldest unanswered probe of ``uri``."""
        for index, probe in enumerate(self.probes):
            if probe.uri == uri:
                del self.probes[index]
                probe.on_result(status)
                return
        raise AssertionError(f"no probe of {uri} is waiting")

    def answer_all(self, status: int | dict[str, int]) -> None:
        probes, self.probes = self.probes, []
        for probe in probes:
            probe.on_result(status if isinstance(status, int) else status[probe.uri])


def table(*uris: str, down_after: int = 2, up_after: int = 1) -> HealthTable:
    health = HealthTable(down_after, up_after)
    for uri in uris:
        health.add(uri)
    return health


def prober(health: HealthTable, **settings: object) -> tuple[Prober, FakeSender, Clock]:
    clock = Clock()
    sender = FakeSender()
    probe = Prober(clock, health, ProbeSettings(**settings))  # type: ignore[arg-type]
    probe.start(sender)
    return probe, sender, clock


# -- the health table ----------------------------------------------------------------


def test_new_destinations_start_active_and_config_disabled_ones_disabled() -> None:
    """A destination added to the table is active; one the config disables is disabled."""
    health = HealthTable()
    health.add(A)
    health.add(B, disabled=True)
    assert health.states() == {A: ACTIVE, B: DISABLED}
    assert A in health and C not in health and len(health) == 2


def test_failed_probes_take_a_destination_down_after_down_after() -> None:
    """down_after consecutive failures mark it inactive; fewer do not."""
    health = table(A, down_after=3)
    health.failed(A, 1.0)
    health.failed(A, 2.0)
    assert health.state(A) == ACTIVE
    health.failed(A, 3.0, 503)
    entry = health.get(A)
    assert entry is not None
    assert (entry.state, entry.since, entry.last_status) == (INACTIVE, 3.0, 503)


def test_a_success_between_failures_resets_the_count() -> None:
    """Failures must be consecutive: an answer in between starts the count again."""
    health = table(A, down_after=2)
    health.failed(A, 1.0)
    health.alive(A, 2.0, 200)
    health.failed(A, 3.0)
    assert health.state(A) == ACTIVE
    health.failed(A, 4.0)
    assert health.state(A) == INACTIVE


def test_up_after_successes_bring_a_destination_back_through_probing() -> None:
    """A down destination is 'probing' after its first answer and active after up_after answers."""
    health = table(A, down_after=1, up_after=3)
    health.failed(A, 1.0)
    assert health.state(A) == INACTIVE
    health.alive(A, 2.0, 200)
    assert health.state(A) == PROBING
    health.alive(A, 3.0, 200)
    assert health.state(A) == PROBING
    health.alive(A, 4.0, 200)
    assert health.state(A) == ACTIVE


def test_a_failure_while_coming_back_sends_it_down_again() -> None:
    """One failed probe during recovery makes a destination inactive again, whatever down_after says."""
    health = table(A, down_after=3, up_after=2)
    health.down(A, 1.0, 503)
    health.alive(A, 2.0, 200)
    assert health.state(A) == PROBING
    health.failed(A, 3.0)
    assert health.state(A) == INACTIVE
    health.alive(A, 4.0, 200)
    assert health.state(A) == PROBING


def test_suspect_destination_is_active_again_on_any_answer() -> None:
    """Suspect: 'probing' at once, and active again on the first answer, even with up_after above 1."""
    health = table(A, up_after=3)
    health.suspect(A, 1.0)
    entry = health.get(A)
    assert entry is not None and entry.state == PROBING and entry.suspect
    health.alive(A, 2.0, 100)
    assert health.state(A) == ACTIVE and not entry.suspect


def test_suspect_destination_failing_probes_goes_down() -> None:
    """A suspect destination that then fails down_after probes is inactive."""
    health = table(A, down_after=2)
    health.suspect(A, 1.0)
    health.failed(A, 2.0)
    assert health.state(A) == PROBING
    health.failed(A, 3.0)
    assert health.state(A) == INACTIVE


def test_suspect_only_applies_to_active_destinations() -> None:
    """An inactive or disabled destination does not become suspect."""
    health = table(A, B)
    health.down(A, 1.0, 408)
    health.set_disabled(B, True)
    health.suspect(A, 2.0)
    health.suspect(B, 2.0)
    assert health.states() == {A: INACTIVE, B: DISABLED}


def test_down_is_immediate() -> None:
    """down() takes an active destination out at once, with the time and status noted."""
    health = table(A, down_after=5)
    health.down(A, 7.5, 408)
    entry = health.get(A)
    assert entry is not None and (entry.state, entry.since, entry.last_status) == (INACTIVE, 7.5, 408)


def test_disabled_destinations_ignore_all_evidence() -> None:
    """Nothing but an operator changes a disabled destination."""
    health = HealthTable(1, 1)
    health.add(A, disabled=True)
    health.failed(A, 1.0)
    health.down(A, 1.0, 503)
    health.alive(A, 1.0, 200)
    health.suspect(A, 1.0)
    assert health.state(A) == DISABLED


def test_operator_disables_and_enables() -> None:
    """set_disabled takes a destination out; enabling it again starts it active; config-disabled stays."""
    health = table(A)
    health.add(B, disabled=True)
    health.set_disabled(A, True, 1.0)
    assert health.state(A) == DISABLED
    health.set_disabled(A, False, 2.0)
    assert health.state(A) == ACTIVE
    health.set_disabled(B, False)
    assert health.state(B) == DISABLED
    with pytest.raises(KeyError):
        health.set_disabled(C, True)


def test_version_changes_only_with_a_state() -> None:
    """The version (a cache key for the router) moves on changes of state, not on confirmations."""
    health = table(A)
    before = health.version
    health.alive(A, 1.0, 200)
    health.failed(A, 2.0)
    assert health.version == before
    health.failed(A, 3.0)
    assert health.version > before


def test_changes_are_reported() -> None:
    """on_change hears every change of state with the old state and the reason."""
    health = table(A)
    seen: list[tuple[str, str, str]] = []
    health.on_change = lambda entry, old, why: seen.append((entry.uri, old, entry.state))
    health.down(A, 1.0, 503)
    health.alive(A, 2.0, 200)
    assert seen == [(A, ACTIVE, INACTIVE), (A, INACTIVE, ACTIVE)]


def test_take_over_copies_destinations_with_the_same_uri() -> None:
    """A new table copies the state of URIs the old one had; new URIs start active."""
    old = table(A, B, C)
    old.down(A, 1.0, 503)
    old.suspect(B, 2.0)
    new = table(A, B, "sip:10.0.0.9:5060")
    assert new.take_over(old) == 2
    assert new.states() == {A: INACTIVE, B: PROBING, "sip:10.0.0.9:5060": ACTIVE}
    entry = new.get(B)
    assert entry is not None and entry.suspect and entry.since == 2.0
    # the counts come along: one more answer completes what the old table started
    old2 = table(A, up_after=2)
    old2.down(A, 1.0, 503)
    old2.alive(A, 2.0, 200)
    new2 = table(A, up_after=2)
    new2.take_over(old2)
    new2.alive(A, 3.0, 200)
    assert new2.state(A) == ACTIVE


def test_take_over_respects_disabling() -> None:
    """Disabled in the new config: stays disabled; disabled only in the old config: active; by hand: kept."""
    old = HealthTable()
    old.add(A)
    old.down(A, 1.0, 503)
    old.add(B, disabled=True)
    old.add(C)
    old.set_disabled(C, True)
    new = HealthTable()
    new.add(A, disabled=True)
    new.add(B)
    new.add(C)
    new.take_over(old)
    assert new.states() == {A: DISABLED, B: ACTIVE, C: DISABLED}


# -- probes ------------------------------------------------------------------------


def test_sender_double_provides_irequestsender() -> None:
    """The fake sender used here really provides IRequestSender."""
    assert verifyObject(IRequestSender, FakeSender())


def test_probes_go_out_at_start_and_every_interval() -> None:
    """start() probes every destination at once with the timeout, then again each interval."""
    health = table(A, B)
    _, sender, clock = prober(health, interval=10.0, timeout=2.0)
    assert sender.sent() == [A, B]
    assert {probe.timeout for probe in sender.probes} == {2.0}
    sender.answer_all(200)
    clock.advance(9.9)
    assert sender.sent() == []
    clock.advance(0.1)
    assert sender.sent() == [A, B]


def test_probe_thresholds_move_states() -> None:
    """down_after failed probes take a destination down; up_after answered ones bring it back."""
    health = table(A, B, down_after=2, up_after=2)
    _, sender, clock = prober(health, interval=5.0, down_after=2, up_after=2)
    for _ in range(2):
        sender.answer_all({A: 408, B: 200})
        clock.advance(5.0)
    assert health.states() == {A: INACTIVE, B: ACTIVE}
    sender.answer_all(200)
    assert health.state(A) == PROBING
    clock.advance(5.0)
    sender.answer_all(200)
    assert health.state(A) == ACTIVE


def test_default_alive_codes_are_any_answer_but_408_and_503() -> None:
    """Without alive_codes, 404 or 486 show a destination alive; 408 and 503 count as failures."""
    settings = ProbeSettings()
    assert settings.is_alive(200) and settings.is_alive(404) and settings.is_alive(486)
    assert not settings.is_alive(408) and not settings.is_alive(503)
    health = table(A, B, down_after=1)
    _, sender, _ = prober(health, down_after=1)
    sender.answer_all({A: 404, B: 503})
    assert health.states() == {A: ACTIVE, B: INACTIVE}


def test_explicit_alive_codes_count_only_those() -> None:
    """With alive_codes = [200], a 404 answer is a failed probe."""
    health = table(A, down_after=1)
    _, sender, _ = prober(health, down_after=1, alive_codes=frozenset({200}))
    sender.answer(A, 404)
    assert health.state(A) == INACTIVE


def test_mode_inactive_probes_only_destinations_not_active() -> None:
    """In 'inactive' mode, only down, recovering or suspect destinations are probed."""
    health = table(A, B, C)
    health.down(B, 0.0, 503)
    health.suspect(C, 0.0)
    _, sender, clock = prober(health, mode="inactive", interval=1.0)
    assert sender.sent() == [B, C]
    sender.answer_all(200)
    clock.advance(1.0)
    assert sender.sent() == []


def test_mode_always_probes_every_destination_but_disabled_ones() -> None:
    """In 'always' mode, every destination is probed except the disabled ones."""
    health = table(A, B)
    health.add(C, disabled=True)
    health.down(B, 0.0, 503)
    _, sender, _ = prober(health)
    assert sender.sent() == [A, B]


def test_a_probe_under_way_is_not_repeated() -> None:
    """A destination whose probe has not reported is skipped by the next round, until timeout + interval."""
    health = table(A)
    _, sender, clock = prober(health, interval=1.0, timeout=5.0)
    assert sender.sent() == [A]
    clock.advance(1.0)
    assert sender.sent() == [A]
    clock.advance(5.0)  # 6 s without a result: the sender must have lost it
    assert sender.sent() == [A, A]


def test_stop_cancels_the_timer_and_ignores_late_results() -> None:
    """stop() leaves no delayed call behind, and results arriving afterwards change nothing."""
    health = table(A, down_after=1)
    probe, sender, clock = prober(health)
    assert clock.getDelayedCalls()
    probe.stop()
    assert clock.getDelayedCalls() == []
    sender.answer(A, 408)
    assert health.state(A) == ACTIVE
    clock.advance(100.0)
    assert sender.sent() == [] and not probe.running


def test_start_twice_keeps_one_timer() -> None:
    """A second start() (attach after a reload) switches the sender but does not double the rounds."""
    health = table(A)
    probe, sender, clock = prober(health, interval=1.0)
    other = FakeSender()
    probe.start(other)
    assert len(clock.getDelayedCalls()) == 1
    sender.answer_all(200)
    clock.advance(1.0)
    assert other.sent() == [A] and sender.sent() == []


def test_disabled_probing_sends_nothing() -> None:
    """probing.enabled = false: no probes and no timer."""
    health = table(A)
    probe, sender, clock = prober(health, enabled=False)
    assert sender.sent() == [] and clock.getDelayedCalls() == [] and not probe.running


def test_a_sender_that_raises_counts_as_a_failed_probe() -> None:
    """A probe that cannot be sent is a failure (503), and the rounds go on."""

    class Broken:
        def send_options(self, uri: str, on_result: Callable[[int], None], timeout: float | None = None) -> None:
            raise RuntimeError("no socket")

    health = table(A, down_after=1)
    clock = Clock()
    probe = Prober(clock, health, ProbeSettings(down_after=1))
    probe.start(Broken())
    assert health.state(A) == INACTIVE
    assert len(clock.getDelayedCalls()) == 1


def test_synchronous_results_are_recorded() -> None:
    """A sender that reports at once (an unroutable URI gives 503 at once) is handled like a late one."""

    class Immediate:
        def send_options(self, uri: str, on_result: Callable[[int], None], timeout: float | None = None) -> None:
            on_result(503)

    health = table(A, down_after=2)
    clock = Clock()
    Prober(clock, health, ProbeSettings(interval=1.0)).start(Immediate())
    clock.advance(1.0)
    assert health.state(A) == INACTIVE


# -- branch tracking -----------------------------------------------------------------


def targets(*uris: str) -> tuple[Target, ...]:
    return tuple(Target("sip:bob@example.com", next_hop=uri, label=uri) for uri in uris)


def test_tracker_counts_invite_branches_in_flight() -> None:
    """The first target counts from routing; a failover branch from its first event; each until its final."""
    tracker = BranchTracker()
    first, second = targets(A, B)
    tracker.start((first, second), True, frozenset({503}), 0.0)
    assert tracker.calls == {A: 1}
    tracker.event(first, A, "final", 503)
    assert tracker.calls == {A: 0}
    tracker.event(second, B, "response", 100)
    assert tracker.calls == {A: 0, B: 1}
    tracker.event(second, B, "final", 200)
    assert tracker.calls == {A: 0, B: 0}
    assert len(tracker) == 0


def test_tracker_does_not_count_other_methods() -> None:
    """A MESSAGE is followed (for its responses) but not counted as a call."""
    tracker = BranchTracker()
    (only,) = targets(A)
    tracker.start((only,), False, frozenset(), 0.0)
    assert tracker.calls == {}
    assert tracker.event(only, A, "response", 202)
    assert tracker.event(only, A, "final", 202)
    assert len(tracker) == 0


def test_tracker_tells_whether_a_branch_answered_before_its_final() -> None:
    """event() on a final says whether that branch had a response first (a real 408 vs a timeout)."""
    tracker = BranchTracker()
    first, second = targets(A, B)
    tracker.start((first, second), True, frozenset({408}), 0.0)
    assert not tracker.event(first, A, "suspect", 0)
    assert not tracker.event(first, A, "final", 408)
    assert tracker.event(second, B, "response", 180)
    assert tracker.event(second, B, "final", 408)


def test_tracker_forgets_a_request_whose_status_ends_it() -> None:
    """A status outside the failover set ends the request: later targets are never expected."""
    tracker = BranchTracker()
    first, second = targets(A, B)
    tracker.start((first, second), True, frozenset({503}), 0.0)
    tracker.event(first, A, "response", 486)
    tracker.event(first, A, "final", 486)
    assert len(tracker) == 0
    # an event for a target no longer followed changes no count
    assert not tracker.event(second, B, "final", 408)
    assert tracker.calls == {A: 0}


def test_tracker_sweeps_requests_that_never_ended() -> None:
    """A request whose branch never reported is forgotten after the limit, and its count released."""
    tracker = BranchTracker(limit=100.0)
    (lost,) = targets(A)
    tracker.start((lost,), True, frozenset(), 0.0)
    (other,) = targets(B)
    tracker.start((other,), True, frozenset(), 50.0)
    tracker.sweep(99.0)
    assert tracker.calls == {A: 1, B: 1}
    tracker.sweep(100.0)
    assert tracker.calls == {A: 0, B: 1} and len(tracker) == 1
