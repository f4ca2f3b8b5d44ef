"""Whole calls through the proxy: SIPp caller -> twistd proxy -> SIPp callee.

Each test runs 200 calls (INVITE, 100/180/200, ACK, BYE, 200) at 80 calls
per second. The caller honours the Record-Route the proxy inserts, so ACK and
BYE go through the proxy as well; the proxy's transaction log lines prove that
every INVITE and every BYE really passed through it.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.integration.harness import (
    LOOPBACK,
    ProxyProcess,
    Sipp,
    call_ids_of,
    callee_call_args,
    callee_route,
    explain,
    free_port,
    proxy_config,
    run_sipp_pair,
)

CALLS = 200
RATE = 80

pytestmark = pytest.mark.integration


def run_calls(
    start_proxy: Callable[..., ProxyProcess],
    sipp: Callable[..., Sipp],
    caller_transport: str,
    callee_transport: str,
) -> None:
    proxy_port = free_port()
    callee_port = free_port()
    # UDP to UDP goes by the Request-URI alone; a TCP callee or a change of
    # transport needs a static route naming the callee's transport
    routes = []
    if callee_transport == "tcp" or caller_transport != callee_transport:
        routes.append(callee_route(callee_port, callee_transport))
    proxy = start_proxy(proxy_config([("udp", proxy_port), ("tcp", proxy_port)], routes))
    uas = sipp(
        "uas_call.xml",
        name="callee",
        transport=callee_transport,
        local_port=callee_port,
        calls=CALLS,
        **callee_call_args(callee_transport),
    )
    uac = sipp(
        "uac_call.xml",
        name="caller",
        transport=caller_transport,
        remote=(LOOPBACK, callee_port),
        send_to=(LOOPBACK, proxy_port),
        calls=CALLS,
        rate=RATE,
        pause_ms=20,
    )
    caller, callee = run_sipp_pair(uac, uas)

    assert (caller.returncode, caller.successful, caller.failed) == (0, CALLS, 0), explain(proxy, caller, callee)
    assert (callee.returncode, callee.successful, callee.failed) == (0, CALLS, 0), explain(proxy, caller, callee)

    ours = call_ids_of(uac)
    invites = [line for line in proxy.wait_for_txn_lines(CALLS, "INVITE", status="200") if ours(line)]
    assert len(invites) == CALLS, f"{len(invites)} INVITE txn lines with status=200\n" + explain(proxy)
    byes = [line for line in proxy.wait_for_txn_lines(CALLS, "BYE", status="200") if ours(line)]
    assert len(byes) == CALLS, (
        f"{len(byes)} BYE txn lines with status=200: the BYE did not follow the Record-Route\n" + explain(proxy)
    )


def test_udp_caller_to_udp_callee(start_proxy, sipp):
    """200 calls UDP -> proxy -> UDP all complete, INVITE and BYE through the proxy."""
    run_calls(start_proxy, sipp, "udp", "udp")


def test_tcp_caller_to_tcp_callee(start_proxy, sipp):
    """200 calls over TCP on both sides complete, with ACK and BYE routed through the proxy."""
    run_calls(start_proxy, sipp, "tcp", "tcp")


def test_udp_caller_to_tcp_callee(start_proxy, sipp):
    """A static route with transport=tcp carries 200 UDP calls to a TCP-only callee and back."""
    run_calls(start_proxy, sipp, "udp", "tcp")


def test_tcp_caller_to_udp_callee(start_proxy, sipp):
    """A static route with transport=udp carries 200 TCP calls to a UDP-only callee and back."""
    run_calls(start_proxy, sipp, "tcp", "udp")
