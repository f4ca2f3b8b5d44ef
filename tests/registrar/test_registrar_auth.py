"""Digest authentication in the registrar router: 401 for REGISTER, 407 for calls, no user enumeration."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest

from sipgate_proxy.config import RouterTable
from sipgate_proxy.registrar.router import RegistrarRouter, RegistrarRouterFactory
from sipgate_proxy.routing.decisions import Answer, Forward, RequestContext
from sipgate_proxy.sip.message import Request
from sipgate_proxy.sip.parser import parse_datagram

USERS = """
[[users]]
username = "alice"
realm = "example.com"
password = "wonderland"

[[users]]
username = "bob"
realm = "example.com"
password = "builder"
"""


@pytest.fixture
def router(tmp_path: Path) -> RegistrarRouter:
    (tmp_path / "users.toml").write_text(USERS)
    table = RouterTable(
        {"domains": ["example.com"], "store": "memory", "auth": {"users_file": "users.toml"}}, str(tmp_path)
    )
    made = RegistrarRouterFactory().make_router(table, None)
    assert isinstance(made, RegistrarRouter)
    return made


def message(method: str, user: str, from_user: str, extra: str = "", uri: str | None = None) -> Request:
    uri = uri or ("sip:example.com" if method == "REGISTER" else f"sip:{user}@example.com")
    data = (
        f"{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK{method}\r\n"
        f"From: <sip:{from_user}@example.com>;tag=1\r\nTo: <sip:{user}@example.com>\r\nCall-ID: c-{method}\r\n"
        f"CSeq: 1 {method}\r\nContact: <sip:{user}@192.0.2.10:5062>\r\n{extra}Content-Length: 0\r\n\r\n"
    )
    parsed = parse_datagram(data.encode())
    assert isinstance(parsed, Request)
    return parsed


def ctx(now: float = 5000.0) -> RequestContext:
    return RequestContext("udp", "192.0.2.10", 5062, now)


def result(value: Any) -> Any:
    if isinstance(value, Answer | Forward) or value is None:
        return value
    out: list[Any] = []
    value.addBoth(out.append)
    return out[0]


def credentials(challenge: str, method: str, uri: str, user: str, password: str, header: str) -> str:
    """What a client answers to ``challenge`` (qop=auth, the challenge's algorithm)."""
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge.removeprefix("Digest ")))
    algorithm = params["algorithm"]
    h = hashlib.sha256 if algorithm == "SHA-256" else hashlib.md5

    def hx(text: str) -> str:
        return h(text.encode()).hexdigest()

    ha1 = hx(f"{user}:{params['realm']}:{password}")
    ha2 = hx(f"{method}:{uri}")
    nc, cnonce = "00000001", "0a4f113b"
    response = hx(f"{ha1}:{params['nonce']}:{nc}:{cnonce}:auth:{ha2}")
    return (
        f'{header}: Digest username="{user}", realm="{params["realm"]}", nonce="{params["nonce"]}", uri="{uri}", '
        f'response="{response}", algorithm={algorithm}, cnonce="{cnonce}", qop=auth, nc={nc}\r\n'
    )


def test_register_is_challenged_strongest_first_then_accepted(router: RegistrarRouter) -> None:
    """REGISTER without credentials gets 401 offering SHA-256 then MD5; a right SHA-256 answer registers."""
    first = result(router.route(message("REGISTER", "alice", "alice"), ctx()))
    assert first.status == 401
    offers = [value for name, value in first.headers if name == "WWW-Authenticate"]
    assert ["algorithm=SHA-256" in offers[0], "algorithm=MD5" in offers[1]] == [True, True]
    auth = credentials(offers[0], "REGISTER", "sip:example.com", "alice", "wonderland", "Authorization")
    second = result(router.route(message("REGISTER", "alice", "alice", auth), ctx()))
    assert second.status == 200 and any(name == "Contact" for name, _ in second.headers)


def test_md5_answer_is_accepted_too(router: RegistrarRouter) -> None:
    """A client that only knows MD5 answers the second challenge and registers."""
    offers = [v for n, v in result(router.route(message("REGISTER", "bob", "bob"), ctx())).headers]
    auth = credentials(offers[1], "REGISTER", "sip:example.com", "bob", "builder", "Authorization")
    assert result(router.route(message("REGISTER", "bob", "bob", auth), ctx())).status == 200


def test_wrong_password_and_unknown_user_look_the_same(router: RegistrarRouter) -> None:
    """A wrong password and a user that does not exist both get the same 401 with fresh challenges."""
    offers = [v for n, v in result(router.route(message("REGISTER", "alice", "alice"), ctx())).headers]
    wrong = credentials(offers[0], "REGISTER", "sip:example.com", "alice", "guess", "Authorization")
    ghost = credentials(offers[0], "REGISTER", "sip:example.com", "mallory", "guess", "Authorization")
    a = result(router.route(message("REGISTER", "alice", "alice", wrong), ctx()))
    b = result(router.route(message("REGISTER", "mallory", "mallory", ghost), ctx()))
    assert (a.status, a.reason, [n for n, _ in a.headers]) == (b.status, b.reason, [n for n, _ in b.headers])
    assert a.status == 401


def test_registering_someone_elses_address_is_forbidden(router: RegistrarRouter) -> None:
    """alice's credentials do not let her register bob's address-of-record (403)."""
    offers = [v for n, v in result(router.route(message("REGISTER", "bob", "alice"), ctx())).headers]
    auth = credentials(offers[0], "REGISTER", "sip:example.com", "alice", "wonderland", "Authorization")
    assert result(router.route(message("REGISTER", "bob", "alice", auth), ctx())).status == 403


def test_calls_from_our_users_need_proxy_authorization_and_their_own_from(router: RegistrarRouter) -> None:
    """An INVITE from our domain gets 407; with credentials it is routed; a forged From gets 403."""
    challenge = result(router.route(message("INVITE", "bob", "alice"), ctx()))
    assert challenge.status == 407
    offer = challenge.headers[0][1]
    auth = credentials(offer, "INVITE", "sip:bob@example.com", "alice", "wonderland", "Proxy-Authorization")
    routed = result(router.route(message("INVITE", "bob", "alice", auth), ctx()))
    assert isinstance(routed, Answer) and routed.status == 480  # bob is known but not registered
    # reusing the same nonce count is a replay: challenged again, stale
    replay = result(router.route(message("INVITE", "bob", "alice", auth), ctx()))
    assert replay.status == 407 and "stale=true" in replay.headers[0][1]
    # alice's valid credentials on a request claiming to come from bob
    fresh = result(router.route(message("INVITE", "bob", "bob"), ctx())).headers[0][1]
    forged = credentials(fresh, "INVITE", "sip:bob@example.com", "alice", "wonderland", "Proxy-Authorization")
    spoof = result(router.route(message("INVITE", "bob", "bob", forged), ctx()))
    assert (spoof.status, spoof.reason) == (403, "Forbidden (From is not the authenticated user)")


def test_trusted_peers_are_not_challenged(router: RegistrarRouter) -> None:
    """A call from a trusted peer (context.attrs["trusted"]) is routed without a 407."""
    trusted = ctx()
    trusted.attrs["trusted"] = "carrier-a"
    routed = result(router.route(message("INVITE", "bob", "alice"), trusted))
    assert isinstance(routed, Answer) and routed.status == 480
