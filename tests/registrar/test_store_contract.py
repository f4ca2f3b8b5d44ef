"""The contract every ILocationStore keeps, run against each implementation."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from sipgate_proxy.registrar.location import (
    Binding,
    Change,
    ILocationStore,
    StaleRequest,
    TooManyContacts,
    contact_key,
)
from sipgate_proxy.registrar.memory import MemoryLocationStore
from sipgate_proxy.registrar.sqlite import SQLiteLocationStore
from tests.registrar.redis_server import SyncStore, redis_store

T = TypeVar("T")

AOR = "sip:alice@example.com"
BOB = "sip:bob@example.com"


def result_of(d: defer.Deferred[T]) -> T:
    """The result of an already-fired Deferred; a Failure is raised."""
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]  # type: ignore[no-any-return]


def make_memory(tmp_path: Path, clock: Clock) -> Any:
    return MemoryLocationStore()


def make_sqlite(tmp_path: Path, clock: Clock) -> Any:
    return SQLiteLocationStore(str(tmp_path / "location.sqlite"), clock)


def make_redis(tmp_path: Path, clock: Clock) -> Any:
    return SyncStore(redis_store())  # a real redis-server; fails in CI, skips elsewhere, when missing


STORE_FACTORIES: dict[str, Callable[[Path, Clock], Any]] = {
    "memory": make_memory,
    "sqlite": make_sqlite,
    "redis": make_redis,
}


@pytest.fixture(params=sorted(STORE_FACTORIES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    clock = Clock()
    instance = STORE_FACTORIES[request.param](tmp_path, clock)
    yield instance
    result_of(instance.close())


def binding(
    contact: str = "sip:alice@192.0.2.1:5060",
    *,
    aor: str = AOR,
    expires_at: float = 3600.0,
    call_id: str = "call-1",
    cseq: int = 1,
    updated_at: float = 0.0,
    **fields: Any,
) -> Binding:
    return Binding(
        aor=aor,
        contact=contact,
        expires_at=expires_at,
        call_id=call_id,
        cseq=cseq,
        updated_at=updated_at,
        **fields,
    )


def add(store: Any, *bindings: Binding, now: float = 0.0, **kwargs: Any) -> list[Binding]:
    aor = bindings[0].aor
    return result_of(store.apply(aor, [Change(b) for b in bindings], now, **kwargs))  # type: ignore[no-any-return]


def contacts(bindings: list[Binding]) -> list[str]:
    return [b.contact for b in bindings]


def test_provides_interface(store: Any) -> None:
    """Each store is a complete ILocationStore."""
    assert verifyObject(ILocationStore, store)


def test_empty_aor_has_no_bindings(store: Any) -> None:
    """An AoR never registered has an empty list, not an error."""
    assert result_of(store.get(AOR, 0.0)) == []
    assert result_of(store.count(0.0)) == 0


def test_add_then_get_returns_the_binding(store: Any) -> None:
    """apply returns the AoR's bindings afterwards, and get finds the same binding."""
    b = binding()
    assert add(store, b) == [b]
    assert result_of(store.get(AOR, 10.0)) == [b]


def test_refresh_replaces_the_binding_of_the_same_contact(store: Any) -> None:
    """A re-REGISTER of the same contact (higher CSeq) replaces it: new expiry, one binding."""
    add(store, binding(cseq=1, expires_at=100.0))
    fresh = binding(cseq=2, expires_at=200.0, updated_at=50.0)
    assert add(store, fresh, now=50.0) == [fresh]
    assert result_of(store.get(AOR, 150.0)) == [fresh]


def test_contact_identity_follows_uri_equality(store: Any) -> None:
    """Contacts equal per RFC 3261 19.1.4 (host case, unescaped user, extra params) are one binding."""
    add(store, binding("sip:alice@Host.Example.com:5070;ob", cseq=1))
    same = binding("sip:%61lice@host.example.COM:5070", cseq=2)
    assert add(store, same) == [same]


def test_contacts_differing_in_port_or_transport_are_separate(store: Any) -> None:
    """Port (absent is not 5060), user and transport make contacts distinct bindings."""
    uris = [
        "sip:alice@192.0.2.1",
        "sip:alice@192.0.2.1:5060",
        "sip:alice@192.0.2.1:5060;transport=tcp",
        "sip:alice2@192.0.2.1:5060",
    ]
    result = add(store, *(binding(u) for u in uris))
    assert sorted(contacts(result)) == sorted(uris)


