"""Stable hashes and a consistent-hash ring for the ``dispatcher`` router.

Every worker process and every node must send the same Call-ID to the same
destination, so nothing here uses Python's ``hash()`` (salted per process):
keys are hashed with :func:`zlib.crc32`, followed by the 32-bit finaliser of
MurmurHash3, which spreads the bits of similar inputs (``1-2345@host``,
``2-2345@host`` ...) over the whole range. Plain crc32 is linear, and on the
ring its clustered points gave destinations shares from 16% to 25% in place
of 20%; with the finaliser they stay close to even.
"""

from __future__ import annotations

import zlib
from bisect import bisect_right
from collections.abc import Sequence

#: points on the ring per destination; more points, more even shares
VIRTUAL_NODES = 100

_MASK = 0xFFFFFFFF


def stable_hash(text: str) -> int:
    """A 32-bit hash of ``text`` that is the same in every process and on every host."""
    value = zlib.crc32(text.encode("utf-8", "surrogatepass"))
    value ^= value >> 16
    value = (value * 0x85EBCA6B) & _MASK
    value ^= value >> 13
    value = (value * 0xC2B2AE35) & _MASK
    value ^= value >> 16
    return value


class HashRing:
    """Consistent hashing over a fixed list of members (their indexes are returned).

    Each member owns ``vnodes`` points on a 32-bit circle, placed at
    ``stable_hash(f"{name}#{n}")``. A key belongs to the first point at or
    after its own hash, going round. :meth:`order` lists every member once,
    in the order their points follow the key's position, so that skipping a
    member that is down hands its keys to the next member on the ring and
    leaves every other key where it was.
    """

    __slots__ = ("_orders", "_owners", "_points", "size")

    def __init__(self, names: Sequence[str], vnodes: int = VIRTUAL_NODES) -> None:
        if vnodes < 1:
            raise ValueError("vnodes must be at least 1")
        points = sorted((stable_hash(f"{name}#{n}"), index) for index, name in enumerate(names) for n in range(vnodes))
        self._points = [point for point, _ in points]
        self._owners = [owner for _, owner in points]
        #: member order seen from each point, computed when first needed
        self._orders: dict[int, tuple[int, ...]] = {}
        self.size = len(names)

    def point_of(self, key: str) -> int:
        """The index of the ring point that owns ``key`` (-1 for an empty ring)."""
        if not self._points:
            return -1
        return bisect_right(self._points, stable_hash(key)) % len(self._points)

    def owner(self, key: str) -> int | None:
        """The member that owns ``key`` when every member is up."""
        point = self.point_of(key)
        return None if point < 0 else self._owners[point]

    def order(self, key: str) -> tuple[int, ...]:
        """Every member once, in ring order from ``key``'s position."""
        point = self.point_of(key)
        if point < 0:
            return ()
        cached = self._orders.get(point)
        if cached is None:
            cached = self._walk(point)
            self._orders[point] = cached
        return cached

    def _walk(self, start: int) -> tuple[int, ...]:
        owners = self._owners
        count = len(owners)
        seen: dict[int, None] = {}
        for step in range(count):
            owner = owners[(start + step) % count]
            if owner not in seen:
                seen[owner] = None
                if len(seen) == self.size:
                    break
        return tuple(seen)
