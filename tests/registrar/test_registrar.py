"""REGISTER processing and the registrar router, on the in-memory store."""

from __future__ import annotations

from typing import Any

import pytest
from zope.interface.verify import verifyObject

from sipgate_proxy.config import ConfigError
from sipgate_proxy.interfaces import IRouter, IRouterFactory
from sipgate_proxy.registrar.memory import MemoryLocationStore
from sipgate_proxy.registrar.registrar import Registrar, RegistrarSettings
from sipgate_proxy.registrar.router import RegistrarRouter, RegistrarRouterFactory, parse_registrar_config
from sipgate_proxy.routing.decisions import Answer, Forward, RequestContext
from sipgate_proxy.sip.message import Request
from sipgate_proxy.sip.parser import parse_datagram

KNOWN = frozenset({"sip:alice@example.com"})
SETTINGS = RegistrarSettings(domains=frozenset({"example.com"}), min_expires=60, max_expires=3600)


def register(
    contacts: str | None = "<sip:alice@192.0.2.10:5062>",
    expires: str | None = None,
    call_id: str = "reg-1",
    cseq: int = 1,
    user: str = "alice",
    extra: str = "",
) -> Request:
    lines = [
        "REGISTER sip:example.com SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKr",
        f"From: <sip:{user}@example.com>;tag=1",
        f"To: <sip:{user}@example.com>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
    ]
    if contacts is not None:
        lines.append(f"Contact: {contacts}")
    if expires is not None:
        lines.append(f"Expires: {expires}")
    data = "\r\n".join(lines) + "\r\n" + extra + "Content-Length: 0\r\n\r\n"
    message = parse_datagram(data.encode())
    assert isinstance(message, Request)
    return message


def invite(user: str = "alice") -> Request:
    message = parse_datagram(
        f"INVITE sip:{user}@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.20;branch=z9hG4bKi\r\n"
        f"From: <sip:bob@example.com>;tag=2\r\nTo: <sip:{user}@example.com>\r\nCall-ID: call\r\n"
        "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n".encode()
    )
    assert isinstance(message, Request)
    return message


def ctx(now: float = 1000.0) -> RequestContext:
    return RequestContext("udp", "198.51.100.7", 40000, now)


def result(d: Any) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the Deferred did not fire"
    return out[0]


def contacts_of(answer: Answer) -> list[str]:
    return [value for name, value in answer.headers if name == "Contact"]


def test_register_adds_and_lists_the_binding_with_its_expiry() -> None:
    """A REGISTER binds its Contact; the 200 lists every binding with the seconds left."""
    registrar = Registrar(MemoryLocationStore(), SETTINGS)
    answer = result(registrar.register(register(expires="600"), ctx()))
    assert answer.status == 200
    assert contacts_of(answer) == ["<sip:alice@192.0.2.10:5062>;expires=600"]
    assert any(name == "Date" for name, _ in answer.headers)
    later = result(registrar.register(register(contacts=None, cseq=2), ctx(1100.0)))
    assert contacts_of(later) == ["<sip:alice@192.0.2.10:5062>;expires=500"]


def test_contact_expires_parameter_beats_the_header_and_max_is_enforced() -> None:
    """Per-contact expires wins over Expires; values above max_expires are cut to it."""
    registrar = Registrar(MemoryLocationStore(), SETTINGS)
    answer = result(registrar.register(register("<sip:alice@192.0.2.10>;expires=99999", expires="100"), ctx()))
    assert contacts_of(answer) == ["<sip:alice@192.0.2.10>;expires=3600"]


def test_too_brief_interval_gets_423_with_min_expires() -> None:
    """An expiry below min_expires (but not 0) is refused with 423 and Min-Expires."""
    registrar = Registrar(MemoryLocationStore(), SETTINGS)
    answer = result(registrar.register(register(expires="30"), ctx()))
    assert answer.status == 423 and ("Min-Expires", "60") in answer.headers