def test_contact_key_normalises_ipv6_and_keeps_strict_params() -> None:
    """contact_key compresses IPv6 hosts and keeps transport, dropping other parameters."""
    assert contact_key("sip:a@[2001:DB8:0::1]:5060;ob;Transport=TCP") == "sip:a@[2001:db8::1]:5060;transport=tcp"
    assert contact_key("sip:a@[2001:db8::1]:5060;transport=tcp;lr") == "sip:a@[2001:db8::1]:5060;transport=tcp"


def test_remove_change_deletes_the_matching_binding(store: Any) -> None:
    """A Change with remove=True deletes the binding of the same identity and leaves the others."""
    a, b = binding("sip:alice@192.0.2.1"), binding("sip:alice@192.0.2.2")
    add(store, a, b)
    removal = Change(binding("sip:alice@192.0.2.1", cseq=2, expires_at=0.0), remove=True)
    assert result_of(store.apply(AOR, [removal], 1.0)) == [b]
    assert result_of(store.get(AOR, 1.0)) == [b]


def test_remove_of_unknown_binding_is_a_no_op(store: Any) -> None:
    """Removing a contact that is not bound changes nothing and is not an error."""
    b = add(store, binding())[0]
    removal = Change(binding("sip:alice@198.51.100.7", cseq=5), remove=True)
    assert result_of(store.apply(AOR, [removal], 1.0)) == [b]


def test_add_with_expiry_not_after_now_is_a_removal(store: Any) -> None:
    """An added binding already expired at `now` removes the stored one instead of being kept."""
    add(store, binding(cseq=1))
    assert add(store, binding(cseq=2, expires_at=10.0), now=10.0) == []
    assert result_of(store.count(10.0)) == 0


def test_expiry_arithmetic_at_given_now(store: Any) -> None:
    """A binding is alive while now < expires_at and gone from get and count at expires_at."""
    add(store, binding(expires_at=100.0))
    assert len(result_of(store.get(AOR, 99.999))) == 1
    assert result_of(store.count(99.999)) == 1
    assert result_of(store.get(AOR, 100.0)) == []
    assert result_of(store.count(100.0)) == 0
    assert binding(expires_at=100.0).expires_in(40.5) == 59
    assert binding(expires_at=100.0).expires_in(140.0) == 0


def test_ordering_by_q_then_most_recently_updated(store: Any) -> None:
    """get orders bindings by q descending, then the most recently updated first."""
    low = binding("sip:a@192.0.2.1", q=0.1, updated_at=9.0)
    high_old = binding("sip:a@192.0.2.2", q=0.9, updated_at=1.0)
    high_new = binding("sip:a@192.0.2.3", q=0.9, updated_at=5.0, call_id="c2")
    default = binding("sip:a@192.0.2.4", updated_at=0.0, call_id="c3")
    add(store, low, high_old, high_new, default, now=9.0)
    assert result_of(store.get(AOR, 10.0)) == [default, high_new, high_old, low]


def test_q_out_of_range_is_rejected() -> None:
    """A Binding with q outside 0..1 cannot be made."""
    with pytest.raises(ValueError):
        binding(q=1.5)


def test_instance_and_reg_id_identify_a_device_across_contacts(store: Any) -> None:
    """With +sip.instance, a re-registration from a new contact replaces the device's binding (RFC 5626)."""
    inst = "<urn:uuid:00000000-0000-1000-8000-000a95a0e128>"
    add(store, binding("sip:alice@192.0.2.1:5060", instance=inst, reg_id=1, cseq=1))
    moved = binding("sip:alice@198.51.100.9:40000", instance=inst, reg_id=1, cseq=2)
    assert add(store, moved) == [moved]


def test_other_reg_id_of_same_instance_is_another_binding(store: Any) -> None:
    """One instance with two reg-ids (two flows) holds two bindings."""
    inst = "<urn:uuid:00000000-0000-1000-8000-000a95a0e128>"
    one = binding("sip:alice@192.0.2.1:5060", instance=inst, reg_id=1)
    two = binding("sip:alice@192.0.2.1:5062", instance=inst, reg_id=2)
    assert sorted(contacts(add(store, one, two))) == sorted([one.contact, two.contact])


