"""An in-process location store: for tests and a single worker process.

Bindings live in this object's dicts, so workers using separate
:class:`MemoryLocationStore` objects do not see each other's registrations;
use the SQLite store for several workers on one host.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet import defer
from zope.interface import implementer

from sipgate_proxy.registrar.location import Binding, Change, ILocationStore, StaleRequest, merge_changes, ordered

__all__ = ["MemoryLocationStore"]


@implementer(ILocationStore)
class MemoryLocationStore:
    """:class:`ILocationStore` over a dict of AoR -> {identity: Binding}.

    Every Deferred has fired when the method returns.
    """

    name = "memory"

    def __init__(self) -> None:
        self._aors: dict[str, dict[str, Binding]] = {}

    def get(self, aor: str, now: float) -> defer.Deferred[list[Binding]]:
        bindings = self._aors.get(aor, {})
        return defer.succeed(ordered(b for b in bindings.values() if b.alive(now)))

    def apply(
        self,
        aor: str,
        changes: Sequence[Change],
        now: float,
        max_contacts: int | None = None,
        evict_oldest: bool = False,
    ) -> defer.Deferred[list[Binding]]:
        try:
            result = merge_changes(aor, self._aors.get(aor, {}), changes, now, max_contacts, evict_oldest)
        except Exception:
            return defer.fail()
        if result:
            self._aors[aor] = result
        else:
            self._aors.pop(aor, None)
        return defer.succeed(ordered(result.values()))

    def remove_all(self, aor: str, call_id: str, cseq: int, now: float) -> defer.Deferred[int]:
        bindings = self._aors.get(aor, {})
        alive = [b for b in bindings.values() if b.alive(now)]
        for binding in alive:
            if binding.call_id == call_id and cseq <= binding.cseq:
                return defer.fail(StaleRequest(aor, binding.contact, call_id, binding.cseq, cseq))
        self._aors.pop(aor, None)
        return defer.succeed(len(alive))

    def purge(self, now: float) -> defer.Deferred[int]:
        removed = 0
        for aor in list(self._aors):
            bindings = self._aors[aor]
            expired = [key for key, b in bindings.items() if not b.alive(now)]
            for key in expired:
                del bindings[key]
            removed += len(expired)
            if not bindings:
                del self._aors[aor]
        return defer.succeed(removed)

    def count(self, now: float) -> defer.Deferred[int]:
        return defer.succeed(sum(b.alive(now) for bindings in self._aors.values() for b in bindings.values()))

    def close(self) -> defer.Deferred[None]:
        return defer.succeed(None)
