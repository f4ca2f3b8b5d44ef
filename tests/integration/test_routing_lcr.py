"""Least-cost routing under twistd: numbers reach the right gateway, rewritten, and fail over.

The gateways are SIPp callees on 127.0.0.1. The caller dials a number (its
Request-URI user, ``-s``) at a Request-URI host nobody listens on; only the
``lcr`` router can get the call anywhere. What each callee really received
is read from its message log.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.integration.harness import (
    LOOPBACK,
    ProxyProcess,
    Sipp,
    call_ids_of,
    explain,
    free_port,
    proxy_config,
    received_requests,
)

pytestmark = pytest.mark.integration

CALLS = 20
RATE = 20


def lcr_config(proxy_port: int, gateways: str, rules: str) -> str:
    """A proxy config on ``proxy_port`` whose only router is ``lcr`` with these TOML tables."""
    text = proxy_config([("udp", proxy_port)])
    text = text.replace('routers = ["static"]', 'routers = ["lcr"]')
    return text + '\n[routing.lcr]\nno_route = [404, "No Route"]\n' + gateways + rules


def gateway(ident: str, port: int, strip: int = 0, prefix: str = "", headers: str = "") -> str:
    lines = [
        "[[routing.lcr.gateways]]",
        f'id = "{ident}"',
        f'address = "{LOOPBACK}"',
        f"port = {port}",
        'transport = "udp"',
        f"strip = {strip}",
        f'prefix = "{prefix}"',
    ]
    if headers:
        lines.append(f"headers = {headers}")
    return "\n".join(lines) + "\n\n"


def rule(prefix: str, *gateway_ids: str) -> str:
    ids = ", ".join(f'"{ident}"' for ident in gateway_ids)
    return f'[[routing.lcr.rules]]\nprefix = "{prefix}"\ngateways = [{ids}]\n\n'


def caller(sipp: Callable[..., Sipp], name: str, proxy_port: int, number: str, calls: int = CALLS) -> Sipp:
    """A uac_call.xml caller dialling ``number`` through the proxy (Request-URI host: a dead port)."""
    return sipp(
        "uac_call.xml",
        name=name,
        transport="udp",
        remote=(LOOPBACK, free_port()),
        send_to=(LOOPBACK, proxy_port),
        calls=calls,
        rate=RATE,
        service=number,
    )


def callee(sipp: Callable[..., Sipp], scenario: str, name: str, port: int, calls: int = CALLS) -> Sipp:
    return sipp(scenario, name=name, transport="udp", local_port=port, calls=calls, pause_ms=2_000)


def test_numbers_reach_their_gateway_with_the_gateways_rewriting(
    start_proxy: Callable[..., ProxyProcess], sipp: Callable[..., Sipp]
) -> None:
    """+49 calls reach gateway 1 as 0049... (strip 3, prefix 0049), +1 calls gateway 2 as the bare
    national number (strip 2) with its extra header; neither gateway sees the other's calls."""
    proxy_port, port1, port2 = free_port(), free_port(), free_port()
    proxy = start_proxy(
        lcr_config(
            proxy_port,
            gateway("gw1", port1, strip=3, prefix="0049")
            + gateway("gw2", port2, strip=2, headers='{ "X-Carrier-Account" = "it-4711" }'),
            rule("+49", "gw1") + rule("+1", "gw2"),
        )
    )
    uas1 = callee(sipp, "uas_call.xml", "gw1", port1).start()
    uas2 = callee(sipp, "uas_call.xml", "gw2", port2).start()
    germany = caller(sipp, "caller49", proxy_port, "+4930123456").start()
    america = caller(sipp, "caller1", proxy_port, "+12125550100").start()
    results = [germany.wait(), america.wait(), uas1.wait(20.0), uas2.wait(20.0)]

    for result in results:
        assert (result.returncode, result.successful, result.failed) == (0, CALLS, 0), explain(proxy, *results)

    to_gw1 = received_requests(uas1)
    to_gw2 = received_requests(uas2)
    assert [m.request_uri for m in to_gw1] == [f"sip:004930123456@{LOOPBACK}:{port1};transport=udp"] * CALLS
    assert [m.request_uri for m in to_gw2] == [f"sip:2125550100@{LOOPBACK}:{port2};transport=udp"] * CALLS
    assert {m.header("X-Carrier-Account") for m in to_gw2} == {"it-4711"}
    assert {m.header("X-Carrier-Account") for m in to_gw1} == {None}
    invites = proxy.wait_for_txn_lines(2 * CALLS, "INVITE", status="200")
    assert len(invites) == 2 * CALLS, explain(proxy)
    # the calls on each gateway are exactly those of the matching caller
    assert {m.header("Call-ID") for m in to_gw1} == {line["call_id"] for line in invites if call_ids_of(germany)(line)}
    assert {m.header("Call-ID") for m in to_gw2} == {line["call_id"] for line in invites if call_ids_of(america)(line)}
    assert {(line["branches"], line["decision"]) for line in invites} == {("1", "lcr:forward/serial/1")}, invites


def test_a_gateway_answering_503_fails_over_to_the_next(
    start_proxy: Callable[..., ProxyProcess], sipp: Callable[..., Sipp]
) -> None:
    """With gateways [gw_a, gw_b] and gw_a answering every INVITE with 503, every call is tried
    on gw_a first and completes through gw_b: the caller never sees the 503."""
    proxy_port, port_a, port_b = free_port(), free_port(), free_port()
    proxy = start_proxy(
        lcr_config(
            proxy_port,
            gateway("gw_a", port_a, strip=1) + gateway("gw_b", port_b, strip=1, prefix="00"),
            rule("+33", "gw_a", "gw_b"),
        )
    )
    busy = callee(sipp, "uas_503.xml", "gw_a", port_a).start()
    good = callee(sipp, "uas_call.xml", "gw_b", port_b).start()
    uac = caller(sipp, "caller", proxy_port, "+33142685300").start()
    results = [uac.wait(), busy.wait(20.0), good.wait(20.0)]

    for result in results:
        assert (result.returncode, result.successful, result.failed) == (0, CALLS, 0), explain(proxy, *results)

    tried = received_requests(busy)
    answered = received_requests(good)
    assert [m.request_uri for m in tried] == [f"sip:33142685300@{LOOPBACK}:{port_a};transport=udp"] * CALLS
    assert [m.request_uri for m in answered] == [f"sip:0033142685300@{LOOPBACK}:{port_b};transport=udp"] * CALLS
    assert [m.header("Call-ID") for m in tried] == [m.header("Call-ID") for m in answered]

    ours = call_ids_of(uac)
    invites = [line for line in proxy.wait_for_txn_lines(CALLS, "INVITE") if ours(line)]
    assert len(invites) == CALLS, explain(proxy)
    assert {(line["status"], line["branches"], line["decision"]) for line in invites} == {
        ("200", "2", "lcr:forward/serial/2")
    }, invites
