"""What the Redis location store adds to the store contract: sharing, atomicity, TTL, failures.

Runs against a real redis-server (tests/registrar/redis_server.py); the
contract itself is in test_store_contract.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet import defer
from zope.interface.verify import verifyObject

from sipgate_proxy.registrar.location import Binding, Change, ILocationStore, StaleRequest
from sipgate_proxy.registrar.redis import RedisLocationStore, RedisURL, StoreContention, parse_redis_url
from tests.registrar.redis_server import RedisServer, redis_store, unique_prefix, wait

AOR = "sip:alice@example.com"


def binding(contact: str, *, expires_at: float = 3600.0, call_id: str = "call-1", cseq: int = 1) -> Binding:
    return Binding(aor=AOR, contact=contact, expires_at=expires_at, call_id=call_id, cseq=cseq, updated_at=0.0)


def add(store: RedisLocationStore, *bindings: Binding, now: float = 0.0) -> list[Binding]:
    return wait(store.apply(AOR, [Change(b) for b in bindings], now))


@pytest.fixture
def pair(redis_server: RedisServer) -> Any:
    """Two stores (two "workers") on one server and one prefix."""
    prefix = unique_prefix()
    first, second = redis_store(redis_server.url, prefix), redis_store(redis_server.url, prefix)
    yield first, second
    wait(first.close())
    wait(second.close())


class Interfering(RedisLocationStore):
    """A store that lets ``other`` register a contact between its read and its MULTI.

    ``interfere`` says on how many attempts; ``attempts`` records each one.
    """

    def __init__(self, *args: Any, other: RedisLocationStore, interfere: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.other = other
        self.interfere = interfere
        self.attempts: list[int] = []

    def _read_done(self, key: str, attempt: int) -> defer.Deferred[Any] | None:
        self.attempts.append(attempt)
        if attempt >= self.interfere:
            return None
        contact = f"sip:alice@198.51.100.{attempt + 1}"
        return self.other.apply(AOR, [Change(binding(contact, call_id=f"other-{attempt}"))], 0.0)


def test_provides_interface(pair: Any) -> None:
    """RedisLocationStore is a complete ILocationStore."""
    assert verifyObject(ILocationStore, pair[0])


def test_two_stores_on_one_server_see_each_others_bindings(pair: Any) -> None:
    """A binding written through one store is read, counted and removed through another."""
    first, second = pair
    b = binding("sip:alice@192.0.2.1")
    add(first, b)
    assert wait(second.get(AOR, 1.0)) == [b]
    assert wait(second.count(1.0)) == 1
    assert wait(second.remove_all(AOR, "call-1", 2, 1.0)) == 1
    assert wait(first.get(AOR, 1.0)) == []


def test_a_write_between_read_and_exec_is_retried_not_lost(redis_server: RedisServer, pair: Any) -> None:
    """When another store changes the AoR during a transaction, EXEC fails and the merge is redone: both land."""
    _, other = pair
    store = Interfering(redis_server.url, other._reactor, other.prefix, other=other, interfere=1)
    try:
        result = add(store, binding("sip:alice@192.0.2.1", call_id="mine"))
        assert store.attempts == [0, 1]
        expected = ["sip:alice@192.0.2.1", "sip:alice@198.51.100.1"]
        assert sorted(b.contact for b in result) == expected
        assert sorted(b.contact for b in wait(other.get(AOR, 0.0))) == expected
    finally:
        wait(store.close())


def test_endless_interference_gives_up_and_writes_nothing(redis_server: RedisServer, pair: Any) -> None:
    """After max_retries lost transactions apply fails with StoreContention and its own change is absent."""
    _, other = pair
    store = Interfering(redis_server.url, other._reactor, other.prefix, other=other, interfere=3, max_retries=3)
    try:
        with pytest.raises(StoreContention):
            add(store, binding("sip:alice@192.0.2.1", call_id="mine"))
        assert store.attempts == [0, 1, 2]
        contacts = sorted(b.contact for b in wait(other.get(AOR, 0.0)))
        assert contacts == [f"sip:alice@198.51.100.{n}" for n in (1, 2, 3)]
    finally:
        wait(store.close())


def test_concurrent_applies_from_two_stores_all_land(pair: Any) -> None:
    """Twenty REGISTERs of distinct contacts in flight at once from two stores: none is lost."""
    first, second = pair
    pending = [
        (first if n % 2 else second).apply(AOR, [Change(binding(f"sip:alice@192.0.2.{n}", call_id=f"c{n}"))], 0.0)
        for n in range(1, 21)
    ]
    wait(defer.gatherResults(pending, consumeErrors=True), timeout=20)
    assert len(wait(first.get(AOR, 0.0))) == 20
    assert wait(second.count(0.0)) == 20


def test_key_is_one_hash_per_aor_with_ttl_of_latest_expiry(pair: Any) -> None:
    """The AoR is a hash identity -> JSON binding; its PTTL is the latest expiry minus now."""
    store, _ = pair
    add(
        store,
        binding("sip:alice@192.0.2.1", expires_at=130.0),
        binding("sip:alice@192.0.2.2", expires_at=70.0),
        now=30.0,
    )
    key = store.prefix + AOR
    raw = wait(store._redis.hgetall(key))
    assert sorted(raw) == ["sip:alice@192.0.2.1", "sip:alice@192.0.2.2"]
    assert json.loads(raw["sip:alice@192.0.2.1"])["expires_at"] == 130.0
    ttl = int(wait(store._redis.execute_command("PTTL", key)))
    assert 99_000 < ttl <= 100_000  # 130 - now (30): reactor time, not Redis time
    add(store, binding("sip:alice@192.0.2.2", expires_at=500.0, cseq=2), now=30.0)
    assert 469_000 < int(wait(store._redis.execute_command("PTTL", key))) <= 470_000


def test_emptied_aor_deletes_its_key(pair: Any) -> None:
    """Removing the last binding (or Contact: *) deletes the key instead of leaving an empty hash."""
    store, _ = pair
    key = store.prefix + AOR
    add(store, binding("sip:alice@192.0.2.1"))
    wait(store.apply(AOR, [Change(binding("sip:alice@192.0.2.1", cseq=2), remove=True)], 0.0))
    assert int(wait(store._redis.exists(key))) == 0
    add(store, binding("sip:alice@192.0.2.1", cseq=3))
    assert wait(store.remove_all(AOR, "call-1", 4, 0.0)) == 1
    assert int(wait(store._redis.exists(key))) == 0


def test_apply_drops_expired_fields_of_the_aor(pair: Any) -> None:
    """A write removes the AoR's expired fields, so a live AoR does not keep dead bindings."""
    store, _ = pair
    add(store, binding("sip:alice@192.0.2.1", expires_at=10.0))
    add(store, binding("sip:alice@192.0.2.2", call_id="c2", expires_at=100.0), now=20.0)
    assert list(wait(store._redis.hgetall(store.prefix + AOR))) == ["sip:alice@192.0.2.2"]


