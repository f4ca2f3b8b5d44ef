"""RFC 4475 and RFC 5118 torture messages through the proxy core, in process.

Each message goes to a fresh core whose only router sends everything to
127.0.0.1:5999; what the core transmits is checked against tests/torture.py.
"""

from __future__ import annotations

import re

import pytest

from sipgate_proxy.routing.chain import RoutingChain
from sipgate_proxy.routing.static import StaticRouter, parse_static_config
from sipgate_proxy.sip.proxy import CoreSettings, Interface, ProxyCore
from sipgate_proxy.sip.transaction import Destination
from tests.torture import CASES, DROP, FORWARD, Case, top_via_transport

SINK = 5999


def _core(sent: list[tuple[bytes, Destination]]) -> ProxyCore:
    interfaces = [
        Interface("udp:127.0.0.1:5060", "udp", "127.0.0.1", 5060, "127.0.0.1", 5060),
        Interface("tcp:127.0.0.1:5060", "tcp", "127.0.0.1", 5060, "127.0.0.1", 5060),
    ]
    routes = parse_static_config({"routes": [{"match": ".", "next_hop": f"sip:127.0.0.1:{SINK}"}]})
    router = RoutingChain([("static", StaticRouter(routes))])
    return ProxyCore(interfaces, CoreSettings(), router, lambda data, dest: sent.append((data, dest)), lambda: 0.0)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_torture_message(case: Case) -> None:
    """The core answers, forwards or drops each torture message as the RFC expects of a proxy."""
    sent: list[tuple[bytes, Destination]] = []
    core = _core(sent)
    data = case.path.read_bytes()
    transport = top_via_transport(data)
    source = Destination(transport, "127.0.0.1", 40000, None, f"{transport}:127.0.0.1:5060")
    core.receive_datagram(data, source, 1.0)
    responses = [d for d, _ in sent if d.startswith(b"SIP/2.0 ") and not d.startswith(b"SIP/2.0 100 ")]
    requests = [(d, dest) for d, dest in sent if not d.startswith(b"SIP/2.0 ")]
    if case.outcome == DROP:
        assert sent == []
    elif case.outcome == FORWARD:
        assert responses == [], responses
        assert len(requests) == 1, sent
        forwarded, dest = requests[0]
        assert dest.host == ("services.example.com" if case.name == "wsinv" else "127.0.0.1")
        assert dest.port == (5080 if case.name == "mpart01" else 5060 if case.name == "wsinv" else SINK)
        for needle in case.must_keep:
            assert needle in forwarded
        for needle in case.must_not_forward:
            assert needle not in forwarded
        assert re.search(rb"^Via: SIP/2.0/(UDP|TCP) 127.0.0.1:5060;branch=z9hG4bK", forwarded, re.M)
    else:
        assert requests == []
        assert len(responses) == 1, sent
        assert responses[0].startswith(f"SIP/2.0 {case.outcome} ".encode())


def test_torture_forward_keeps_body_bytes() -> None:
    """A binary multipart body with NUL octets is forwarded byte for byte (mpart01)."""
    sent: list[tuple[bytes, Destination]] = []
    core = _core(sent)
    data = (CASES[0].path.parent / "mpart01.dat").read_bytes()
    core.receive_datagram(data, Destination("udp", "127.0.0.1", 40000, None, "udp:127.0.0.1:5060"), 1.0)
    forwarded = sent[0][0]
    body = data.split(b"\r\n\r\n", 1)[1]
    assert forwarded.endswith(body)
    assert b"\x00" in body


def test_torture_bext01_lists_unsupported_proxy_require() -> None:
    """420 to bext01 names the Proxy-Require option tags in Unsupported, not the Require ones."""
    sent: list[tuple[bytes, Destination]] = []
    core = _core(sent)
    data = (CASES[0].path.parent / "bext01.dat").read_bytes()
    core.receive_datagram(data, Destination("tcp", "127.0.0.1", 40000, None, "tcp:127.0.0.1:5060"), 1.0)
    response = sent[0][0]
    assert response.startswith(b"SIP/2.0 420 ")
    assert b"\r\nUnsupported: noProxiesSupportThis, norDoAnyProxiesSupportThis\r\n" in response
    assert b"nothingSupportsThis" not in response.split(b"\r\nUnsupported:")[1].split(b"\r\n")[0]
