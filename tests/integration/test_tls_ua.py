"""The TLS SIP user agents of tls_ua.py, against each other (no proxy).

These pin what the proxy's TLS integration tests rely on: a whole call over
TLS, the SNI name and client certificate seen by the callee, RFC 3261 route
set handling by the caller, and a clear exception whenever either side
refuses the TLS handshake. The certificates are made in tmp_path by tests/pki.py.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from tests.integration.tls_ua import (
    LOOPBACK,
    MessageFramer,
    SipMessage,
    TlsCallee,
    TlsCaller,
    dialog_target,
    header_param,
    name_addr_uri,
    split_values,
)
from tests.pki import CA, Issued, make_ca

pytestmark = pytest.mark.integration

CALLEE_NAME = "callee.test"
TLS_VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]


@dataclass
class Pki:
    ca: CA
    callee: Issued
    caller: Issued


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = make_ca(tmp_path / "ca")
    callee = ca.issue(tmp_path, "callee", dns=[CALLEE_NAME, "localhost"], ips=[LOOPBACK])
    caller = ca.issue(tmp_path, "caller", dns=["caller.test"], client=True, server=False)
    return Pki(ca, callee, caller)


@pytest.fixture
def callee(pki: Pki) -> Iterator[TlsCallee]:
    with TlsCallee(pki.callee.cert, pki.callee.key) as running:
        yield running


def caller_for(
    callee: TlsCallee,
    ca: Path,
    server_hostname: str | None = CALLEE_NAME,
    *,
    cert: Path | None = None,
    key: Path | None = None,
    maximum_version: ssl.TLSVersion | None = None,
) -> TlsCaller:
    """A TlsCaller whose "proxy" is the callee itself."""
    return TlsCaller(
        (LOOPBACK, callee.port), ca, cert, key, server_hostname=server_hostname, maximum_version=maximum_version
    )


# -- the framer ----------------------------------------------------------------

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"v: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKa, SIP/2.0/TLS 127.0.0.1:5062;branch=z9hG4bKb\r\n"
    b"f: <sip:alice@example.com>;tag=1\r\n"
    b"t: <sip:bob@example.com>\r\n"
    b"i: abc@127.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Subject: folded\r\n  line\r\n"
    b"l: 5\r\n"
    b"\r\n"
    b"hello"
)
RESPONSE = b"SIP/2.0 200 OK\r\nCall-ID: x\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"


def test_framer_whole_input_with_compact_forms() -> None:
    """Two messages in one chunk come out whole; compact names, folding and the body are understood."""
    framer = MessageFramer()
    first, second = framer.feed(INVITE + RESPONSE)
    assert first.is_request and first.method == "INVITE" and first.request_uri == "sip:bob@example.com"
    assert first.values("Via") == [
        "SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKa",
        "SIP/2.0/TLS 127.0.0.1:5062;branch=z9hG4bKb",
    ]
    assert first.header("from") == "<sip:alice@example.com>;tag=1"
    assert first.header("TO") == "<sip:bob@example.com>"
    assert first.call_id == "abc@127.0.0.1"
    assert first.cseq == (1, "INVITE")
    assert first.header("subject") == "folded line"
    assert first.body == b"hello"
    assert first.raw == INVITE
    assert not second.is_request and second.status == 200 and second.reason == "OK"
    assert second.cseq == (2, "BYE")


def test_framer_byte_by_byte() -> None:
    """Fed one byte at a time (with CRLF keep-alives between), the framer yields the same messages."""
    framer = MessageFramer()
    stream = b"\r\n\r\n" + INVITE + b"\r\n\r\n" + RESPONSE
    messages = [message for index in range(len(stream)) for message in framer.feed(stream[index : index + 1])]
    assert [message.raw for message in messages] == [INVITE, RESPONSE]
    assert framer.keepalives >= 2


def test_message_round_trip_sets_content_length() -> None:
    """to_bytes writes the headers back in order and a Content-Length that matches the body."""
    message = SipMessage.parse(INVITE)
    message.body = b"longer body"
    again = SipMessage.parse(message.to_bytes())
    assert again.headers[:6] == message.headers[:6]
    assert again.header("content-length") == "11" and again.body == b"longer body"


def test_header_helpers() -> None:
    """Comma lists split outside quotes and <>; URIs and header params come out of name-addrs."""
    assert split_values('"A, B" <sip:a@h;lr>, <sip:b@h>') == ['"A, B" <sip:a@h;lr>', "<sip:b@h>"]
    assert name_addr_uri('"Bob" <sip:bob@h;transport=tls>;tag=9') == "sip:bob@h;transport=tls"
    assert name_addr_uri("sip:bob@h;tag=9") == "sip:bob@h"
    assert header_param("<sip:bob@h;tag=uri>;tag=9", "tag") == "9"
    assert header_param("<sip:bob@h;tag=uri>", "tag") is None


def test_dialog_target_loose_and_strict() -> None:
    """Loose routing keeps the remote target as Request-URI; strict routing moves it to the last Route."""
    assert dialog_target("sip:b@h", []) == ("sip:b@h", [])
    assert dialog_target("sip:b@h", ["<sip:p1;lr>", "<sip:p2;lr>"]) == ("sip:b@h", ["<sip:p1;lr>", "<sip:p2;lr>"])
    assert dialog_target("sip:b@h", ["<sip:p1>", "<sip:p2;lr>"]) == ("sip:p1", ["<sip:p2;lr>", "<sip:b@h>"])


# -- whole calls -----------------------------------------------------------------


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=["tls1.2", "tls1.3"])
def test_direct_call_completes(pki: Pki, callee: TlsCallee, version: ssl.TLSVersion) -> None:
    """INVITE/100/180/200/ACK/BYE/200 over one TLS connection, with the headers RFC 3261 asks for."""
    with caller_for(callee, pki.ca.cert, maximum_version=version) as caller:
        result = caller.call(callee.uri, from_user="alice")
    assert result.completed, result.transcript()
    assert result.statuses == [100, 180, 200]
    assert result.bye_status == 200
    assert result.remote_target == callee.uri
    assert result.route_set == []
    assert callee.methods() == ["INVITE", "ACK", "BYE"]
    invite, ack, bye = callee.requests
    assert invite.connection is ack.connection is bye.connection
    assert invite.connection.version == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
    via = invite.header("via") or ""
    assert via.startswith(f"SIP/2.0/TLS {LOOPBACK}:") and ";branch=z9hG4bK" in via
    assert invite.header("max-forwards") == "70"
    assert (invite.header("contact") or "").endswith(";transport=tls>")
    assert (invite.header("from") or "").startswith("<sip:alice@")
    assert invite.message.body.startswith(b"v=0")
    ok = result.responses[-1]
    assert ok.header("via") == via
    assert ok.call_id == invite.message.call_id and ok.cseq == (1, "INVITE")
    assert header_param(ok.header("to") or "", "tag")
    assert header_param(result.responses[0].header("to") or "", "tag") is None  # 100 Trying
    assert ok.header("contact") == callee.contact
    assert ok.header("content-type") == "application/sdp" and ok.body.startswith(b"v=0")
    assert ack.request_line == f"ACK {callee.uri} SIP/2.0"
    assert ack.message.cseq == (1, "ACK") and bye.message.cseq == (2, "BYE")
    assert ack.header("to") == ok.header("to") == bye.header("to")
    assert (ack.header("via") or "") != via  # a 2xx ACK is a transaction of its own
    assert callee.errors == []


def test_second_call_reuses_the_connection(pki: Pki, callee: TlsCallee) -> None:
    """Calls made by one TlsCaller share its TLS connection; options() works on it too."""
    with caller_for(callee, pki.ca.cert) as caller:
        assert caller.call(callee.uri).completed
        assert caller.call(callee.uri).completed
        response = caller.options(callee.uri)
    assert response.status == 200 and header_param(response.header("to") or "", "tag")
    assert callee.methods() == ["INVITE", "ACK", "BYE", "INVITE", "ACK", "BYE", "OPTIONS"]
    assert len(callee.connections) == 1


def test_route_set_from_record_route(pki: Pki, callee: TlsCallee) -> None:
    """The callee echoes Record-Route in 180/200; ACK and BYE carry it reversed as Route (loose routing)."""
    record_route = [("Record-Route", "<sip:p1.test;transport=tls;lr>"), ("Record-Route", "<sip:p2.test;lr>")]
    with caller_for(callee, pki.ca.cert) as caller:
        result = caller.call(callee.uri, headers=record_route)
    assert result.completed, result.transcript()
    ringing, ok = result.responses[1:]
    assert ringing.values("record-route") == ok.values("record-route") == [value for _, value in record_route]
    assert result.route_set == ["<sip:p2.test;lr>", "<sip:p1.test;transport=tls;lr>"]
    ack = callee.wait_for_request("ACK")
    bye = callee.wait_for_request("BYE")
    for request in (ack, bye):
        assert request.message.request_uri == callee.uri
        assert request.message.values("route") == result.route_set
        assert request.header("record-route") is None


def test_rejected_call_gets_the_ack_of_the_invite_transaction(pki: Pki) -> None:
    """A non-2xx final answer is ACKed with the INVITE's branch, Request-URI and CSeq number; no BYE."""
    with TlsCallee(pki.callee.cert, pki.callee.key, final_status=486, ringing=False) as callee:
        with caller_for(callee, pki.ca.cert) as caller:
            result = caller.call(callee.uri)
        assert result.final_status == 486 and result.statuses == [100, 486]
        assert result.bye_status is None and not result.completed
        ack = callee.wait_for_request("ACK")
        invite = callee.requests[0]
    assert ack.request_line == f"ACK {callee.uri} SIP/2.0"
    assert ack.header("via") == invite.header("via")
    assert ack.message.cseq == (1, "ACK")
    assert ack.header("to") == result.responses[-1].header("to")
    assert callee.methods() == ["INVITE", "ACK"]