def test_failed_requests_give_their_connection_back(redis_server: RedisServer) -> None:
    """A StaleRequest inside a transaction releases its connection: more failures than the pool holds, then success."""
    store = redis_store(redis_server.url, pool_size=2)
    try:
        add(store, binding("sip:alice@192.0.2.1", cseq=5))
        for _ in range(5):
            with pytest.raises(StaleRequest):
                add(store, binding("sip:alice@192.0.2.1", cseq=4))
            with pytest.raises(StaleRequest):
                wait(store.remove_all(AOR, "call-1", 5, 0.0))
        assert len(add(store, binding("sip:alice@192.0.2.1", cseq=6))) == 1
    finally:
        wait(store.close())


def test_purge_and_count_see_only_their_prefix(redis_server: RedisServer, pair: Any) -> None:
    """Stores with other prefixes on the same server do not count or purge each other's keys."""
    store, _ = pair
    stranger = redis_store(redis_server.url, store.prefix.rstrip(":") + "[x]:")
    try:
        add(stranger, binding("sip:alice@192.0.2.9", expires_at=10.0))
        add(store, binding("sip:alice@192.0.2.1", expires_at=10.0))
        assert wait(store.count(0.0)) == 1
        assert wait(store.purge(20.0)) == 1
        assert wait(stranger.count(0.0)) == 1
    finally:
        wait(stranger.close())


def test_unreachable_redis_fails_within_the_timeout() -> None:
    """With nothing listening, an operation errbacks after `timeout` instead of waiting forever."""
    from twisted.internet import reactor

    from tests.registrar.redis_server import _free_tcp_port

    store = RedisLocationStore(f"redis://127.0.0.1:{_free_tcp_port()}/0", reactor, unique_prefix(), timeout=0.3)
    try:
        with pytest.raises(defer.TimeoutError):
            wait(store.get(AOR, 0.0))
    finally:
        wait(store.close())


def test_close_twice_is_harmless_and_later_use_fails(redis_server: RedisServer) -> None:
    """close may be called again; an operation after close errbacks at once."""
    store = redis_store(redis_server.url)
    wait(store.close())
    wait(store.close())
    with pytest.raises(RuntimeError):
        wait(store.get(AOR, 0.0))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", RedisURL("127.0.0.1", 6379, 0)),
        ("redis://redis.internal", RedisURL("redis.internal", 6379, 0)),
        ("redis://:s%40cret@[::1]:7000/3", RedisURL("::1", 7000, 3, "s@cret")),
    ],
)
def test_parse_redis_url(url: str, expected: RedisURL) -> None:
    """redis:// URLs give host, port (6379), database (0) and an optional password."""
    assert parse_redis_url(url) == expected


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:6379/0", "redis://", "redis://h:99999/0", "redis://h:6379/x", "redis://h/0?ssl=1", "h:6379"],
)
def test_parse_redis_url_rejects(url: str) -> None:
    """Other schemes, no host, bad ports, non-numeric databases and queries are refused."""
    with pytest.raises(ValueError):
        parse_redis_url(url)


def test_router_config_selects_and_validates_the_redis_store(redis_server: RedisServer) -> None:
    """store = "redis" builds a RedisLocationStore from routing.registrar.redis; a bad or missing URL names its key."""
    from twisted.internet import reactor

    from sipgate_proxy.config import ConfigError
    from sipgate_proxy.registrar.router import RegistrarRouterFactory, parse_registrar_config

    config = {"domains": ["example.com"], "store": "redis", "redis": redis_server.url}
    assert parse_registrar_config(config)[1:] == ("redis", redis_server.url)
    router = RegistrarRouterFactory().make_router(config, reactor)
    store = router.registrar.store
    try:
        assert isinstance(store, RedisLocationStore)
        assert store.url == parse_redis_url(redis_server.url)
    finally:
        wait(store.close())
    bad: list[tuple[dict[str, Any], str]] = [
        ({"domains": ["x"], "store": "redis"}, "routing.registrar.store"),
        ({"domains": ["x"], "store": "redis", "redis": "http://h/0"}, "routing.registrar.redis"),
        ({"domains": ["x"], "store": "redis", "redis": 6379}, "routing.registrar.redis"),
    ]
    for table, key in bad:
        with pytest.raises(ConfigError) as error:
            parse_registrar_config(table)
        assert error.value.key == key
