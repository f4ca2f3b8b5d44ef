"""Tests for sipgate_proxy.sip.timers.TimerHeap: deadlines fired in order, cancelling, counting."""

from __future__ import annotations

from collections.abc import Callable

from sipgate_proxy.sip.timers import TimerHeap


class Log:
    """Callbacks that record (name, now) when fired."""

    def __init__(self) -> None:
        self.fired: list[tuple[str, float]] = []

    def cb(self, name: str) -> Callable[[float], None]:
        def fire(now: float) -> None:
            self.fired.append((name, now))

        return fire


def test_empty_heap() -> None:
    """An empty heap has no deadline, fires nothing and has length 0."""
    heap = TimerHeap()
    assert heap.next_deadline() is None
    assert heap.expire(1e9) == 0
    assert len(heap) == 0


def test_fires_in_deadline_order_with_now() -> None:
    """Due timers fire earliest first, each callback getting the expire time."""
    heap, log = TimerHeap(), Log()
    heap.arm(3.0, log.cb("c"))
    heap.arm(1.0, log.cb("a"))
    heap.arm(2.0, log.cb("b"))
    assert heap.next_deadline() == 1.0
    assert heap.expire(2.5) == 2
    assert log.fired == [("a", 2.5), ("b", 2.5)]
    assert heap.next_deadline() == 3.0
    assert len(heap) == 1


def test_equal_deadlines_fire_in_arming_order() -> None:
    """Timers with the same deadline fire in the order they were armed."""
    heap, log = TimerHeap(), Log()
    for name in "abcde":
        heap.arm(5.0, log.cb(name))
    assert heap.expire(5.0) == 5
    assert [name for name, _ in log.fired] == list("abcde")


def test_deadline_equal_to_now_fires_and_later_does_not() -> None:
    """A timer fires when now reaches its deadline, not before."""
    heap, log = TimerHeap(), Log()
    heap.arm(1.0, log.cb("a"))
    assert heap.expire(0.999) == 0
    assert log.fired == []
    assert heap.expire(1.0) == 1
    assert log.fired == [("a", 1.0)]


def test_fired_timer_does_not_fire_again() -> None:
    """A timer fires once; a later expire finds nothing."""
    heap, log = TimerHeap(), Log()
    timer = heap.arm(1.0, log.cb("a"))
    heap.expire(1.0)
    assert not timer.active
    assert heap.expire(100.0) == 0
    timer.cancel()  # harmless after firing
    assert log.fired == [("a", 1.0)]


def test_cancel_prevents_firing_and_is_not_counted() -> None:
    """A cancelled timer never fires and expire's count leaves it out."""
    heap, log = TimerHeap(), Log()
    a = heap.arm(1.0, log.cb("a"))
    heap.arm(2.0, log.cb("b"))
    c = heap.arm(3.0, log.cb("c"))
    a.cancel()
    c.cancel()
    assert len(heap) == 1
    assert heap.expire(10.0) == 1
    assert log.fired == [("b", 10.0)]
    assert len(heap) == 0


def test_next_deadline_skips_cancelled_timers() -> None:
    """next_deadline() ignores cancelled timers at the front of the heap."""
    heap, log = TimerHeap(), Log()
    first = heap.arm(1.0, log.cb("a"))
    second = heap.arm(2.0, log.cb("b"))
    heap.arm(7.0, log.cb("c"))
    first.cancel()
    assert heap.next_deadline() == 2.0
    second.cancel()
    assert heap.next_deadline() == 7.0


def test_next_deadline_none_when_all_cancelled() -> None:
    """With every timer cancelled there is no deadline."""
    heap, log = TimerHeap(), Log()
    timers = [heap.arm(float(i), log.cb(str(i))) for i in range(5)]
    for timer in timers:
        timer.cancel()
    assert heap.next_deadline() is None
    assert len(heap) == 0
    assert heap.expire(100.0) == 0


def test_timer_armed_by_a_callback_fires_in_the_same_expire_when_due() -> None:
    """A callback may arm new timers; one already due fires in the same expire call."""
    heap, log = TimerHeap(), Log()

    def rearm(now: float) -> None:
        log.fired.append(("first", now))
        heap.arm(now, log.cb("due now"))
        heap.arm(now + 1.0, log.cb("later"))

    heap.arm(1.0, rearm)
    assert heap.expire(1.0) == 2
    assert log.fired == [("first", 1.0), ("due now", 1.0)]
    assert heap.next_deadline() == 2.0


def test_callback_may_cancel_a_later_timer() -> None:
    """Cancelling a due timer from an earlier callback in the same expire stops it."""
    heap, log = TimerHeap(), Log()
    victim = heap.arm(2.0, log.cb("victim"))

    def killer(now: float) -> None:
        log.fired.append(("killer", now))
        victim.cancel()

    heap.arm(1.0, killer)
    assert heap.expire(5.0) == 1
    assert log.fired == [("killer", 5.0)]


def test_cancelled_timers_do_not_pile_up() -> None:
    """Arming and cancelling many long timers keeps the heap near the live count (no growth with call rate)."""
    from sipgate_proxy.sip.timers import TimerHeap

    heap = TimerHeap()
    keep = [heap.arm(1000.0 + i, lambda now: None) for i in range(10)]
    for i in range(100_000):
        heap.arm(180.0 + i, lambda now: None).cancel()
    assert len(heap) == 10
    assert heap.size < 3000
    assert heap.next_deadline() == 1000.0
    assert all(timer.active for timer in keep)
