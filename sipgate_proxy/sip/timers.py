"""A heap of deadlines for the sans-IO core.

The core arms timers at absolute times; the I/O layer asks for the earliest
deadline, sleeps until then and calls :meth:`TimerHeap.expire` with the time
it woke up at.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from itertools import count


class Timer:
    """One armed timer; ``cancel()`` makes it never fire."""

    __slots__ = ("active", "callback", "deadline", "owner", "seq")

    def __init__(self, deadline: float, seq: int, callback: Callable[[float], None], owner: TimerHeap) -> None:
        self.deadline = deadline
        self.seq = seq
        self.callback = callback
        self.active = True
        self.owner = owner

    def cancel(self) -> None:
        if self.active:
            self.active = False
            self.owner._cancelled_one()

    def __lt__(self, other: Timer) -> bool:
        if self.deadline != other.deadline:
            return self.deadline < other.deadline
        return self.seq < other.seq


class TimerHeap:
    def __init__(self) -> None:
        self._heap: list[Timer] = []
        self._seq = count()
        self._cancelled = 0

    def arm(self, deadline: float, callback: Callable[[float], None]) -> Timer:
        timer = Timer(deadline, next(self._seq), callback, self)
        heapq.heappush(self._heap, timer)
        return timer

    def _cancelled_one(self) -> None:
        # long timers (Timer C, B) are mostly cancelled long before they are
        # due; rebuild the heap when dead entries pass a quarter of it, so memory
        # follows the live timers, not the call rate times the longest timer
        self._cancelled += 1
        if self._cancelled > 1024 and self._cancelled * 4 > len(self._heap):
            self._heap = [timer for timer in self._heap if timer.active]
            heapq.heapify(self._heap)
            self._cancelled = 0

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and not heap[0].active:
            heapq.heappop(heap)
            self._cancelled = max(0, self._cancelled - 1)
        return heap[0].deadline if heap else None

    def expire(self, now: float) -> int:
        """Fire every active timer due at ``now``; return how many fired."""
        heap = self._heap
        fired = 0
        while heap and heap[0].deadline <= now:
            timer = heapq.heappop(heap)
            if not timer.active:
                self._cancelled = max(0, self._cancelled - 1)
            else:
                timer.active = False
                fired += 1
                timer.callback(now)
        return fired

    def __len__(self) -> int:
        return sum(1 for timer in self._heap if timer.active)

    @property
    def size(self) -> int:
        """Entries held, cancelled ones included (what the memory follows)."""
        return len(self._heap)
