"""Call flows other than the plain call: CANCEL, a callee that never answers,
out-of-dialog MESSAGE and OPTIONS, and OPTIONS addressed to the proxy itself.
"""

from __future__ import annotations

import pytest

from tests.integration.harness import (
    LOOPBACK,
    call_ids_of,
    callee_route,
    explain,
    free_port,
    proxy_config,
    run_sipp_pair,
    send_options,
)

pytestmark = pytest.mark.integration


def test_cancel_after_ringing_ends_with_487(start_proxy, sipp):
    """A CANCEL sent after 180 is answered 200 and the INVITE ends with 487.

    The proxy answers the CANCEL itself, cancels the callee's branch, and
    relays the callee's 487; the caller's ACK of the 487 ends the call.
    """
    calls = 50
    proxy_port, callee_port = free_port(), free_port()
    proxy = start_proxy(proxy_config([("udp", proxy_port)]))
    uas = sipp("uas_cancel.xml", name="callee", local_port=callee_port, calls=calls)
    uac = sipp(
        "uac_cancel.xml",
        name="caller",
        remote=(LOOPBACK, callee_port),
        send_to=(LOOPBACK, proxy_port),
        calls=calls,
        rate=50,
    )
    caller, callee = run_sipp_pair(uac, uas)

    assert (caller.returncode, caller.successful, caller.failed) == (0, calls, 0), explain(proxy, caller, callee)
    assert (callee.returncode, callee.successful, callee.failed) == (0, calls, 0), explain(proxy, caller, callee)
    ours = call_ids_of(uac)
    invites = [line for line in proxy.wait_for_txn_lines(calls, "INVITE", status="487") if ours(line)]
    assert len(invites) == calls, f"{len(invites)} INVITE txn lines with status=487\n" + explain(proxy)
    cancels = [line for line in proxy.wait_for_txn_lines(calls, "CANCEL", status="200") if ours(line)]
    assert len(cancels) == calls, f"{len(cancels)} CANCEL txn lines with status=200\n" + explain(proxy)


def test_silent_callee_makes_caller_get_408(start_proxy, sipp):
    """A callee that never answers makes the proxy answer the caller 408.

    Timer C (2 s here) fires before the INVITE client transaction's Timer B
    (64*T1 = 6.4 s with T1 = 0.1 s); either way the caller gets 408 and the
    callee, which never sent a provisional response, gets no CANCEL.
    """
    proxy_port, callee_port = free_port(), free_port()
    proxy = start_proxy(proxy_config([("udp", proxy_port)], t1=0.1, t2=0.4, timer_c=2.0))
    # the callee holds the call (silently) a little longer than Timer C
    uas = sipp("uas_silent.xml", name="callee", local_port=callee_port, calls=1, pause_ms=3_000)
    uac = sipp(
        "uac_timeout.xml",
        name="caller",
        remote=(LOOPBACK, callee_port),
        send_to=(LOOPBACK, proxy_port),
        calls=1,
        rate=1,
        recv_timeout_ms=15_000,
    )
    caller, callee = run_sipp_pair(uac, uas)

    assert (caller.returncode, caller.successful, caller.failed) == (0, 1, 0), explain(proxy, caller, callee)
    assert (callee.returncode, callee.successful, callee.failed) == (0, 1, 0), explain(proxy, caller, callee)
    ours = call_ids_of(uac)
    invites = [line for line in proxy.wait_for_txn_lines(1, "INVITE", status="408") if ours(line)]
    assert len(invites) == 1, "no INVITE txn line with status=408\n" + explain(proxy)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_message_and_options_reach_the_callee(start_proxy, sipp, transport):
    """Out-of-dialog MESSAGE and OPTIONS for another host are forwarded and the
    callee's own 200s (its Server header is checked) come back to the caller.
    """
    exchanges = 20
    proxy_port, callee_port = free_port(), free_port()
    # a TCP callee needs a route naming its transport (see callee_route)
    routes = [callee_route(callee_port, transport)] if transport == "tcp" else []
    proxy = start_proxy(proxy_config([(transport, proxy_port)], routes))
    uas = sipp(
        "uas_message.xml",
        name="callee",
        transport=transport,
        local_port=callee_port,
        calls=exchanges,
    )
    uac = sipp(
        "uac_message.xml",
        name="caller",
        transport=transport,
        remote=(LOOPBACK, callee_port),
        send_to=(LOOPBACK, proxy_port),
        calls=exchanges,
        rate=20,
    )
    caller, callee = run_sipp_pair(uac, uas)

    assert (caller.returncode, caller.successful, caller.failed) == (0, exchanges, 0), explain(proxy, caller, callee)
    assert (callee.returncode, callee.successful, callee.failed) == (0, exchanges, 0), explain(proxy, caller, callee)
    ours = call_ids_of(uac)
    for method in ("MESSAGE", "OPTIONS"):
        lines = [line for line in proxy.wait_for_txn_lines(exchanges, method, status="200") if ours(line)]
        assert len(lines) >= exchanges, f"{len(lines)} {method} txn lines with status=200\n" + explain(proxy)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_options_to_the_proxy_itself(start_proxy, transport):
    """OPTIONS whose Request-URI is the proxy is answered by the proxy: 200 with
    Allow (listing the methods a proxy must handle) and Supported, echoing the
    request's Via, Call-ID and CSeq and adding a To tag.
    """
    port = free_port()
    proxy = start_proxy(proxy_config([(transport, port)]))
    response = send_options(port, transport, timeout=5.0)

    assert response is not None, "no final response to OPTIONS\n" + proxy.log_tail()
    assert response.status == 200, response.raw.decode(errors="replace")
    allow = {method.strip().upper() for method in (response.header("allow") or "").split(",")}
    assert {"INVITE", "ACK", "CANCEL", "BYE", "OPTIONS"} <= allow, response.raw.decode(errors="replace")
    assert "supported" in response.headers, response.raw.decode(errors="replace")
    assert (response.header("cseq") or "").split() == ["1", "OPTIONS"]
    assert "branch=z9hG4bK-it-" in (response.header("via") or "")
    assert ";tag=" in (response.header("to") or ""), response.raw.decode(errors="replace")