def test_instance_binding_is_distinct_from_plain_contact(store: Any) -> None:
    """A binding with an instance does not replace a plain binding of the same contact URI."""
    plain = binding("sip:alice@192.0.2.1:5060")
    device = binding("sip:alice@192.0.2.1:5060", instance="<urn:uuid:1>", reg_id=1, call_id="c2")
    assert len(add(store, plain, device)) == 2


def test_same_call_id_with_lower_or_equal_cseq_is_stale(store: Any) -> None:
    """Same Call-ID and CSeq <= stored raises StaleRequest and changes nothing (RFC 3261 10.3 step 7)."""
    stored = add(store, binding(cseq=5, expires_at=100.0))
    for cseq in (5, 4):
        with pytest.raises(StaleRequest) as info:
            add(store, binding(cseq=cseq, expires_at=900.0), binding("sip:alice@192.0.2.99", cseq=cseq))
        assert info.value.stored_cseq == 5
        assert info.value.cseq == cseq
    assert result_of(store.get(AOR, 0.0)) == stored


def test_stale_removal_is_rejected_too(store: Any) -> None:
    """A removal with a stale CSeq of the same Call-ID also aborts."""
    add(store, binding(cseq=5))
    with pytest.raises(StaleRequest):
        result_of(store.apply(AOR, [Change(binding(cseq=3), remove=True)], 0.0))
    assert len(result_of(store.get(AOR, 0.0))) == 1


def test_other_call_id_may_have_any_cseq(store: Any) -> None:
    """A different Call-ID replaces the binding whatever its CSeq (a rebooted phone)."""
    add(store, binding(cseq=50))
    newer = binding(call_id="call-2", cseq=1, updated_at=3.0)
    assert add(store, newer, now=3.0) == [newer]


def test_duplicate_contact_in_one_request_is_not_stale_against_itself(store: Any) -> None:
    """Two changes for one contact in one REGISTER: the later wins, no StaleRequest."""
    first = binding(cseq=1, expires_at=100.0)
    second = binding(cseq=1, expires_at=200.0)
    assert add(store, first, second) == [second]


def test_expired_binding_does_not_make_a_request_stale(store: Any) -> None:
    """A stored binding that has expired counts as absent for the CSeq check."""
    add(store, binding(cseq=9, expires_at=10.0))
    again = binding(cseq=1, expires_at=100.0, updated_at=20.0)
    assert add(store, again, now=20.0) == [again]


def test_max_contacts_rejects_growth(store: Any) -> None:
    """Beyond max_contacts apply raises TooManyContacts and keeps the stored bindings."""
    stored = add(store, binding("sip:a@192.0.2.1"), binding("sip:a@192.0.2.2"), max_contacts=2)
    with pytest.raises(TooManyContacts) as info:
        add(store, binding("sip:a@192.0.2.3", call_id="c2"), max_contacts=2)
    assert info.value.limit == 2
    assert sorted(contacts(result_of(store.get(AOR, 0.0)))) == sorted(contacts(stored))


def test_max_contacts_allows_refresh_when_full(store: Any) -> None:
    """A full AoR can refresh its bindings: the count does not grow."""
    add(store, binding("sip:a@192.0.2.1"), binding("sip:a@192.0.2.2"), max_contacts=2)
    result = add(store, binding("sip:a@192.0.2.1", cseq=2, expires_at=7200.0), max_contacts=2)
    assert len(result) == 2


def test_max_contacts_counts_only_alive_bindings(store: Any) -> None:
    """Expired bindings do not count toward max_contacts."""
    add(store, binding("sip:a@192.0.2.1", expires_at=10.0), binding("sip:a@192.0.2.2", expires_at=10.0))
    result = add(store, binding("sip:a@192.0.2.3", call_id="c2", expires_at=100.0), now=20.0, max_contacts=1)
    assert contacts(result) == ["sip:a@192.0.2.3"]


def test_max_contacts_evicts_the_oldest_updated(store: Any) -> None:
    """With evict_oldest, the least recently updated bindings make room for the new one."""
    add(store, binding("sip:a@192.0.2.1", updated_at=1.0), binding("sip:a@192.0.2.2", updated_at=0.0), now=1.0)
    add(store, binding("sip:a@192.0.2.3", updated_at=2.0, call_id="c2"), now=2.0)
    newest = binding("sip:a@192.0.2.4", updated_at=3.0, call_id="c3")
    result = add(store, newest, now=3.0, max_contacts=2, evict_oldest=True)
    assert sorted(contacts(result)) == ["sip:a@192.0.2.3", "sip:a@192.0.2.4"]
    assert sorted(contacts(result_of(store.get(AOR, 3.0)))) == ["sip:a@192.0.2.3", "sip:a@192.0.2.4"]


