"""Requests the proxy sends on its own behalf: OPTIONS health probes."""

from __future__ import annotations

from collections.abc import Callable

from .message import Response
from .timers import Timer
from .transaction import ClientTransaction


class ProbeUser:
    """The ClientUser of one probe: reports one final status, once."""

    __slots__ = ("done", "on_result", "timer")

    def __init__(self, on_result: Callable[[int], None]) -> None:
        self.on_result = on_result
        self.done = False
        self.timer: Timer | None = None

    def _finish(self, status: int) -> None:
        if self.done:
            return
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
        self.on_result(status)

    def on_response(self, txn: ClientTransaction, response: Response, now: float) -> None:
        if response.status >= 200:
            self._finish(response.status)

    def on_timeout(self, txn: ClientTransaction, now: float) -> None:
        self._finish(408)

    def on_transport_error(self, txn: ClientTransaction, now: float) -> None:
        self._finish(503)

    def on_retransmit(self, txn: ClientTransaction, now: float) -> None:
        pass

    def expire(self, now: float) -> None:
        """The caller's own deadline passed: nothing answered in time."""
        self._finish(408)