# -- SNI and client certificates ---------------------------------------------------


def test_callee_sees_sni(pki: Pki, callee: TlsCallee) -> None:
    """The SNI name the caller sends is recorded; for an IP address no SNI is sent."""
    with caller_for(callee, pki.ca.cert, server_hostname=CALLEE_NAME) as caller:
        caller.options(callee.uri)
    with caller_for(callee, pki.ca.cert, server_hostname=LOOPBACK) as caller:
        caller.options(callee.uri)
    assert [connection.server_name for connection in callee.connections] == [CALLEE_NAME, None]
    assert all(connection.peer_certificate is None for connection in callee.connections)


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=["tls1.2", "tls1.3"])
def test_required_client_certificate_missing_is_refused(pki: Pki, version: ssl.TLSVersion) -> None:
    """A callee requiring client certificates refuses a caller without one; the caller gets an exception."""
    with TlsCallee(pki.callee.cert, pki.callee.key, ca=pki.ca.cert, require_client_cert=True) as callee:
        with caller_for(callee, pki.ca.cert, maximum_version=version) as caller:
            with pytest.raises((ssl.SSLError, ConnectionError)):
                caller.call(callee.uri, timeout=3)
        connection = callee.wait_for_connection()
        assert not connection.established
        assert isinstance(connection.error, ssl.SSLError)
        assert "certificate" in str(connection.error).lower()
        assert callee.requests == [] and callee.errors == []


