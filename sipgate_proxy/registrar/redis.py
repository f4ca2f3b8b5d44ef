"""The shared location store: Redis, for several hosts doing the work together.

Layout: one Redis hash per address-of-record, key ``prefix + aor``, mapping
:attr:`Binding.identity` to the binding as JSON. A lookup is one ``HGETALL``.

A REGISTER is a read-merge-write: the merge rules live in Python
(:func:`merge_changes`), so the write is made atomic across processes with an
optimistic transaction: ``WATCH`` the AoR's key, read it, merge, then
``MULTI`` / ``EXEC`` the difference. When another process changed the key in
between, ``EXEC`` does nothing and the whole read-merge-write is retried
after a short random pause (at most ``max_retries`` times, then
:class:`StoreContention`).

Every write also sets the key's time to live to the latest expiry among the
AoR's bindings, so Redis forgets a dead AoR by itself; expired fields of a
live AoR count as absent and go at the AoR's next write or at :meth:`purge`.
The TTL is relative (``PEXPIRE``) and computed from the ``now`` passed in
(the reactor's clock): expiry arithmetic never uses Redis's clock, so a skew
between the hosts and Redis moves at most when Redis frees memory.

``purge`` and ``count`` walk the keys with ``SCAN`` (never ``KEYS``): they
are for housekeeping and metrics, not for the call path.

The client is txredisapi's lazy connection pool: it connects on first use
and reconnects by itself. Every operation is bounded by ``timeout`` seconds
(timed with the reactor passed in), so a REGISTER fails with an errback
rather than waiting forever while Redis is unreachable.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import txredisapi
from twisted.internet import defer, task
from twisted.logger import Logger
from zope.interface import implementer

from sipgate_proxy.registrar.location import Binding, Change, ILocationStore, StaleRequest, merge_changes, ordered

__all__ = ["RedisLocationStore", "RedisURL", "StoreContention", "parse_redis_url"]

log = Logger(namespace="sipgate_proxy.registrar")

T = TypeVar("T")

DEFAULT_PORT = 6379
_SCAN_BATCH = 500
# glob characters that SCAN MATCH would interpret in a prefix
_GLOB = str.maketrans({c: "\\" + c for c in "*?[]\\"})


class StoreContention(Exception):
    """An AoR's key changed under every one of ``max_retries`` transactions."""


@dataclass(frozen=True, slots=True)
class RedisURL:
    host: str
    port: int = DEFAULT_PORT
    db: int = 0
    password: str | None = None


