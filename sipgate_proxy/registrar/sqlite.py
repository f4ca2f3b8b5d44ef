"""The embedded location store: one SQLite file shared by the workers of a host.

Why it runs on the reactor thread: a lookup is one indexed read of a local
file (microseconds, also with millions of bindings) and a REGISTER one small
write transaction, so handing each call to a thread pool would cost more
than it saves. The Deferreds have fired when the methods return.

Several processes may open the same file: the database is in WAL mode
(readers never wait for the writer), every write runs in its own
``BEGIN IMMEDIATE`` transaction (the read-merge-write of a REGISTER is
atomic against other workers), and a bounded ``busy_timeout`` makes a worker
wait for another's write lock for at most that long before the operation
fails (``sqlite3.OperationalError``: database is locked) rather than block
its reactor indefinitely. ``synchronous=NORMAL`` means a power loss may lose
the last registrations, never corrupt the file; devices register again.

Table ``location``: one row per binding, ``PRIMARY KEY (aor, identity)``
(``identity`` is :attr:`Binding.identity`), ``WITHOUT ROWID`` so the rows are
clustered by AoR and a lookup is a range read of the primary key. An index on
``expires_at`` serves :meth:`SQLiteLocationStore.purge` and ``count``. The
Path header values are stored as a JSON array.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from sipgate_proxy.registrar.location import Binding, Change, ILocationStore, StaleRequest, merge_changes, ordered

__all__ = ["SQLiteLocationStore"]

log = Logger(namespace="sipgate_proxy.registrar")

T = TypeVar("T")

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS location (
    aor TEXT NOT NULL,
    identity TEXT NOT NULL,
    contact TEXT NOT NULL,
    expires_at REAL NOT NULL,
    q REAL NOT NULL,
    call_id TEXT NOT NULL,
    cseq INTEGER NOT NULL,
    path TEXT NOT NULL,
    instance TEXT,
    reg_id INTEGER,
    received TEXT,
    connection TEXT,
    user_agent TEXT,
    updated_at REAL NOT NULL,
    PRIMARY KEY (aor, identity)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS location_expires_at ON location (expires_at);
"""

_COLUMNS = (
    "aor, contact, expires_at, q, call_id, cseq, path, instance, reg_id, received, connection, user_agent, updated_at"
)

# The unary plus keeps SQLite from choosing the expires_at index for a
# lookup by AoR: the primary key narrows to a handful of rows, the expiry
# range could match millions.
_SELECT_AOR = f"SELECT identity, {_COLUMNS} FROM location WHERE aor = ? AND +expires_at > ?"
_SELECT_AOR_ALL = f"SELECT identity, {_COLUMNS} FROM location WHERE aor = ?"
_UPSERT = f"INSERT OR REPLACE INTO location (identity, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


def _row(binding: Binding, identity: str) -> tuple[Any, ...]:
    return (
        identity,
        binding.aor,
        binding.contact,
        binding.expires_at,
        binding.q,
        binding.call_id,
        binding.cseq,
        json.dumps(list(binding.path)),
        binding.instance,
        binding.reg_id,
        binding.received,
        binding.connection,
        binding.user_agent,
        binding.updated_at,
    )


def _binding(row: Sequence[Any]) -> Binding:
    return Binding(
        aor=row[1],
        contact=row[2],
        expires_at=row[3],
        q=row[4],
        call_id=row[5],
        cseq=row[6],
        path=tuple(json.loads(row[7])),
        instance=row[8],
        reg_id=row[9],
        received=row[10],
        connection=row[11],
        user_agent=row[12],
        updated_at=row[13],
    )


