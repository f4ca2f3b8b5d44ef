"""The dispatcher under twistd: calls spread over three SIPp callees, and step around a dead one.

The callees (uas_call_or_probe.xml) answer the dispatcher's OPTIONS probes
as well as calls; SIPp counts both as calls, so what each callee got is
counted from its message log (INVITEs, one per Call-ID). The caller dials
a Request-URI host nobody listens on: only the dispatcher gets calls
anywhere. Probing is fast (every second, down after one failed probe, up
after one answered) and passive checks are on with fail_silent, so a silent
destination costs a call the dispatcher's silent_after (0.2 s by default) or
at most Timer A (0.5 s), not Timer B (32 s).
"""

from __future__ import annotations

import re
import signal
from collections.abc import Callable

import pytest

from tests.integration.harness import (
    LOOPBACK,
    ProxyProcess,
    Sipp,
    aborted_call_ids,
    call_ids_of,
    explain,
    free_port,
    proxy_config,
    received_requests,
    traced_messages,
    wait_until,
)

pytestmark = pytest.mark.integration

#: callee -d: a finished call lingers this long to answer a retransmitted BYE
LINGER_MS = 2_000


def dispatcher_config(proxy_port: int, callee_ports: list[int]) -> str:
    """A proxy whose only router is a round-robin dispatcher set over the callees."""
    text = proxy_config([("udp", proxy_port)])
    text = text.replace('routers = ["static"]', 'routers = ["dispatcher"]')
    destinations = ",\n".join(f'    {{ uri = "{destination(port)}" }}' for port in callee_ports)
    return text + (
        "\n[[routing.dispatcher.sets]]\n"
        'id = "media"\n'
        'algorithm = "round-robin"\n'
        f"destinations = [\n{destinations},\n]\n"
        "\n[routing.dispatcher.probing]\n"
        "interval = 1\n"
        "timeout = 0.5\n"
        "down_after = 1\n"
        "up_after = 1\n"
        "\n[routing.dispatcher.passive]\n"
        "enabled = true\n"
        "suspect = true\n"
        "fail_silent = true\n"
    )


def destination(port: int) -> str:
    return f"sip:{LOOPBACK}:{port};transport=udp"


def callee(sipp: Callable[..., Sipp], name: str, port: int) -> Sipp:
    """A callee that takes calls and probes until it is stopped (-m far above what it gets)."""
    return sipp("uas_call_or_probe.xml", name=name, transport="udp", local_port=port, calls=100_000, pause_ms=LINGER_MS)


def caller(sipp: Callable[..., Sipp], name: str, proxy_port: int, calls: int, rate: float) -> Sipp:
    return sipp(
        "uac_call.xml",
        name=name,
        transport="udp",
        remote=(LOOPBACK, free_port()),
        send_to=(LOOPBACK, proxy_port),
        calls=calls,
        rate=rate,
    )


def invites_at(callees: list[Sipp], total: int) -> list[int]:
    """INVITEs (distinct calls) each callee received, once together they reach ``total``."""

    def counts() -> list[int] | None:
        numbers = [len(received_requests(process)) for process in callees]
        return numbers if sum(numbers) >= total else None

    try:
        return wait_until(counts, 10.0, interval=0.1, what=f"{total} INVITEs in the callees' message logs")
    except TimeoutError:
        return [len(received_requests(process)) for process in callees]


def failed_calls(uac: Sipp) -> dict[str, int | None]:
    """The calls a caller aborted, each with the port of the callee that last answered its INVITE.

    The port is read from the Contact of the last 180 or 200 to the INVITE
    (None when no callee answered at all).
    """
    aborted = aborted_call_ids(uac)
    answered_by: dict[str, int | None] = dict.fromkeys(aborted)
    for message in traced_messages(uac.messages_path):
        call_id = message.header("Call-ID") or ""
        if call_id not in aborted or message.direction != "received":
            continue
        if (message.header("CSeq") or "").endswith("INVITE") and message.start_line[8:10] in ("18", "20"):
            contact = re.search(r":(\d+)[;>]", message.header("Contact") or "")
            answered_by[call_id] = int(contact.group(1)) if contact else None
    return answered_by


