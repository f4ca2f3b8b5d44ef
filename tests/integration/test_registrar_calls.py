"""The registrar under twistd: digest REGISTER, then calls to the address-of-record reach the device.

A Python client registers SIPp's callee for alice (SHA-256 and MD5 digest); a
SIPp caller then calls sip:alice@127.0.0.1:<proxy port>, which the registrar
routes to the registered contact. The SQLite store keeps the binding across
a restart of twistd.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.harness import LOOPBACK, ProxyProcess, Sipp, explain, free_port, run_sipp_pair

pytestmark = pytest.mark.integration

USERS = """
[[users]]
username = "alice"
realm = "127.0.0.1"
password = "wonderland"
"""


def registrar_config(
    port: int,
    workdir: Path,
    store: str | None = None,
    *,
    users: str = USERS,
    auth: str = "authenticate_calls = false",
) -> str:
    """A proxy with the registrar on ``port``; ``store`` holds the store's keys
    (default: SQLite in ``workdir``), ``users`` the credentials file, ``auth``
    the further keys of [routing.registrar.auth]."""
    (workdir / "users.toml").write_text(users)
    if store is None:
        store = f'store = "sqlite"\npath = "{workdir / "location.sqlite"}"'
    return f"""
[[listen]]
transport = "udp"
address = "127.0.0.1"
port = {port}

[log]
level = "info"

[routing]
routers = ["registrar"]

[routing.registrar]
domains = ["127.0.0.1"]
{store}

[routing.registrar.auth]
users_file = "{workdir / "users.toml"}"
{auth}
"""


class Client:
    """A UDP SIP client on 127.0.0.1 that sends REGISTER and answers challenges."""

    def __init__(self, proxy_port: int) -> None:
        self.proxy_port = proxy_port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.settimeout(5)
        self.port = self.sock.getsockname()[1]
        self.call_id = secrets.token_hex(8)
        self.cseq = 0

    def register(self, user: str, contact: str, authorization: str = "", expires: int = 600) -> tuple[int, str]:
        self.cseq += 1
        aor = f"sip:{user}@{LOOPBACK}"
        data = (
            f"REGISTER sip:{LOOPBACK}:{self.proxy_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {LOOPBACK}:{self.port};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <{aor}>;tag=r1\r\nTo: <{aor}>\r\nCall-ID: {self.call_id}\r\n"
            f"CSeq: {self.cseq} REGISTER\r\nContact: <{contact}>\r\nExpires: {expires}\r\n"
            f"{authorization}Content-Length: 0\r\n\r\n"
        )
        self.sock.sendto(data.encode(), (LOOPBACK, self.proxy_port))
        while True:
            reply = self.sock.recv(65535).decode("latin-1")
            status = int(reply[8:11])
            if status >= 200:
                return status, reply

    def register_with_digest(
        self, user: str, password: str, contact: str, algorithm: str = "SHA-256"
    ) -> tuple[int, str]:
        status, reply = self.register(user, contact)
        assert status == 401, reply
        offers = re.findall(r"(?im)^WWW-Authenticate: (.*)$", reply)
        offer = next(o for o in offers if f"algorithm={algorithm}" in o)
        params = dict(re.findall(r'(\w+)="?([^",]*)"?', offer.removeprefix("Digest ")))
        h = hashlib.sha256 if algorithm == "SHA-256" else hashlib.md5
        uri = f"sip:{LOOPBACK}:{self.proxy_port}"
        ha1 = h(f"{user}:{params['realm']}:{password}".encode()).hexdigest()
        ha2 = h(f"REGISTER:{uri}".encode()).hexdigest()
        cnonce = secrets.token_hex(4)
        response = h(f"{ha1}:{params['nonce']}:00000001:{cnonce}:auth:{ha2}".encode()).hexdigest()
        authorization = (
            f'Authorization: Digest username="{user}", realm="{params["realm"]}", nonce="{params["nonce"]}", '
            f'uri="{uri}", response="{response}", algorithm={algorithm}, cnonce="{cnonce}", qop=auth, '
            "nc=00000001\r\n"
        )
        return self.register(user, contact, authorization)

    def close(self) -> None:
        self.sock.close()


def _call(sipp: Callable[..., Sipp], proxy: ProxyProcess, proxy_port: int, callee_port: int, n: int) -> None:
    uas = sipp("uas_call.xml", name=f"callee{n}", transport="udp", local_port=callee_port, calls=5)
    uac = sipp(
        "uac_call.xml",
        name=f"caller{n}",
        transport="udp",
        remote=(LOOPBACK, proxy_port),  # Request-URI sip:alice@127.0.0.1:<proxy port>
        send_to=(LOOPBACK, proxy_port),
        calls=5,
        rate=5,
        service="alice",
    )
    caller, callee = run_sipp_pair(uac, uas)
    assert (caller.returncode, caller.successful, caller.failed) == (0, 5, 0), explain(proxy, caller, callee)


def test_register_with_digest_then_calls_reach_the_device_and_survive_a_restart(
    tmp_path: Path, start_proxy: Callable[..., ProxyProcess], sipp: Callable[..., Sipp]
) -> None:
    """SHA-256 and MD5 REGISTERs succeed; calls to the AoR reach the contact; after a restart they still do."""
    proxy_port, callee_port = free_port(), free_port()
    config = registrar_config(proxy_port, tmp_path)
    proxy = start_proxy(config, name="first")
    client = Client(proxy_port)
    try:
        contact = f"sip:alice@{LOOPBACK}:{callee_port}"
        status, reply = client.register_with_digest("alice", "wonderland", contact, "SHA-256")
        assert status == 200, reply
        assert f"<{contact}>;expires=" in reply
        status, reply = client.register_with_digest("alice", "wonderland", contact, "MD5")
        assert status == 200, reply
        _call(sipp, proxy, proxy_port, callee_port, 1)

        proxy.stop()
        again = start_proxy(config, name="second")
        _call(sipp, again, proxy_port, callee_port, 2)
    finally:
        client.close()


def test_wrong_password_and_unknown_user_get_the_same_answer(
    tmp_path: Path, start_proxy: Callable[..., ProxyProcess]
) -> None:
    """A wrong password and a user that does not exist both get 401 with the same challenge headers."""
    proxy_port = free_port()
    start_proxy(registrar_config(proxy_port, tmp_path))
    client = Client(proxy_port)
    try:
        contact = f"sip:x@{LOOPBACK}:5999"
        wrong = client.register_with_digest("alice", "guess", contact)
        ghost = client.register_with_digest("mallory", "guess", contact)
    finally:
        client.close()

    def shape(reply: str) -> list[str]:
        return [line.split(":")[0] for line in reply.split("\r\n")[1:] if line]

    assert wrong[0] == ghost[0] == 401
    assert shape(wrong[1]) == shape(ghost[1])
    assert wrong[1].split("\r\n")[0] == ghost[1].split("\r\n")[0]