def test_remove_all_removes_every_binding(store: Any) -> None:
    """Contact: * removes all of the AoR's bindings (other Call-IDs, or lower CSeq) and counts them."""
    add(store, binding("sip:a@192.0.2.1", call_id="x", cseq=7), binding("sip:a@192.0.2.2", call_id="y", cseq=3))
    assert result_of(store.remove_all(AOR, "y", 4, 0.0)) == 2
    assert result_of(store.get(AOR, 0.0)) == []
    assert result_of(store.count(0.0)) == 0


def test_remove_all_with_stale_cseq_removes_nothing(store: Any) -> None:
    """Contact: * whose CSeq is not above a binding's of the same Call-ID aborts: StaleRequest, nothing removed."""
    add(store, binding("sip:a@192.0.2.1", call_id="x", cseq=7), binding("sip:a@192.0.2.2", call_id="y", cseq=3))
    with pytest.raises(StaleRequest):
        result_of(store.remove_all(AOR, "x", 7, 0.0))
    assert len(result_of(store.get(AOR, 0.0))) == 2


def test_remove_all_counts_only_alive_bindings(store: Any) -> None:
    """remove_all reports alive bindings removed; an expired one is not counted nor stale."""
    add(store, binding("sip:a@192.0.2.1", expires_at=10.0, cseq=9), binding("sip:a@192.0.2.2", expires_at=100.0))
    assert result_of(store.remove_all(AOR, "call-1", 5, 20.0)) == 1
    assert result_of(store.remove_all(AOR, "call-1", 6, 20.0)) == 0


def test_purge_deletes_expired_and_count_counts_alive(store: Any) -> None:
    """purge removes exactly the bindings expired at now; count counts alive bindings of all AoRs."""
    add(store, binding("sip:a@192.0.2.1", expires_at=10.0), binding("sip:a@192.0.2.2", expires_at=30.0))
    add(store, binding("sip:b@192.0.2.3", aor=BOB, expires_at=20.0))
    assert result_of(store.count(0.0)) == 3
    assert result_of(store.purge(20.0)) == 2
    assert result_of(store.count(0.0)) == 1
    assert result_of(store.purge(20.0)) == 0
    assert contacts(result_of(store.get(AOR, 0.0))) == ["sip:a@192.0.2.2"]
    assert result_of(store.get(BOB, 0.0)) == []


def test_all_fields_round_trip(store: Any) -> None:
    """Path, received, connection, instance, reg-id, user agent, q and times come back as stored."""
    b = binding(
        "sip:alice@10.0.0.5:5060;transport=tcp;ob",
        q=0.5,
        path=("<sip:edge1.example.net;lr>", "<sip:edge2.example.net;lr;ob>"),
        instance="<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>",
        reg_id=2,
        received="tcp:203.0.113.4:49152",
        connection="conn-17",
        user_agent="Téléphone/1.0",
        expires_at=1234.5,
        updated_at=34.25,
        cseq=99,
        call_id="a84b4c76e66710@pc33",
    )
    assert add(store, b, now=34.25) == [b]
    got = result_of(store.get(AOR, 34.25))
    assert got == [b]
    assert got[0].path == b.path
    assert isinstance(got[0].path, tuple)


def test_optional_fields_round_trip_as_none(store: Any) -> None:
    """Unset optional fields stay None and an empty Path stays an empty tuple."""
    b = binding()
    got = add(store, b)[0]
    assert (got.instance, got.reg_id, got.received, got.connection, got.user_agent) == (None,) * 5
    assert got.path == ()


def test_aors_are_independent(store: Any) -> None:
    """The same contact and Call-ID under two AoRs are two bindings; removing one leaves the other."""
    a = binding("sip:x@192.0.2.1", aor=AOR, cseq=5)
    b = binding("sip:x@192.0.2.1", aor=BOB, cseq=1)
    add(store, a)
    add(store, b)
    assert result_of(store.get(AOR, 0.0)) == [a]
    assert result_of(store.get(BOB, 0.0)) == [b]
    assert result_of(store.remove_all(BOB, "call-1", 2, 0.0)) == 1
    assert result_of(store.get(AOR, 0.0)) == [a]
    assert result_of(store.count(0.0)) == 1