def test_expires_zero_removes_and_star_removes_all() -> None:
    """Expires 0 removes one binding; Contact * with Expires 0 removes them all."""
    registrar = Registrar(MemoryLocationStore(), SETTINGS)
    result(registrar.register(register("<sip:a@192.0.2.1>, <sip:b@192.0.2.2>"), ctx()))
    answer = result(registrar.register(register("<sip:a@192.0.2.1>;expires=0", cseq=2), ctx()))
    assert [c.split(";")[0] for c in contacts_of(answer)] == ["<sip:b@192.0.2.2>"]
    answer = result(registrar.register(register("*", expires="0", cseq=3), ctx()))
    assert answer.status == 200 and contacts_of(answer) == []
    bad = result(registrar.register(register("*", expires="60", cseq=4), ctx()))
    assert bad.status == 400


def test_out_of_order_cseq_is_refused() -> None:
    """A REGISTER of the same Call-ID with a CSeq not above the stored one changes nothing (500)."""
    registrar = Registrar(MemoryLocationStore(), SETTINGS)
    result(registrar.register(register(cseq=5), ctx()))
    answer = result(registrar.register(register("<sip:alice@192.0.2.10:5062>;expires=0", cseq=4), ctx()))
    assert answer.status == 500 and "CSeq" in (answer.reason or "")


def test_max_contacts_rejects_or_evicts() -> None:
    """Over max_contacts: 403, or with evict_oldest the oldest binding makes room."""
    limited = RegistrarSettings(domains=frozenset({"example.com"}), max_contacts=1)
    registrar = Registrar(MemoryLocationStore(), limited)
    result(registrar.register(register("<sip:a@192.0.2.1>", call_id="x"), ctx()))
    answer = result(registrar.register(register("<sip:b@192.0.2.2>", call_id="y"), ctx(1001.0)))
    assert answer.status == 403
    evicting = RegistrarSettings(domains=frozenset({"example.com"}), max_contacts=1, evict_oldest=True)
    registrar = Registrar(MemoryLocationStore(), evicting)
    result(registrar.register(register("<sip:a@192.0.2.1>", call_id="x"), ctx()))
    answer = result(registrar.register(register("<sip:b@192.0.2.2>", call_id="y"), ctx(1001.0)))
    assert [c.split(";")[0] for c in contacts_of(answer)] == ["<sip:b@192.0.2.2>"]


def test_instance_id_replaces_the_devices_own_binding() -> None:
    """With +sip.instance, a device registering from a new address replaces its old binding (RFC 5626)."""
    registrar = Registrar(MemoryLocationStore(), SETTINGS)
    inst = ';+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";reg-id=1'
    result(registrar.register(register(f"<sip:alice@192.0.2.1>{inst}", call_id="a"), ctx()))
    answer = result(registrar.register(register(f"<sip:alice@192.0.2.99>{inst}", call_id="b"), ctx(1001.0)))
    assert [c.split(";")[0] for c in contacts_of(answer)] == ["<sip:alice@192.0.2.99>"]


def test_non_sip_to_is_rejected() -> None:
    """A REGISTER whose To is not a sip: URI with a user gets 400 (RFC 4475 unksm2)."""
    registrar = Registrar(MemoryLocationStore(), SETTINGS)
    request = register()
    request.set("to", "<tel:+4930123>")
    assert result(registrar.register(request, ctx())).status == 400