@implementer(ILocationStore)
class SQLiteLocationStore:
    """:class:`ILocationStore` in the SQLite file at ``path`` (created when missing).

    Bindings survive a restart: reopening the file finds them. Every
    ``purge_interval`` seconds the store purges expired bindings itself
    (``reactor.callLater``); :meth:`close` stops that and closes the file.
    ``busy_timeout`` (seconds) bounds the wait for another process's write.
    ``reactor`` provides IReactorTime; ``purge_interval=None`` turns the
    timer off.
    """

    name = "sqlite"

    def __init__(
        self,
        path: str,
        reactor: Any,
        purge_interval: float | None = 60.0,
        busy_timeout: float = 1.0,
    ) -> None:
        self.path = path
        self._reactor = reactor
        self._purge_interval = purge_interval
        # isolation_level=None: no implicit transactions; we issue BEGIN.
        self._db: sqlite3.Connection | None = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
        db = self._db
        db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        self._write(self._create_schema)
        self._purge_call: Any = None  # an IDelayedCall
        self._schedule_purge()

    def _create_schema(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"{self.path}: location schema version {version} is newer than {SCHEMA_VERSION}")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- plumbing

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the location store is closed")
        return self._db

    def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in one ``BEGIN IMMEDIATE`` transaction; roll back if it raises."""
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            result = work(db)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return result

    def _schedule_purge(self) -> None:
        if self._purge_interval is not None and self._db is not None:
            self._purge_call = self._reactor.callLater(self._purge_interval, self._scheduled_purge)

    def _scheduled_purge(self) -> None:
        self._purge_call = None
        try:
            removed = self._purge(self._reactor.seconds())
        except Exception:
            log.failure("Purging expired bindings from {path} failed", path=self.path)
        else:
            if removed:
                log.debug("Purged {removed} expired bindings from {path}", removed=removed, path=self.path)
        self._schedule_purge()

    # -- ILocationStore

    def get(self, aor: str, now: float) -> defer.Deferred[list[Binding]]:
        return defer.maybeDeferred(self._get, aor, now)

    def _get(self, aor: str, now: float) -> list[Binding]:
        rows = self._connection().execute(_SELECT_AOR, (aor, now)).fetchall()
        return ordered(_binding(row) for row in rows)

    def apply(
        self,
        aor: str,
        changes: Sequence[Change],
        now: float,
        max_contacts: int | None = None,
        evict_oldest: bool = False,
    ) -> defer.Deferred[list[Binding]]:
        def work(db: sqlite3.Connection) -> list[Binding]:
            stored = {row[0]: _binding(row) for row in db.execute(_SELECT_AOR_ALL, (aor,))}
            result = merge_changes(aor, stored, changes, now, max_contacts, evict_oldest)
            gone = [(aor, key) for key in stored if key not in result]
            if gone:
                db.executemany("DELETE FROM location WHERE aor = ? AND identity = ?", gone)
            changed = [_row(b, key) for key, b in result.items() if stored.get(key) != b]
            if changed:
                db.executemany(_UPSERT, changed)
            return ordered(result.values())

        return defer.maybeDeferred(self._write, work)

    def remove_all(self, aor: str, call_id: str, cseq: int, now: float) -> defer.Deferred[int]:
        def work(db: sqlite3.Connection) -> int:
            alive = [_binding(row) for row in db.execute(_SELECT_AOR, (aor, now))]
            for binding in alive:
                if binding.call_id == call_id and cseq <= binding.cseq:
                    raise StaleRequest(aor, binding.contact, call_id, binding.cseq, cseq)
            db.execute("DELETE FROM location WHERE aor = ?", (aor,))
            return len(alive)

        return defer.maybeDeferred(self._write, work)

    def purge(self, now: float) -> defer.Deferred[int]:
        return defer.maybeDeferred(self._purge, now)

    def _purge(self, now: float) -> int:
        return self._write(lambda db: db.execute("DELETE FROM location WHERE expires_at <= ?", (now,)).rowcount)

    def count(self, now: float) -> defer.Deferred[int]:
        return defer.maybeDeferred(self._count, now)

    def _count(self, now: float) -> int:
        row = self._connection().execute("SELECT COUNT(*) FROM location WHERE expires_at > ?", (now,)).fetchone()
        return int(row[0])

    def close(self) -> defer.Deferred[None]:
        """Cancel the purge timer and close the file; closing twice is harmless."""
        if self._purge_call is not None and self._purge_call.active():
            self._purge_call.cancel()
        self._purge_call = None
        if self._db is not None:
            self._db.close()
            self._db = None
        return defer.succeed(None)