def test_round_robin_gives_each_callee_the_same_share(
    start_proxy: Callable[..., ProxyProcess], sipp: Callable[..., Sipp]
) -> None:
    """90 calls over a round-robin set of three healthy callees: each gets exactly 30, and each
    is probed with OPTIONS (and answers them) without the probes taking a turn."""
    proxy_port = free_port()
    ports = [free_port() for _ in range(3)]
    callees = [callee(sipp, f"media{n}", port).start() for n, port in enumerate(ports, 1)]
    proxy = start_proxy(dispatcher_config(proxy_port, ports))
    uac = caller(sipp, "caller", proxy_port, 90, 30).start()
    result = uac.wait()
    assert (result.returncode, result.successful, result.failed) == (0, 90, 0), explain(proxy, result)

    changes = [line for line in proxy.log_text().splitlines() if "sipgate_proxy.dispatcher#" in line]
    assert invites_at(callees, 90) == [30, 30, 30], "\n".join(["health changes:", *changes, explain(proxy, result)])
    for process in callees:
        assert received_requests(process, "OPTIONS"), f"{process.name} was never probed\n" + explain(proxy)
    ours = call_ids_of(uac)
    invites = [line for line in proxy.wait_for_txn_lines(90, "INVITE") if ours(line)]
    assert {(line["status"], line["branches"], line["decision"]) for line in invites} == {
        ("200", "1", "dispatcher:forward/serial/3")
    }, invites


def test_a_killed_callee_is_stepped_around_and_takes_calls_again_once_back(
    start_proxy: Callable[..., ProxyProcess], sipp: Callable[..., Sipp]
) -> None:
    """SIGKILL one of three callees while 200 calls run at 25 per second.

    What is pinned: every INVITE is answered 200 (a call that meets the dead
    callee moves on once that was silent for silent_after, fail_silent; later
    calls no longer go there), so no call fails in setup, and none takes more
    than 1 s. The only calls allowed to fail are those the killed callee held
    when it died: answered (the BYE has nowhere to go) or ringing (the proxy
    waits for its final response until the caller gives up). Each failed call
    must be one of those: the Contact of the last 180/200 to its INVITE names
    the killed callee's port.

    Then a new callee on the same port is probed back up (the proxy logs the
    change to active) and takes its third of the next 30 calls.
    """
    proxy_port = free_port()
    ports = [free_port() for _ in range(3)]
    callees = [callee(sipp, f"media{n}", port).start() for n, port in enumerate(ports, 1)]
    proxy = start_proxy(dispatcher_config(proxy_port, ports))
    uac = caller(sipp, "caller", proxy_port, 200, 25).start()

    # a quarter of the way in, media1 dies without a word
    proxy.wait_for_txn_lines(50, "INVITE", timeout=20.0)
    victim = callees[0]
    assert victim.process is not None
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait(5)
    result = uac.wait()

    stranded = failed_calls(uac)
    assert result.failed == len(stranded), f"{stranded}\n" + explain(proxy, result)
    assert all(port == ports[0] for port in stranded.values()), (
        f"calls failed that the killed callee had not answered: {stranded}\n" + explain(proxy, result)
    )
    assert result.successful + result.failed == 200, explain(proxy, result)
    ours = call_ids_of(uac)
    invites = [line for line in proxy.wait_for_txn_lines(200, "INVITE") if ours(line)]
    assert len(invites) == 200, explain(proxy, result)
    # a call the killed callee was ringing (180, no final yet) waits for its final response until
    # the caller gives up; every other INVITE is answered 200, within 1 s
    others = [line for line in invites if line["call_id"] not in stranded]
    assert {line["status"] for line in others} == {"200"}, [line for line in others if line["status"] != "200"]
    # the calls that met the dead callee were tried once more, on the next one
    assert {line["branches"] for line in invites} <= {"1", "2"}, invites
    slow = [line for line in others if float(line["duration_ms"]) > 1_000.0]
    assert not slow, f"calls set up in more than 1 s: {slow}"

    # the callee comes back on the same port; one answered probe brings it up
    revived = callee(sipp, "media1-again", ports[0]).start()
    back_up = re.compile(rf"destination {re.escape(destination(ports[0]))} \w+ -> active")
    wait_until(
        lambda: back_up.search(proxy.log_text()),
        10.0,
        what=f"the proxy to log {destination(ports[0])} as active again\n{proxy.log_tail()}",
    )
    before = [len(received_requests(process)) for process in (revived, *callees[1:])]
    second = caller(sipp, "caller2", proxy_port, 30, 30).start()
    result2 = second.wait()
    assert (result2.returncode, result2.successful, result2.failed) == (0, 30, 0), explain(proxy, result2)
    after = invites_at([revived, *callees[1:]], sum(before) + 30)
    assert [a - b for a, b in zip(after, before, strict=True)] == [10, 10, 10], explain(proxy, result2)