def test_required_client_certificate_from_the_ca_is_accepted(pki: Pki) -> None:
    """A caller with a certificate from the trusted CA completes a call; the callee records that certificate."""
    with TlsCallee(pki.callee.cert, pki.callee.key, ca=pki.ca.cert, require_client_cert=True) as callee:
        with caller_for(callee, pki.ca.cert, cert=pki.caller.cert, key=pki.caller.key) as caller:
            assert caller.call(callee.uri).completed
        connection = callee.connections[0]
    assert connection.established and connection.error is None
    assert connection.peer_certificate is not None
    assert (("commonName", "caller.test"),) in connection.peer_certificate["subject"]
    assert connection.peer_certificate_der == pki.caller.certificate.public_bytes(Encoding.DER)


def test_client_certificate_from_another_ca_is_refused(pki: Pki, tmp_path: Path) -> None:
    """A client certificate from an unknown CA is refused like a missing one."""
    rogue = make_ca(tmp_path / "rogue", "Rogue CA").issue(tmp_path, "rogue", dns=["caller.test"], client=True)
    with TlsCallee(pki.callee.cert, pki.callee.key, ca=pki.ca.cert, require_client_cert=True) as callee:
        with caller_for(callee, pki.ca.cert, cert=rogue.cert, key=rogue.key) as caller:
            with pytest.raises((ssl.SSLError, ConnectionError)):
                caller.call(callee.uri, timeout=3)
        assert isinstance(callee.wait_for_connection().error, ssl.SSLError)


# -- the caller refuses bad server certificates ---------------------------------------


def test_caller_refuses_other_host_name(pki: Pki, callee: TlsCallee) -> None:
    """A server certificate that does not name server_hostname is refused at connect."""
    with caller_for(callee, pki.ca.cert, server_hostname="elsewhere.test") as caller:
        with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
            caller.call(callee.uri)


def test_caller_refuses_expired_certificate(pki: Pki, tmp_path: Path) -> None:
    """An expired server certificate is refused at connect."""
    expired = pki.ca.issue(tmp_path, "expired", dns=[CALLEE_NAME], not_after=datetime.now(UTC) - timedelta(days=1))
    with TlsCallee(expired.cert, expired.key) as callee, caller_for(callee, pki.ca.cert) as caller:
        with pytest.raises(ssl.SSLCertVerificationError, match="expired"):
            caller.connect()


def test_caller_refuses_unknown_ca(pki: Pki, tmp_path: Path) -> None:
    """A server certificate from a CA the caller does not trust is refused at connect."""
    rogue = make_ca(tmp_path / "rogue", "Rogue CA").issue(tmp_path, "rogue", dns=[CALLEE_NAME])
    with TlsCallee(rogue.cert, rogue.key) as callee, caller_for(callee, pki.ca.cert) as caller:
        with pytest.raises(ssl.SSLCertVerificationError) as refused:
            caller.options(callee.uri)
        assert refused.value.verify_code != 0
        callee.wait_for_connection()
    assert callee.requests == []
