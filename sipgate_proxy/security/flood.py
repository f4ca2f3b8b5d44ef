"""Flood protection: a per-source request rate limit with a ban (like pike).

Each source address may send ``limit`` requests per ``window`` seconds. One
more and it is banned for ``ban`` seconds: its requests are dropped without
a reply, so a scanner or a broken device learns nothing and costs nothing.
Time comes in as ``now``; memory is bounded by the number of sources seen in
the last window plus the banned ones.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FloodSettings:
    #: requests per window allowed from one address; 0 turns the guard off
    limit: int = 0
    window: float = 2.0
    ban: float = 300.0


class FloodGuard:
    def __init__(self, settings: FloodSettings) -> None:
        self.settings = settings
        self._window_start = 0.0
        self._counts: dict[str, int] = {}
        self._banned: dict[str, float] = {}
        #: requests dropped since start (for logs and metrics)
        self.dropped = 0

    @property
    def enabled(self) -> bool:
        return self.settings.limit > 0

    def allow(self, host: str, now: float) -> bool:
        """Count a request from ``host``; False when it must be dropped."""
        banned = self._banned
        until = banned.get(host)
        if until is not None:
            if now < until:
                self.dropped += 1
                return False
            del banned[host]
        settings = self.settings
        if now - self._window_start >= settings.window:
            self._window_start = now
            self._counts = {}
            if len(banned) > 1024:
                for address in [a for a, t in banned.items() if t <= now]:
                    del banned[address]
        counts = self._counts
        count = counts.get(host, 0) + 1
        counts[host] = count
        if count > settings.limit:
            banned[host] = now + settings.ban
            self.dropped += 1
            return False
        return True

    def banned(self, now: float) -> list[str]:
        return [address for address, until in self._banned.items() if now < until]
