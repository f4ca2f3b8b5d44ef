"""tests/pki.py: the test certificates load, verify and say what was asked.

The handshakes here run in memory (ssl.MemoryBIO): no socket is opened.
"""

from __future__ import annotations

import ipaddress
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import crypto

from tests.pki import CA, Issued, make_ca


@pytest.fixture
def ca(tmp_path: Path) -> CA:
    return make_ca(tmp_path / "ca")


def _store(*cas: Path) -> crypto.X509Store:
    store = crypto.X509Store()
    for path in cas:
        store.add_cert(crypto.load_certificate(crypto.FILETYPE_PEM, path.read_bytes()))
    return store


def _verify(issued: Issued, *trusted: Path) -> None:
    """Verify the leaf of ``issued`` with pyOpenSSL against the ``trusted`` CA files."""
    leaf = crypto.load_certificate(crypto.FILETYPE_PEM, issued.cert.read_bytes())
    crypto.X509StoreContext(_store(*trusted), leaf).verify_certificate()


def _cn(pem: bytes) -> str:
    """The subject common name of the first certificate in ``pem``."""
    subject = x509.load_pem_x509_certificate(pem).subject
    return str(subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def _pem_blocks(path: Path) -> list[bytes]:
    return [block for block in path.read_bytes().split(b"-----END CERTIFICATE-----") if b"BEGIN" in block]


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext, server_hostname: str | None) -> ssl.SSLObject:
    """Run a TLS handshake between two contexts in memory; return the client's SSLObject."""
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_side = client.wrap_bio(client_in, client_out, server_hostname=server_hostname)
    server_side = server.wrap_bio(to_server, to_client, server_side=True)
    pending = {"client": client_side, "server": server_side}
    for _ in range(20):
        for role, obj in list(pending.items()):
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                continue
            del pending[role]
        to_server.write(client_out.read())
        client_in.write(to_client.read())
        if not pending:
            return client_side
    raise AssertionError("handshake did not finish")


def _server_context(issued: Issued) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(issued.cert, issued.key)
    return context


def _client_context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def test_ca_file_is_a_self_signed_ca(ca: CA) -> None:
    """make_ca writes ca.pem and ca.key; the certificate is a CA named as asked, signed by itself."""
    assert ca.cert.name == "ca.pem"
    assert ca.key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = crypto.load_certificate(crypto.FILETYPE_PEM, ca.cert.read_bytes())
    assert _cn(ca.cert.read_bytes()) == "Test CA"
    assert loaded.to_cryptography().issuer == loaded.to_cryptography().subject
    constraints = ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    assert ca.name == "Test CA"
    crypto.X509StoreContext(_store(ca.cert), loaded).verify_certificate()


def test_issued_files_load_and_chain_verifies(ca: CA, tmp_path: Path) -> None:
    """issue writes <stem>.pem (leaf then CA) and an unencrypted PKCS#8 <stem>.key; the leaf verifies."""
    issued = ca.issue(tmp_path, "server", dns=["proxy.test"])
    assert issued.cert == tmp_path / "server.pem"
    assert issued.key == tmp_path / "server.key"
    assert issued.ca == ca.cert
    blocks = _pem_blocks(issued.cert)
    assert len(blocks) == 2
    assert x509.load_pem_x509_certificate(blocks[1] + b"-----END CERTIFICATE-----\n") == ca.certificate
    key_pem = issued.key.read_bytes()
    assert key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    crypto.load_privatekey(crypto.FILETYPE_PEM, key_pem)
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(issued.cert, issued.key)
    _verify(issued, ca.cert)