def parse_redis_url(url: str) -> RedisURL:
    """``redis://[:password@]host[:port][/db]`` (port 6379 and db 0 by default).

    Raises ValueError saying what is wrong.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise ValueError(f"not a redis:// URL ({error}): {url!r}") from None
    if parts.scheme != "redis":
        raise ValueError(f"expected redis://host:port/db, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"the URL names no host: {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"query and fragment are not supported: {url!r}")
    path = parts.path.strip("/")
    if path and (not path.isdigit() or len(path) > 5):
        raise ValueError(f"the path must be a database number, got {parts.path!r}")
    return RedisURL(
        host=parts.hostname,
        port=DEFAULT_PORT if port is None else port,
        db=int(path) if path else 0,
        password=unquote(parts.password) if parts.password else None,
    )


def _encode(binding: Binding) -> str:
    data = asdict(binding)
    data["path"] = list(binding.path)
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def _decode(text: str | bytes) -> Binding:
    data = json.loads(text)
    data["path"] = tuple(data["path"])
    return Binding(**data)


def _ttl_ms(bindings: Mapping[str, Binding], now: float) -> int:
    """Milliseconds until the latest expiry at ``now``; at least 1."""
    latest = max(b.expires_at for b in bindings.values())
    return max(1, math.ceil((latest - now) * 1000))


# What a transaction decides from the AoR's stored bindings: the bindings
# afterwards (None: leave the key alone) and the operation's result.
Decision = tuple[dict[str, Binding] | None, T]


@implementer(ILocationStore)
class RedisLocationStore:
    """:class:`ILocationStore` in Redis at ``url`` (``redis://host:port/db``).

    ``reactor`` provides IReactorTime (operation timeouts); keys are
    ``prefix + aor``, so several deployments (or tests) can share a server.
    ``timeout`` bounds each operation in seconds, ``max_retries`` the
    optimistic transactions of one write, ``pool_size`` the connections.
    """

    name = "redis"

    def __init__(
        self,
        url: str,
        reactor: Any,
        prefix: str = "sipgate:loc:",
        *,
        timeout: float = 5.0,
        max_retries: int = 20,
        pool_size: int = 4,
    ) -> None:
        self.url = parse_redis_url(url)
        self.prefix = prefix
        self._reactor = reactor
        self._timeout = timeout
        self._max_retries = max_retries
        self._redis: Any = txredisapi.lazyConnectionPool(
            host=self.url.host,
            port=self.url.port,
            dbid=self.url.db,
            poolsize=pool_size,
            password=self.url.password,
            convertNumbers=False,
        )
        self._closed = False

    # -- plumbing

    def _key(self, aor: str) -> str:
        return self.prefix + aor

    def _run(self, work: Callable[..., Generator[Any, Any, T]], *args: Any) -> defer.Deferred[T]:
        """Run the generator ``work`` with inlineCallbacks, bounded by the timeout."""
        if self._closed:
            return defer.fail(RuntimeError("the location store is closed"))
        d: defer.Deferred[T] = defer.inlineCallbacks(work)(*args)
        d.addTimeout(self._timeout, self._reactor)
        return d

    def _read_done(self, key: str, attempt: int) -> defer.Deferred[Any] | None:
        """Called inside a transaction between the read and MULTI.

        Does nothing; tests override it to change the key from another store
        at exactly that point and so exercise the retry deterministically.
        """
        return None

    def _transact(
        self, key: str, now: float, decide: Callable[[dict[str, Binding]], Decision[T]]
    ) -> Generator[Any, Any, T]:
        """WATCH ``key``, read it, ``decide``, write the difference in MULTI/EXEC; retry on a conflict.

        An exception from ``decide`` aborts without writing anything.
        """
        for attempt in range(self._max_retries):
            conn = yield self._redis.watch(key)  # a connection of its own until the transaction ends
            in_multi = False
            try:
                raw = yield conn.hgetall(key)
                stored = {field: _decode(text) for field, text in raw.items()}
                after, result = decide(stored)
                yield self._read_done(key, attempt)
                if after is None or after == stored:
                    yield conn.unwatch()
                    return result
                yield conn.multi()
                in_multi = True
                if not after:
                    conn.delete(key)
                else:
                    gone = [field for field in stored if field not in after]
                    if gone:
                        conn.hdel(key, gone)
                    changed = [(field, _encode(b)) for field, b in after.items() if stored.get(field) != b]
                    if changed:
                        conn.execute_command("HSET", key, *(item for pair in changed for item in pair))
                    conn.execute_command("PEXPIRE", key, _ttl_ms(after, now))
                try:
                    yield conn.commit()  # gives the connection back to the pool, also on WatchError
                except txredisapi.WatchError:
                    log.debug("{key} changed during a transaction; retrying", key=key)
                    # a random pause, growing, so that writers racing for one key spread out
                    yield task.deferLater(self._reactor, random.uniform(0, min(0.1, 0.002 * 2**attempt)))
                    continue
                return result
            except BaseException:
                if conn.inTransaction or conn.pendingTransaction:
                    # give the connection back in a clean state
                    if in_multi and conn.inMulti:
                        conn.discard()
                    else:
                        conn.unwatch()
                raise
        raise StoreContention(f"{key}: changed by others during {self._max_retries} transactions")

    def _scan(self) -> Generator[Any, Any, list[str]]:
        keys: set[str] = set()
        cursor = 0
        pattern = self.prefix.translate(_GLOB) + "*"
        while True:
            cursor, batch = yield self._redis.scan(cursor, pattern, _SCAN_BATCH)
            keys.update(batch)
            cursor = int(cursor)
            if cursor == 0:
                return sorted(keys)

    # -- ILocationStore

    def get(self, aor: str, now: float) -> defer.Deferred[list[Binding]]:
        def work() -> Generator[Any, Any, list[Binding]]:
            raw = yield self._redis.hgetall(self._key(aor))
            return ordered(b for b in map(_decode, raw.values()) if b.alive(now))

        return self._run(work)

    def apply(
        self,
        aor: str,
        changes: Sequence[Change],
        now: float,
        max_contacts: int | None = None,
        evict_oldest: bool = False,
    ) -> defer.Deferred[list[Binding]]:
        def decide(stored: dict[str, Binding]) -> Decision[list[Binding]]:
            result = merge_changes(aor, stored, changes, now, max_contacts, evict_oldest)
            return result, ordered(result.values())

        return self._run(self._transact, self._key(aor), now, decide)

    def remove_all(self, aor: str, call_id: str, cseq: int, now: float) -> defer.Deferred[int]:
        def decide(stored: dict[str, Binding]) -> Decision[int]:
            alive = [b for b in stored.values() if b.alive(now)]
            for binding in alive:
                if binding.call_id == call_id and cseq <= binding.cseq:
                    raise StaleRequest(aor, binding.contact, call_id, binding.cseq, cseq)
            return ({} if stored else None), len(alive)

        return self._run(self._transact, self._key(aor), now, decide)

    def purge(self, now: float) -> defer.Deferred[int]:
        def decide(stored: dict[str, Binding]) -> Decision[int]:
            alive = {field: b for field, b in stored.items() if b.alive(now)}
            return alive, len(stored) - len(alive)

        def work() -> Generator[Any, Any, int]:
            removed = 0
            for key in (yield from self._scan()):
                removed += yield from self._transact(key, now, decide)
            return removed

        return self._run(work)

    def count(self, now: float) -> defer.Deferred[int]:
        def work() -> Generator[Any, Any, int]:
            alive = 0
            for key in (yield from self._scan()):
                raw = yield self._redis.hvals(key)
                alive += sum(_decode(text).alive(now) for text in raw)
            return alive

        return self._run(work)

    def close(self) -> defer.Deferred[None]:
        """Disconnect the pool; closing twice is harmless."""
        if self._closed:
            return defer.succeed(None)
        self._closed = True
        d: defer.Deferred[Any] = self._redis.disconnect()
        d.addTimeout(self._timeout, self._reactor)
        return d.addBoth(lambda _: None)