def test_router_registers_then_routes_calls_by_q_groups_to_the_source_address() -> None:
    """REGISTER is answered by the router; an INVITE to the AoR forwards to the contacts grouped by q,
    each sent to the address its REGISTER came from."""
    router = RegistrarRouter(
        Registrar(MemoryLocationStore(), SETTINGS), known_users=frozenset({"sip:alice@example.com"})
    )
    verifyObject(IRouter, router)
    contacts = "<sip:alice@10.0.0.5:5060>;q=0.5, <sip:alice@10.0.0.6:5060>;q=1.0, <sip:alice@10.0.0.7:5060>;q=1.0"
    answer = result(router.route(register(contacts), ctx()))
    assert answer.status == 200
    forward = result(router.route(invite(), ctx(1001.0)))
    assert isinstance(forward, Forward) and forward.mode == "grouped"
    groups = sorted((t.group, t.uri) for t in forward.targets)
    assert groups == [
        (0, "sip:alice@10.0.0.6:5060"),
        (0, "sip:alice@10.0.0.7:5060"),
        (1, "sip:alice@10.0.0.5:5060"),
    ]
    # registered from another host than the contacts name: NAT, reach them where the REGISTER came from
    assert {t.next_hop for t in forward.targets} == {"sip:198.51.100.7:40000;transport=udp"}


def test_router_reaches_a_device_at_its_contact_when_it_registered_from_that_host() -> None:
    """No NAT (the REGISTER came from the Contact's host): the call goes to the Contact itself."""
    router = RegistrarRouter(Registrar(MemoryLocationStore(), SETTINGS), known_users=KNOWN)
    same_host = RequestContext("udp", "10.0.0.6", 40000, 1000.0)
    result(router.route(register("<sip:alice@10.0.0.6:5070>"), same_host))
    forward = result(router.route(invite(), ctx(1001.0)))
    assert [(t.uri, t.next_hop) for t in forward.targets] == [("sip:alice@10.0.0.6:5070", None)]
    tcp = RequestContext("tcp", "10.0.0.6", 40001, 1000.0)
    result(router.route(register("<sip:alice@10.0.0.6:5070>", call_id="tcp", cseq=2), tcp))
    forward = result(router.route(invite(), ctx(1001.0)))
    # over TCP the connection it registered on is used
    assert [(t.next_hop) for t in forward.targets] == ["sip:10.0.0.6:40001;transport=tcp"]


def test_router_unknown_user_404_known_user_480_and_foreign_domains_pass() -> None:
    """No binding: 404 for users nobody knows, 480 for known ones; other domains go to the next router."""
    router = RegistrarRouter(
        Registrar(MemoryLocationStore(), SETTINGS), known_users=frozenset({"sip:alice@example.com"})
    )
    assert result(router.route(invite("alice"), ctx())).status == 480
    assert result(router.route(invite("mallory"), ctx())).status == 404
    foreign = parse_datagram(
        b"INVITE sip:x@elsewhere.net SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKf\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:x@elsewhere.net>\r\nCall-ID: f\r\nCSeq: 1 INVITE\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert router.route(foreign, ctx()) is None


def test_router_uses_path_as_route() -> None:
    """A binding registered with Path is reached through it (RFC 3327)."""
    router = RegistrarRouter(Registrar(MemoryLocationStore(), SETTINGS))
    request = register(extra="Path: <sip:edge.example.com;lr>\r\nSupported: path\r\n")
    answer = result(router.route(request, ctx()))
    assert ("Path", "<sip:edge.example.com;lr>") in answer.headers
    forward = result(router.route(invite(), ctx(1001.0)))
    (target,) = forward.targets
    assert target.headers == (("Route", "<sip:edge.example.com;lr>"),) and target.next_hop is None


def test_factory_builds_a_router_and_config_errors_name_keys(tmp_path: Any) -> None:
    """The plugin factory makes a working router; bad tables name their keys."""
    factory = RegistrarRouterFactory()
    verifyObject(IRouterFactory, factory)
    router = factory.make_router({"domains": ["example.com"], "store": "memory"}, None)
    assert isinstance(router, RegistrarRouter)
    for table, key in [
        ({}, "routing.registrar.domains"),
        ({"domains": ["x"], "store": "redis"}, "routing.registrar.store"),
        ({"domains": ["x"], "min_expires": 0}, "routing.registrar.min_expires"),
        ({"domains": ["x"], "colour": 1}, "routing.registrar.colour"),
    ]:
        with pytest.raises(ConfigError) as error:
            parse_registrar_config(table)
        assert error.value.key == key