def test_subject_alt_names_and_common_name(ca: CA, tmp_path: Path) -> None:
    """DNS, IP and URI SubjectAltNames are present; the common name defaults to the first DNS name."""
    issued = ca.issue(
        tmp_path,
        "domain",
        dns=["proxy.test", "localhost"],
        ips=["127.0.0.1", "::1"],
        uris=["sip:example.com"],
    )
    san = issued.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["proxy.test", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["sip:example.com"]
    assert _cn(issued.cert.read_bytes()) == "proxy.test"


def test_common_name_fallbacks_and_no_san(ca: CA, tmp_path: Path) -> None:
    """Without names the CN is the stem and there is no SAN; an explicit common_name wins."""
    bare = ca.issue(tmp_path, "bare")
    with pytest.raises(x509.ExtensionNotFound):
        bare.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert _cn(bare.leaf_pem) == "bare"
    by_ip = ca.issue(tmp_path, "ip", ips=["127.0.0.1"])
    assert _cn(by_ip.leaf_pem) == "127.0.0.1"
    named = ca.issue(tmp_path, "named", dns=["a.test"], common_name="Alice")
    assert _cn(named.leaf_pem) == "Alice"


@pytest.mark.parametrize(
    ("server", "client", "expected"),
    [
        (True, False, [ExtendedKeyUsageOID.SERVER_AUTH]),
        (False, True, [ExtendedKeyUsageOID.CLIENT_AUTH]),
        (True, True, [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
    ],
)
def test_extended_key_usage(
    ca: CA, tmp_path: Path, server: bool, client: bool, expected: list[x509.ObjectIdentifier]
) -> None:
    """server and client choose serverAuth and clientAuth in ExtendedKeyUsage."""
    issued = ca.issue(tmp_path, "leaf", dns=["a.test"], server=server, client=client)
    usage = issued.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == expected


def test_no_extended_key_usage_when_neither(ca: CA, tmp_path: Path) -> None:
    """With server=False and client=False the certificate has no ExtendedKeyUsage."""
    issued = ca.issue(tmp_path, "leaf", dns=["a.test"], server=False)
    with pytest.raises(x509.ExtensionNotFound):
        issued.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)


def test_expired_certificate_is_expired(ca: CA, tmp_path: Path) -> None:
    """A not_after in the past makes a certificate that OpenSSL rejects as expired."""
    issued = ca.issue(tmp_path, "old", dns=["a.test"], not_after=datetime.now(UTC) - timedelta(days=1))
    assert issued.certificate.not_valid_after_utc < datetime.now(UTC)
    assert issued.certificate.not_valid_before_utc < issued.certificate.not_valid_after_utc
    assert crypto.load_certificate(crypto.FILETYPE_PEM, issued.cert.read_bytes()).has_expired()
    with pytest.raises(crypto.X509StoreContextError, match="expired"):
        _verify(issued, ca.cert)


def test_dates_are_honoured_and_checked(ca: CA, tmp_path: Path) -> None:
    """Explicit not_before/not_after are written as given; an empty validity period is refused."""
    start = datetime(2030, 1, 1, tzinfo=UTC)
    end = datetime(2031, 1, 1, tzinfo=UTC)
    issued = ca.issue(tmp_path, "future", dns=["a.test"], not_before=start, not_after=end)
    assert issued.certificate.not_valid_before_utc == start
    assert issued.certificate.not_valid_after_utc == end
    with pytest.raises(crypto.X509StoreContextError, match="not yet valid"):
        _verify(issued, ca.cert)
    with pytest.raises(ValueError, match="not before"):
        ca.issue(tmp_path, "empty", not_before=end, not_after=start)


def test_other_ca_does_not_verify(ca: CA, tmp_path: Path) -> None:
    """A certificate from a different CA fails verification against the first CA and passes against its own."""
    other = make_ca(tmp_path / "other", "Other CA")
    assert other.cert != ca.cert
    rogue = other.issue(tmp_path, "rogue", dns=["a.test"])
    assert rogue.ca == other.cert
    with pytest.raises(crypto.X509StoreContextError):
        _verify(rogue, ca.cert)
    _verify(rogue, other.cert)


def test_stdlib_tls_handshake_checks_names(ca: CA, tmp_path: Path) -> None:
    """stdlib ssl accepts the server certificate by DNS and IP SAN and refuses another host name."""
    issued = ca.issue(tmp_path, "server", dns=["proxy.test"], ips=["127.0.0.1"])
    client = _handshake(_server_context(issued), _client_context(ca.cert), "proxy.test")
    peer = client.getpeercert()
    assert peer is not None
    assert peer["subject"] == (
        (("organizationName", "sipgate-proxy tests"),),
        (("commonName", "proxy.test"),),
    )
    _handshake(_server_context(issued), _client_context(ca.cert), "127.0.0.1")
    with pytest.raises(ssl.SSLCertVerificationError, match="match"):
        _handshake(_server_context(issued), _client_context(ca.cert), "elsewhere.test")


def test_stdlib_tls_handshake_refuses_expired_and_foreign(ca: CA, tmp_path: Path) -> None:
    """stdlib ssl refuses an expired server certificate and one from an unknown CA."""
    expired = ca.issue(tmp_path, "old", dns=["proxy.test"], not_after=datetime.now(UTC) - timedelta(hours=2))
    with pytest.raises(ssl.SSLCertVerificationError, match="expired"):
        _handshake(_server_context(expired), _client_context(ca.cert), "proxy.test")
    rogue = make_ca(tmp_path / "other", "Other CA").issue(tmp_path, "rogue", dns=["proxy.test"])
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(_server_context(rogue), _client_context(ca.cert), "proxy.test")


def test_client_certificate_is_accepted_by_a_requiring_server(ca: CA, tmp_path: Path) -> None:
    """A clientAuth certificate from the CA satisfies a server that requires client certificates."""
    server_cert = ca.issue(tmp_path, "server", dns=["proxy.test"])
    client_cert = ca.issue(tmp_path, "client", dns=["caller.test"], client=True, server=False)
    server = _server_context(server_cert)
    server.verify_mode = ssl.CERT_REQUIRED
    server.load_verify_locations(ca.cert)
    client = _client_context(ca.cert)
    client.load_cert_chain(client_cert.cert, client_cert.key)
    _handshake(server, client, "proxy.test")
