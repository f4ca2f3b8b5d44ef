"""RFC 3263 through twistd: a domain's SRV records name two servers; the first is
dead, and every call reaches the second within its own transaction.

The test serves its own zone with a twisted.names server on loopback
(``python -m tests.dnsserver``); the proxy asks only that server
(``[dns] servers``), never the machine's resolver.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.dnsserver import DNSProcess
from tests.integration.harness import (
    LOOPBACK,
    ProxyProcess,
    Sipp,
    explain,
    free_port,
    proxy_config,
    run_sipp_pair,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent.parent


@pytest.fixture
def dns_server(tmp_path: Path) -> Iterator[Callable[[dict[str, object]], int]]:
    """Start ``python -m tests.dnsserver`` on a free loopback port with a zone; returns its port."""
    started: list[DNSProcess] = []

    def start(zone: dict[str, object]) -> int:
        server = DNSProcess(zone, tmp_path)
        started.append(server)
        return server.port

    yield start
    for server in started:
        server.stop()


def test_calls_fail_over_from_a_dead_srv_target_to_the_next(
    dns_server: Callable[[dict[str, object]], int],
    start_proxy: Callable[..., ProxyProcess],
    sipp: Callable[..., Sipp],
) -> None:
    """_sip._udp.carrier.test lists a.carrier.test (priority 10, nothing listens) and
    b.carrier.test (priority 20, a SIPp UAS): both calls are answered by b after a's
    Timer B, and the log names the destination given up for the next one."""
    dead, live, proxy_port = free_port(), free_port(), free_port()
    dns_port = dns_server(
        {
            "_sip._udp.carrier.test": [
                ["SRV", 10, 0, dead, "a.carrier.test", 300],
                ["SRV", 20, 0, live, "b.carrier.test", 300],
            ],
            "a.carrier.test": [["A", LOOPBACK, 300]],
            "b.carrier.test": [["A", LOOPBACK, 300]],
            "carrier.test": [["A", "192.0.2.1", 300]],
        }
    )
    # T1 = 50 ms: Timer B (64*T1) gives up on the dead server after 3.2 s
    text = proxy_config([("udp", proxy_port)], [("^sip:", "sip:carrier.test")], t1=0.05, t2=0.4)
    text = text.replace('[dns]\nmode = "hosts"\n', f'[dns]\nservers = ["{LOOPBACK}:{dns_port}"]\ntimeout = 2.0\n')
    proxy = start_proxy(text)
    uas = sipp("uas_call.xml", name="b", transport="udp", local_port=live, calls=2)
    uac = sipp(
        "uac_call.xml",
        name="caller",
        transport="udp",
        remote=(LOOPBACK, proxy_port),
        send_to=(LOOPBACK, proxy_port),
        calls=2,
        rate=1,
        service="bob",
    )
    caller, callee = run_sipp_pair(uac, uas)
    assert (caller.returncode, caller.successful, caller.failed) == (0, 2, 0), explain(proxy, caller, callee)
    assert callee.successful == 2, explain(proxy, caller, callee)
    log = proxy.log_text()
    moved = log.count(f"udp:{LOOPBACK}:{dead} failed (408 Request Timeout); trying the next destination")
    assert moved == 2, proxy.log_tail()
