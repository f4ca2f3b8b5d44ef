"""TLS through twistd: calls over TLS on both sides, SNI, client certificates,
refused trunk certificates, and certificates reloaded with SIGHUP.

Every certificate is made at test time (tests/pki.py). Debian's SIPp is built
without TLS, so a small TLS user agent of our own (tests/integration/tls_ua.py)
plays caller and callee. The proxy knows the callees by name through
``[dns] hosts``; ``[tls] ca_file`` is the test CA.
"""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.integration.harness import LOOPBACK, ProxyProcess, free_port
from tests.integration.tls_ua import TlsCallee, TlsCaller
from tests.pki import CA, Issued, make_ca

pytestmark = pytest.mark.integration


@dataclass
class Pki:
    ca: CA
    proxy: Issued
    trunk_sni: Issued
    proxy_client: Issued
    caller_client: Issued
    directory: Path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    directory = tmp_path / "pki"
    directory.mkdir()
    ca = make_ca(directory)
    return Pki(
        ca=ca,
        proxy=ca.issue(directory, "proxy", dns=["proxy.test"], ips=[LOOPBACK]),
        trunk_sni=ca.issue(directory, "trunk-sni", dns=["trunk.test"]),
        proxy_client=ca.issue(directory, "proxy-client", dns=["proxy.test"], client=True, server=False),
        caller_client=ca.issue(directory, "caller-client", dns=["caller.test"], client=True, server=False),
        directory=directory,
    )


def config(pki: Pki, udp: int, tls: int, tls_mutual: int, routes: list[tuple[str, str]], peers: str = "") -> str:
    """A proxy with a TLS listener (with an SNI certificate), one requiring client
    certificates, static routes (R-URI user -> next hop) and names of the callees."""
    route_text = "".join(
        f'[[routing.static.routes]]\nmatch = "^sips?:{user}@"\nnext_hop = "{hop}"\n\n' for user, hop in routes
    )
    return f"""
[[listen]]
transport = "udp"
address = "127.0.0.1"
port = {udp}

[[listen]]
transport = "tls"
address = "127.0.0.1"
port = {tls}
cert = "{pki.proxy.cert}"
key = "{pki.proxy.key}"

[[listen.sni]]
names = ["trunk.test"]
cert = "{pki.trunk_sni.cert}"
key = "{pki.trunk_sni.key}"

[[listen]]
transport = "tls"
address = "127.0.0.1"
port = {tls_mutual}
cert = "{pki.proxy.cert}"
key = "{pki.proxy.key}"
client_cert = "required"
client_ca = "{pki.ca.cert}"

[log]
level = "info"

[dns]
mode = "hosts"

[dns.hosts]
"callee.test" = "127.0.0.1"
"wrong.test" = "127.0.0.1"
"expired.test" = "127.0.0.1"
"mutual.test" = "127.0.0.1"
"nocert.test" = "127.0.0.1"

[tls]
ca_file = "{pki.ca.cert}"
handshake_timeout = 3.0

[[tls.peers]]
host = "mutual.test"
cert = "{pki.proxy_client.cert}"
key = "{pki.proxy_client.key}"
{peers}
[routing]
routers = ["static"]

[routing.static]
{route_text}
"""


@pytest.fixture
def callees() -> Iterator[list[TlsCallee]]:
    started: list[TlsCallee] = []
    yield started
    for callee in started:
        callee.stop()


@pytest.fixture
def start(tmp_path: Path, twistd_binary: Path) -> Iterator[Callable[[str], ProxyProcess]]:
    started: list[ProxyProcess] = []

    def run(text: str) -> ProxyProcess:
        proxy = ProxyProcess(text, tmp_path, name="tls-proxy", twistd=twistd_binary)
        started.append(proxy)
        return proxy.start()

    yield run
    for proxy in started:
        proxy.stop()


def ports() -> tuple[int, int, int]:
    udp = free_port()
    tls = free_port()
    while tls == udp:
        tls = free_port()
    mutual = free_port()
    while mutual in (udp, tls):
        mutual = free_port()
    return udp, tls, mutual


