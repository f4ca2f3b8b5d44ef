"""Call admission control: concurrent calls per account and per trunk.

A call counts from the 2xx to its INVITE until its BYE (either direction),
or until ``dialog_timeout`` passes without one (a lost BYE must not hold a
slot for ever). Keys are ``account:<user@realm>`` (the authenticated caller)
and ``trunk:<tag>`` (the trusted peer a call came from). Counts are kept per
process for now; a shared store comes with the Redis work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class AdmissionSettings:
    #: concurrent calls per authenticated account; 0 = no limit
    per_account: int = 0
    #: concurrent calls per trusted peer tag; "*" is the default for other tags
    per_trunk: Mapping[str, int] = field(default_factory=dict)
    #: the answer over the limit: 503 (with Retry-After) or 486
    status: int = 503
    retry_after: int = 30
    dialog_timeout: float = 4 * 3600.0

    @property
    def enabled(self) -> bool:
        return self.per_account > 0 or bool(self.per_trunk)


class CallCounter:
    def __init__(self, settings: AdmissionSettings) -> None:
        self.settings = settings
        self.active: dict[str, int] = {}
        #: Call-ID -> (keys, started)
        self._calls: dict[str, tuple[tuple[str, ...], float]] = {}
        self._swept = 0.0

    def keys_for(self, attrs: Mapping[str, str]) -> tuple[str, ...]:
        keys = []
        user = attrs.get("auth.user")
        if user and self.settings.per_account > 0:
            keys.append(f"account:{user}")
        trunk = attrs.get("trusted")
        if trunk and self._trunk_limit(trunk) > 0:
            keys.append(f"trunk:{trunk}")
        return tuple(keys)

    def _trunk_limit(self, tag: str) -> int:
        limits = self.settings.per_trunk
        return limits.get(tag, limits.get("*", 0))

    def _limit(self, key: str) -> int:
        kind, _, name = key.partition(":")
        return self.settings.per_account if kind == "account" else self._trunk_limit(name)

    def over_limit(self, keys: Sequence[str], now: float) -> str | None:
        """The first key whose limit is reached, or None when the call may go."""
        self.sweep(now)
        for key in keys:
            if self.active.get(key, 0) >= self._limit(key):
                return key
        return None

    def established(self, call_id: str, keys: tuple[str, ...], now: float) -> None:
        if not keys or call_id in self._calls:
            return
        self._calls[call_id] = (keys, now)
        for key in keys:
            self.active[key] = self.active.get(key, 0) + 1

    def ended(self, call_id: str) -> None:
        found = self._calls.pop(call_id, None)
        if found is None:
            return
        for key in found[0]:
            left = self.active.get(key, 0) - 1
            if left > 0:
                self.active[key] = left
            else:
                self.active.pop(key, None)

    def sweep(self, now: float) -> None:
        """End calls older than dialog_timeout (at most once a minute)."""
        if now - self._swept < 60.0:
            return
        self._swept = now
        limit = now - self.settings.dialog_timeout
        stale = [call_id for call_id, (_, started) in self._calls.items() if started < limit]
        for call_id in stale:
            self.ended(call_id)

    def __len__(self) -> int:
        return len(self._calls)
