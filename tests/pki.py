"""Certificates made at test time, so that no private key is ever committed.

A test makes a certificate authority in its ``tmp_path`` and issues the
certificates it needs from it::

    ca = make_ca(tmp_path)
    proxy = ca.issue(tmp_path, "proxy", dns=["proxy.test"], ips=["127.0.0.1"])
    other = make_ca(tmp_path / "other", "Other CA").issue(tmp_path, "rogue", dns=["proxy.test"])

``proxy.cert`` then names a PEM file holding the leaf and the CA certificate
(what a server presents), ``proxy.key`` its PKCS#8 key, and ``ca.cert`` the
file a peer trusts. Keys are EC P-256: quick to make, accepted by every TLS
stack the tests use (stdlib ssl, pyOpenSSL, Twisted).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: validity of certificates whose dates the caller does not choose
DEFAULT_LIFETIME = timedelta(days=30)
#: how far back a certificate's validity starts, for clocks a little behind
BACKDATE = timedelta(hours=1)
ORGANIZATION = "sipgate-proxy tests"


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _validity(not_before: datetime | None, not_after: datetime | None) -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    if not_after is None:
        not_after = (not_before or now) + DEFAULT_LIFETIME
    if not_before is None:
        # an expired certificate (not_after in the past) was valid for a day
        not_before = min(now - BACKDATE, not_after - timedelta(days=1))
    if not_before >= not_after:
        raise ValueError(f"not_before {not_before} is not before not_after {not_after}")
    return not_before, not_after


def _key_usage(signs_certificates: bool) -> x509.KeyUsage:
    """Digital signatures (ECDSA handshakes); certificate and CRL signing for a CA."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(data)
    os.chmod(path, 0o600)


@dataclass(frozen=True)
class Issued:
    """A certificate issued by a :class:`CA`, and the files it was written to."""

    #: ``<stem>.pem``: the leaf certificate followed by the CA certificate
    cert: Path
    #: ``<stem>.key``: the leaf's private key, PKCS#8 PEM, unencrypted
    key: Path
    #: ``ca.pem`` of the CA that issued it (what a peer trusts to verify it)
    ca: Path
    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey

    @property
    def leaf_pem(self) -> bytes:
        """The leaf certificate alone, PEM."""
        return _pem(self.certificate)


@dataclass(frozen=True)
class CA:
    """A self-signed certificate authority that issues leaf certificates."""

    #: the CA certificate, PEM (``ca.pem`` unless another stem was asked for)
    cert: Path
    #: the CA's private key, PKCS#8 PEM
    key: Path
    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey

    @property
    def name(self) -> str:
        """The CA's common name."""
        return str(self.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)

    def issue(
        self,
        directory: Path,
        stem: str,
        *,
        dns: Sequence[str] = (),
        ips: Sequence[str] = (),
        uris: Sequence[str] = (),
        common_name: str | None = None,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        client: bool = False,
        server: bool = True,
    ) -> Issued:
        """Issue a leaf certificate; write ``<stem>.pem`` and ``<stem>.key`` in ``directory``.

        ``dns``, ``ips`` and ``uris`` become the SubjectAltName entries
        (``uris`` such as ``"sip:example.com"`` make an RFC 5922 SIP domain
        certificate); without any, the certificate has no SubjectAltName.
        ``common_name`` defaults to the first DNS name, else the first IP
        address, else ``stem``. ``server`` and ``client`` choose the
        ExtendedKeyUsage (serverAuth, clientAuth); with neither there is no
        ExtendedKeyUsage extension. A ``not_after`` in the past makes an
        expired certificate. Dates must be timezone-aware.
        """
        directory.mkdir(parents=True, exist_ok=True)
        key = _new_key()
        start, end = _validity(not_before, not_after)
        if common_name is None:
            common_name = next(iter([*dns, *ips]), stem)
        alt_names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns]
        alt_names += [x509.IPAddress(ipaddress.ip_address(address)) for address in ips]
        alt_names += [x509.UniformResourceIdentifier(uri) for uri in uris]
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
        usages += [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        ca_ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                _key_usage(signs_certificates=False),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
        )
        if alt_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        if usages:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        certificate = builder.sign(self.private_key, hashes.SHA256())
        cert_path = directory / f"{stem}.pem"
        key_path = directory / f"{stem}.key"
        cert_path.write_bytes(_pem(certificate) + _pem(self.certificate))
        _write_key(key_path, key)
        return Issued(cert=cert_path, key=key_path, ca=self.cert, certificate=certificate, private_key=key)


def make_ca(directory: Path, name: str = "Test CA", *, stem: str = "ca") -> CA:
    """Make a self-signed CA; write ``<stem>.pem`` (default ``ca.pem``) and ``<stem>.key``.

    Give a second CA its own directory (or ``stem``) so it does not overwrite
    the first one's files.
    """
    directory.mkdir(parents=True, exist_ok=True)
    key = _new_key()
    start, end = _validity(None, None)
    subject = _name(name)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            _key_usage(signs_certificates=True),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / f"{stem}.pem"
    key_path = directory / f"{stem}.key"
    cert_path.write_bytes(_pem(certificate))
    _write_key(key_path, key)
    return CA(cert=cert_path, key=key_path, certificate=certificate, private_key=key)