def wait_for_log(proxy: ProxyProcess, text: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = proxy.log_text()
        if text in log:
            return log
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in the proxy log:\n{proxy.log_tail()}")


def test_calls_over_tls_reach_a_trunk_that_wants_our_client_certificate(
    pki: Pki, callees: list[TlsCallee], start: Callable[[str], ProxyProcess]
) -> None:
    """TLS caller -> proxy -> TLS callee requiring a client certificate: three calls
    complete; the callee saw SNI for its name, our client certificate and a TLS Via."""
    callee_cert = pki.ca.issue(pki.directory, "mutual", dns=["mutual.test"])
    callee = TlsCallee(callee_cert.cert, callee_cert.key, ca=pki.ca.cert, require_client_cert=True)
    callees.append(callee)
    udp, tls, mutual = ports()
    proxy = start(config(pki, udp, tls, mutual, [("bob", f"sip:mutual.test:{callee.port};transport=tls")]))
    with TlsCaller((LOOPBACK, tls), pki.ca.cert, server_hostname="proxy.test") as caller:
        results = [caller.call(f"sip:bob@127.0.0.1:{tls}", timeout=5) for _ in range(3)]
    for result in results:
        assert result.completed, result.transcript()
    invite = callee.wait_for_request("INVITE")
    assert (invite.header("via") or "").startswith("SIP/2.0/TLS 127.0.0.1:")
    connection = callee.wait_for_connection()
    assert connection.server_name == "mutual.test"
    assert connection.peer_certificate is not None, "the proxy presented no client certificate"
    assert len(callee.connections) == 1, "the proxy should reuse its connection to the trunk"
    assert len(proxy.txn_lines("INVITE", status="200")) == 3


def test_sni_picks_the_certificate_for_the_name_the_client_asked_for(
    pki: Pki, start: Callable[[str], ProxyProcess]
) -> None:
    """A client asking for trunk.test gets the trunk certificate; one asking for proxy.test the default."""
    udp, tls, mutual = ports()
    start(config(pki, udp, tls, mutual, []))
    with TlsCaller((LOOPBACK, tls), pki.ca.cert, server_hostname="trunk.test") as caller:
        names = [value for kind, value in caller.peer_certificate.get("subjectAltName", ()) if kind == "DNS"]
        assert names == ["trunk.test"]
    with TlsCaller((LOOPBACK, tls), pki.ca.cert, server_hostname="proxy.test") as caller:
        names = [value for kind, value in caller.peer_certificate.get("subjectAltName", ()) if kind == "DNS"]
        assert names == ["proxy.test"]


def test_a_listener_requiring_client_certificates_refuses_clients_without_one(
    pki: Pki, callees: list[TlsCallee], start: Callable[[str], ProxyProcess]
) -> None:
    """client_cert = "required": no certificate, no connection; with one from the CA, calls go through."""
    callee_cert = pki.ca.issue(pki.directory, "callee", dns=["callee.test"])
    callee = TlsCallee(callee_cert.cert, callee_cert.key)
    callees.append(callee)
    udp, tls, mutual = ports()
    start(config(pki, udp, tls, mutual, [("bob", f"sip:callee.test:{callee.port};transport=tls")]))
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        with TlsCaller((LOOPBACK, mutual), pki.ca.cert, server_hostname="proxy.test") as caller:
            caller.options(f"sip:127.0.0.1:{mutual}", timeout=2)
    with TlsCaller(
        (LOOPBACK, mutual),
        pki.ca.cert,
        cert=pki.caller_client.cert,
        key=pki.caller_client.key,
        server_hostname="proxy.test",
    ) as caller:
        result = caller.call(f"sip:bob@127.0.0.1:{mutual}", timeout=5)
    assert result.completed, result.transcript()


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("wrong", "certificate is for other.test, not wrong.test"),
        ("expired", "certificate has expired"),
        ("nocert", "alert certificate required"),
    ],
)
def test_a_trunk_with_an_unacceptable_certificate_is_never_used(
    name: str, why: str, pki: Pki, callees: list[TlsCallee], start: Callable[[str], ProxyProcess]
) -> None:
    """A trunk certificate for another name, an expired one, or a trunk that wants a client
    certificate we do not have: the connection is refused at once, the call fails with
    5xx, no request reaches the trunk, and the log says why."""
    now = datetime.now(UTC)
    if name == "wrong":
        issued = pki.ca.issue(pki.directory, name, dns=["other.test"])
        callee = TlsCallee(issued.cert, issued.key)
    elif name == "expired":
        past = (now - timedelta(days=30), now - timedelta(days=1))
        issued = pki.ca.issue(pki.directory, name, dns=["expired.test"], not_before=past[0], not_after=past[1])
        callee = TlsCallee(issued.cert, issued.key)
    else:
        issued = pki.ca.issue(pki.directory, name, dns=["nocert.test"])
        callee = TlsCallee(issued.cert, issued.key, ca=pki.ca.cert, require_client_cert=True)
    callees.append(callee)
    udp, tls, mutual = ports()
    proxy = start(config(pki, udp, tls, mutual, [("bob", f"sip:{name}.test:{callee.port};transport=tls")]))
    started = time.monotonic()
    with TlsCaller((LOOPBACK, tls), pki.ca.cert, server_hostname="proxy.test") as caller:
        result = caller.call(f"sip:bob@127.0.0.1:{tls}", timeout=10)
    assert 500 <= result.final_status < 600, result.transcript()
    assert time.monotonic() - started < 4.0, "a refused trunk must fail the call at once, not after timers"
    assert callee.requests == []
    log = wait_for_log(proxy, f"tls connection to 127.0.0.1:{callee.port} ({name}.test) refused")
    assert why in log


def test_renewed_certificates_are_picked_up_on_sighup_without_dropping_a_call(
    pki: Pki, callees: list[TlsCallee], start: Callable[[str], ProxyProcess]
) -> None:
    """Replace the listener's certificate files and send SIGHUP: new connections see the
    new certificate, while a call established before completes on its old connection."""
    callee_cert = pki.ca.issue(pki.directory, "callee", dns=["callee.test"])
    callee = TlsCallee(callee_cert.cert, callee_cert.key)
    callees.append(callee)
    udp, tls, mutual = ports()
    proxy = start(config(pki, udp, tls, mutual, [("bob", f"sip:callee.test:{callee.port};transport=tls")]))
    before = TlsCaller((LOOPBACK, tls), pki.ca.cert, server_hostname="proxy.test")
    try:
        old_serial = before.peer_certificate["serialNumber"]
        renewed = pki.ca.issue(pki.directory, "renewed", dns=["proxy.test", "renewed.test"], ips=[LOOPBACK])
        shutil.copyfile(renewed.cert, pki.proxy.cert)
        shutil.copyfile(renewed.key, pki.proxy.key)
        os.kill(proxy.pid, signal.SIGHUP)
        wait_for_log(proxy, "certificates of 2 TLS listener(s) reloaded")
        # the connection made before the reload still carries a whole call
        result = before.call(f"sip:bob@127.0.0.1:{tls}", timeout=5)
        assert result.completed, result.transcript()
    finally:
        before.close()
    with TlsCaller((LOOPBACK, tls), pki.ca.cert, server_hostname="renewed.test") as after:
        assert after.peer_certificate["serialNumber"] != old_serial
        result = after.call(f"sip:bob@127.0.0.1:{tls}", timeout=5)
    assert result.completed, result.transcript()
