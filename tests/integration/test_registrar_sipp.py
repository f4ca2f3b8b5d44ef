"""Registrar acceptance with SIPp only: digest REGISTER, an authenticated call, no user enumeration.

What an operator would run against a fresh install: a SIPp UAC registers
alice (MD5 digest, SIPp 3.6 computes no SHA-256; the SHA-256 path is in
test_registrar_calls.py) with a Contact naming a SIPp UAS; a second SIPp UAC,
bob, calls sip:alice@127.0.0.1:<proxy port>, is challenged with a 407 because
``authenticate_calls`` is on, answers the challenge and reaches alice's UAS.
A wrong password and an unknown user then get the same 401.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.harness import (
    LOOPBACK,
    ProxyProcess,
    Sipp,
    SippResult,
    TracedMessage,
    callee_call_args,
    explain,
    free_port,
    received_requests,
    run_sipp_pair,
    traced_messages,
)
from tests.integration.test_registrar_calls import registrar_config

pytestmark = pytest.mark.integration

PASSWORDS = {"alice": "wonderland", "bob": "builder"}
CALLS = 3


def auth_registrar_config(port: int, workdir: Path) -> str:
    """A registrar on ``port`` for the domain 127.0.0.1 whose users must authenticate calls too.

    Only MD5 is offered: SIPp 3.6 answers the first challenge it gets, and
    with SHA-256 offered first it stops ("createAuthHeader: authentication
    must use MD5 or AKAv1-MD5", exit code 255).
    """
    users = "".join(
        f'[[users]]\nusername = "{name}"\nrealm = "{LOOPBACK}"\npassword = "{password}"\n\n'
        for name, password in PASSWORDS.items()
    )
    return registrar_config(port, workdir, users=users, auth='algorithms = ["MD5"]\nauthenticate_calls = true')


def digest_args(user: str, password: str) -> list[str]:
    """SIPp's digest credentials: the username with -au, not in [authentication] (SIPp issue #640)."""
    return ["-au", user, "-ap", password]


def register(
    sipp: Callable[..., Sipp],
    proxy_port: int,
    scenario: str,
    name: str,
    user: str,
    password: str,
    extra_args: list[str] | None = None,
) -> tuple[Sipp, SippResult]:
    """Run one REGISTER scenario (one call) for ``user`` against the proxy; return the process and its result."""
    process = sipp(
        scenario,
        name=name,
        transport="udp",
        remote=(LOOPBACK, proxy_port),
        calls=1,
        timeout=15,
        recv_timeout_ms=5_000,
        service=user,
        extra_args=[*digest_args(user, password), *(extra_args or [])],
    )
    process.start()
    return process, process.wait()


def responses(process: Sipp, cseq: str) -> list[TracedMessage]:
    """The responses ``process`` received for CSeq ``cseq`` (e.g. "2 REGISTER"), in order."""
    return [
        message
        for message in traced_messages(process.messages_path)
        if message.direction == "received" and message.method is None and cseq_of(message) == cseq
    ]


def cseq_of(message: TracedMessage) -> str:
    """The CSeq of a traced message with single spaces, e.g. "2 INVITE"."""
    return re.sub(r"\s+", " ", message.header("CSeq") or "").strip()


def branch_of(message: TracedMessage) -> str | None:
    """The branch parameter of the top Via."""
    match = re.search(r";\s*branch=([^;,\s]+)", message.header("Via") or "")
    return match.group(1) if match else None


def header_names(message: TracedMessage) -> list[str]:
    """The header names of a message, in order, lowercased."""
    head = message.text.replace("\r\n", "\n").split("\n\n", 1)[0]
    return [line.split(":", 1)[0].strip().lower() for line in head.split("\n")[1:] if line.strip()]


def challenge_params(message: TracedMessage) -> list[str]:
    """The parameter names of the WWW-Authenticate challenge of a 401, in order."""
    value = message.header("WWW-Authenticate") or ""
    return re.findall(r"(\w[\w-]*)=", value.removeprefix("Digest "))


def test_sipp_registers_alice_and_bob_calls_her_after_a_407(
    tmp_path: Path, start_proxy: Callable[..., ProxyProcess], sipp: Callable[..., Sipp]
) -> None:
    """An MD5 REGISTER from SIPp binds alice to a SIPp UAS (401 then 200); bob's calls to
    sip:alice@<proxy> are each answered 407 first, and after ACK and an INVITE with
    Proxy-Authorization go through 200/ACK/BYE to that UAS, which never sees an
    unauthenticated INVITE."""
    proxy_port, callee_port = free_port(), free_port()
    proxy = start_proxy(auth_registrar_config(proxy_port, tmp_path))

    registrar, registered = register(
        sipp,
        proxy_port,
        "uac_register_digest.xml",
        "register_alice",
        "alice",
        PASSWORDS["alice"],
        ["-key", "uas_port", str(callee_port)],
    )
    assert (registered.returncode, registered.successful) == (0, 1), (
        "alice's digest REGISTER (401, then 200) failed\n" + explain(proxy, registered)
    )
    ok = responses(registrar, "2 REGISTER")
    assert ok and ok[-1].start_line.startswith("SIP/2.0 200"), explain(proxy, registered)
    assert f"<sip:alice@{LOOPBACK}:{callee_port}>" in (ok[-1].header("Contact") or ""), ok[-1].text

    uas = sipp(
        "uas_call.xml",
        name="alice_device",
        transport="udp",
        local_port=callee_port,
        calls=CALLS,
        **callee_call_args("udp"),
    )
    uac = sipp(
        "uac_call_auth.xml",
        name="bob",
        transport="udp",
        remote=(LOOPBACK, proxy_port),  # Request-URI sip:alice@127.0.0.1:<proxy port>
        send_to=(LOOPBACK, proxy_port),
        calls=CALLS,
        rate=10,
        # longer than T1 (0.5 s): a 407 whose ACK the proxy did not match would
        # be retransmitted while the call still runs, and show in bob's trace
        pause_ms=800,
        timeout=20,
        recv_timeout_ms=5_000,
        service="alice",
        extra_args=[
            "-key", "caller", "bob",
            *digest_args("bob", PASSWORDS["bob"]),
            # SIPp's digest uri defaults to <remote_ip>:<remote_port>, without the user:
            # the proxy checks it against the Request-URI
            "-auth_uri", f"alice@{LOOPBACK}:{proxy_port}",
        ],
    )  # fmt: skip
    caller, callee = run_sipp_pair(uac, uas)
    why = explain(proxy, caller, callee)
    assert (caller.returncode, caller.successful, caller.failed) == (0, CALLS, 0), "bob's calls failed\n" + why
    assert (callee.returncode, callee.successful, callee.failed) == (0, CALLS, 0), "alice's UAS failed\n" + why

    trace = traced_messages(uac.messages_path)
    first_invites = [m for m in trace if m.direction == "sent" and cseq_of(m) == "1 INVITE"]
    acks = [m for m in trace if m.direction == "sent" and cseq_of(m) == "1 ACK"]
    challenges = [m for m in responses(uac, "1 INVITE") if m.start_line.startswith("SIP/2.0 407")]
    assert {m.header("Call-ID") for m in challenges} == {m.header("Call-ID") for m in first_invites}, (
        "each call's first INVITE must get a 407\n" + why
    )
    branches = {m.header("Call-ID"): branch_of(m) for m in first_invites}
    assert acks and all(branch_of(ack) == branches[ack.header("Call-ID")] for ack in acks), (
        "the ACK for a 407 must carry the INVITE's branch (RFC 3261 17.1.1.3)\n" + acks[0].text
    )
    assert all((m.header("Proxy-Authenticate") or "").startswith("Digest ") for m in challenges), challenges[0].text
    assert len(challenges) == len(first_invites), (
        "the proxy retransmitted a 407 that bob had ACKed (ACK not matched to the INVITE transaction)\n"
        + "\n\n".join(m.text for m in challenges)
    )

    invites = received_requests(uas, "INVITE")
    assert len(invites) == CALLS, why
    for invite in invites:
        assert cseq_of(invite) == "2 INVITE", (
            "the callee must only see the INVITE that answered the challenge\n" + invite.text
        )
        assert f"<sip:bob@{LOOPBACK}>" in (invite.header("From") or ""), invite.text

    txns = proxy.wait_for_txn_lines(2 * CALLS, "INVITE")
    statuses = sorted(line["status"] for line in txns)
    assert statuses == ["200"] * CALLS + ["407"] * CALLS, f"proxy INVITE transactions: {txns}\n{why}"


def test_wrong_password_and_unknown_user_get_the_same_401(
    tmp_path: Path, start_proxy: Callable[..., ProxyProcess], sipp: Callable[..., Sipp]
) -> None:
    """A SIPp REGISTER answering the challenge with a wrong password gets 401 again, and one
    for a user that does not exist gets a 401 with the same status line, the same header
    names and the same challenge parameters: nothing tells the two apart."""
    proxy_port = free_port()
    proxy = start_proxy(auth_registrar_config(proxy_port, tmp_path))

    wrong, wrong_result = register(sipp, proxy_port, "uac_register_refused.xml", "wrong_password", "alice", "guess")
    ghost, ghost_result = register(sipp, proxy_port, "uac_register_refused.xml", "unknown_user", "mallory", "guess")
    why = explain(proxy, wrong_result, ghost_result)
    assert (wrong_result.returncode, wrong_result.successful) == (0, 1), (
        "a wrong password must get 401 again after the digest answer\n" + why
    )
    assert (ghost_result.returncode, ghost_result.successful) == (0, 1), (
        "an unknown user must get 401 again after the digest answer\n" + why
    )

    refusals = []
    for process in (wrong, ghost):
        answers = responses(process, "2 REGISTER")
        assert answers, f"no answer to the REGISTER with credentials in {process.messages_path}\n{why}"
        refusals.append(answers[-1])
    first_challenge = responses(wrong, "1 REGISTER")[-1]
    for refusal in refusals:
        assert refusal.start_line == refusals[0].start_line, [r.start_line for r in refusals]
        assert header_names(refusal) == header_names(refusals[0]), [r.text for r in refusals]
        assert challenge_params(refusal) == challenge_params(refusals[0]), [r.text for r in refusals]
        # and the refusal looks like the very first challenge, too
        assert header_names(refusal) == header_names(first_challenge), [refusal.text, first_challenge.text]
    assert refusals[0].start_line.startswith("SIP/2.0 401"), refusals[0].text
    assert "algorithm=MD5" in (refusals[0].header("WWW-Authenticate") or ""), refusals[0].text
    assert not any("stale" in name for name in challenge_params(refusals[0])), refusals[0].text
    registers = proxy.wait_for_txn_lines(4, "REGISTER", timeout=5)
    assert [line["status"] for line in registers] == ["401"] * 4, f"proxy REGISTER transactions: {registers}"
