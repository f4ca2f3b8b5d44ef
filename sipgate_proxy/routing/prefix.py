"""A table of number prefixes searched longest match first.

Built for very large tables (a million prefixes and more): one dict maps each
prefix to its entries, so a lookup is at most ``len(number) + 1`` dict probes,
each O(1), and memory is one string key and one value per prefix. A digit trie
would need a node object per digit; the dict keeps the per-prefix cost to
what the prefix itself needs.

A prefix with a single entry stores the entry itself; only prefixes with
several entries pay for a tuple. Entries must therefore not be tuples or lists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

V = TypeVar("V")
R = TypeVar("R")


class PrefixTable(Generic[V]):
    """Prefix -> entries, frozen once built; entries keep their insertion
    order, or the order ``freeze`` sorts them in."""

    __slots__ = ("_entries", "_frozen", "_longest")

    def __init__(self) -> None:
        self._entries: dict[str, Any] = {}
        self._longest = 0
        self._frozen = False

    def add(self, prefix: str, entry: V) -> None:
        """Add ``entry`` under ``prefix`` (after those already there)."""
        if self._frozen:
            raise RuntimeError("the prefix table is frozen")
        entries = self._entries
        existing = entries.get(prefix)
        if existing is None:
            entries[prefix] = entry
            if len(prefix) > self._longest:
                self._longest = len(prefix)
        elif type(existing) is list:
            existing.append(entry)
        else:
            entries[prefix] = [existing, entry]

    def freeze(self, key: Callable[[V], Any] | None = None) -> None:
        """Finish building; entries sharing a prefix are sorted by ``key``
        (a stable sort, so equal keys keep insertion order)."""
        entries = self._entries
        for prefix, value in entries.items():
            if type(value) is list:
                if key is not None:
                    value.sort(key=key)
                entries[prefix] = tuple(value)
        self._frozen = True

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def longest(self) -> int:
        """Length of the longest prefix in the table."""
        return self._longest

    def get(self, prefix: str) -> tuple[V, ...]:
        """The entries stored under exactly ``prefix``."""
        value = self._entries.get(prefix)
        if value is None:
            return ()
        if type(value) is tuple or type(value) is list:
            return tuple(value)
        return (value,)

    def matches(self, number: str) -> Iterator[tuple[str, tuple[V, ...]]]:
        """``(prefix, entries)`` for every prefix of ``number`` in the table,
        longest first; the empty prefix last when present."""
        entries = self._entries
        for length in range(min(len(number), self._longest), -1, -1):
            prefix = number[:length]
            value = entries.get(prefix)
            if value is not None:
                if type(value) is tuple:
                    yield prefix, value
                elif type(value) is list:  # not frozen yet
                    yield prefix, tuple(value)
                else:
                    yield prefix, (value,)

    def first(self, number: str, visit: Callable[[str, tuple[V, ...]], R | None]) -> R | None:
        """Call ``visit(prefix, entries)`` for the prefixes of ``number`` in the
        table, longest first, until it returns something other than None, and
        return that (None when no call did).

        The same walk as :meth:`matches` without a generator: the hot path.
        """
        get = self._entries.get
        length = min(len(number), self._longest)
        while length >= 0:
            value = get(number[:length])
            if value is not None:
                if type(value) is tuple:
                    result = visit(number[:length], value)
                elif type(value) is list:  # not frozen yet
                    result = visit(number[:length], tuple(value))
                else:
                    result = visit(number[:length], (value,))
                if result is not None:
                    return result
            length -= 1
        return None
