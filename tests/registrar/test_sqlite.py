"""What the SQLite location store adds to the contract: persistence, its purge timer, indexes, sharing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from sipgate_proxy.registrar.location import Change
from sipgate_proxy.registrar.sqlite import _SELECT_AOR, SQLiteLocationStore
from tests.registrar.test_store_contract import AOR, binding, result_of


def open_store(tmp_path: Path, clock: Clock | None = None, **kwargs: object) -> SQLiteLocationStore:
    return SQLiteLocationStore(str(tmp_path / "location.sqlite"), clock or Clock(), **kwargs)  # type: ignore[arg-type]


def test_bindings_survive_reopening_the_file(tmp_path: Path) -> None:
    """A store reopened on the same file finds the bindings, every field intact."""
    b = binding(path=("<sip:edge.example.net;lr>",), received="udp:203.0.113.4:5060", instance="<urn:uuid:1>", reg_id=1)
    store = open_store(tmp_path)
    result_of(store.apply(AOR, [Change(b)], 0.0))
    result_of(store.close())
    again = open_store(tmp_path)
    try:
        assert result_of(again.get(AOR, 1.0)) == [b]
        assert result_of(again.count(1.0)) == 1
    finally:
        result_of(again.close())


def test_file_is_in_wal_mode(tmp_path: Path) -> None:
    """The database uses WAL so that readers in other workers do not wait for a writer."""
    store = open_store(tmp_path)
    result_of(store.close())
    db = sqlite3.connect(tmp_path / "location.sqlite")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


def test_purge_deletes_expired_rows_from_the_file(tmp_path: Path) -> None:
    """purge removes the expired rows themselves, not only hides them."""
    store = open_store(tmp_path, purge_interval=None)
    result_of(
        store.apply(AOR, [Change(binding("sip:a@192.0.2.1", expires_at=10.0)), Change(binding("sip:a@192.0.2.2"))], 0)
    )
    assert result_of(store.purge(10.0)) == 1
    result_of(store.close())
    db = sqlite3.connect(tmp_path / "location.sqlite")
    try:
        assert db.execute("SELECT contact FROM location").fetchall() == [("sip:a@192.0.2.2",)]
    finally:
        db.close()


def test_store_purges_on_its_own_every_interval(tmp_path: Path) -> None:
    """The store purges expired rows every purge_interval seconds of the reactor's clock."""
    clock = Clock()
    store = open_store(tmp_path, clock, purge_interval=60.0)
    result_of(store.apply(AOR, [Change(binding(expires_at=90.0))], 0.0))
    result_of(store.apply("sip:bob@example.com", [Change(binding(aor="sip:bob@example.com", expires_at=150.0))], 0.0))
    clock.advance(60.0)
    assert result_of(store.count(0.0)) == 2  # nothing had expired at 60
    clock.advance(60.0)
    assert result_of(store.count(0.0)) == 1  # alice's expired at 90, purged at 120
    clock.advance(60.0)
    assert result_of(store.count(0.0)) == 0
    assert len(clock.getDelayedCalls()) == 1
    result_of(store.close())


def test_close_cancels_the_purge_timer(tmp_path: Path) -> None:
    """close() leaves no delayed call behind, and closing twice is harmless."""
    clock = Clock()
    store = open_store(tmp_path, clock)
    assert len(clock.getDelayedCalls()) == 1
    result_of(store.close())
    assert clock.getDelayedCalls() == []
    result_of(store.close())


def test_no_timer_when_purge_interval_is_none(tmp_path: Path) -> None:
    """purge_interval=None arms no timer."""
    clock = Clock()
    store = open_store(tmp_path, clock, purge_interval=None)
    assert clock.getDelayedCalls() == []
    result_of(store.close())


def test_operations_after_close_errback(tmp_path: Path) -> None:
    """A closed store answers with a failed Deferred, not an exception from the call."""
    store = open_store(tmp_path)
    result_of(store.close())
    d = store.get(AOR, 0.0)
    with pytest.raises(RuntimeError):
        result_of(d)


def test_two_stores_on_one_file_see_each_others_writes(tmp_path: Path) -> None:
    """Two workers opening the same file share registrations, and CSeq checks see the other's write."""
    one, two = open_store(tmp_path), open_store(tmp_path)
    try:
        b = binding(cseq=3)
        result_of(one.apply(AOR, [Change(b)], 0.0))
        assert result_of(two.get(AOR, 0.0)) == [b]
        refreshed = binding(cseq=4, expires_at=7200.0)
        assert result_of(two.apply(AOR, [Change(refreshed)], 0.0)) == [refreshed]
        assert result_of(one.get(AOR, 0.0)) == [refreshed]
    finally:
        result_of(one.close())
        result_of(two.close())


def test_failed_apply_leaves_no_transaction_open(tmp_path: Path) -> None:
    """After a rejected REGISTER the store still writes (the transaction was rolled back)."""
    store = open_store(tmp_path)
    result_of(store.apply(AOR, [Change(binding(cseq=5))], 0.0))
    with pytest.raises(Exception, match="CSeq"):
        result_of(store.apply(AOR, [Change(binding(cseq=5))], 0.0))
    result_of(store.apply(AOR, [Change(binding(cseq=6))], 0.0))
    assert result_of(store.get(AOR, 0.0))[0].cseq == 6
    result_of(store.close())


def _plan(db: sqlite3.Connection, sql: str, *args: object) -> str:
    return " / ".join(row[-1] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", args))


def test_lookup_uses_the_primary_key_among_many_bindings(tmp_path: Path) -> None:
    """With 20,000 bindings get reads by the AoR key (before and after ANALYZE), never a scan or the expiry
    index; purge and count use the expiry index. Plans, not timings: a keyed read stays sub-millisecond at 1M."""
    store = open_store(tmp_path)
    for i in range(20_000):
        aor = f"sip:user{i // 2}@example.com"
        result_of(store.apply(aor, [Change(binding(f"sip:u{i}@192.0.2.{i % 250}", aor=aor))], 0.0))
    assert result_of(store.count(0.0)) == 20_000
    assert len(result_of(store.get("sip:user7@example.com", 0.0))) == 2
    result_of(store.close())
    db = sqlite3.connect(tmp_path / "location.sqlite")
    try:
        for _ in ("no statistics", "analyzed"):
            plan = _plan(db, _SELECT_AOR, "sip:user7@example.com", 0.0)
            assert "PRIMARY KEY (aor=?)" in plan, plan
            assert "SCAN" not in plan, plan
            db.execute("ANALYZE")
        for sql in ("DELETE FROM location WHERE expires_at <= ?", "SELECT COUNT(*) FROM location WHERE expires_at > ?"):
            plan = _plan(db, sql, 0.0)
            assert "location_expires_at" in plan, plan
    finally:
        db.close()
