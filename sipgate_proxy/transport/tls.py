"""TLS with pyOpenSSL: listener contexts with SNI and client certificates,
outbound contexts that verify the peer's identity (RFC 5922) with service_identity.

Both sides are Twisted connection creators (``IOpenSSLServerConnectionCreator``,
``IOpenSSLClientConnectionCreator``) for :class:`twisted.protocols.tls.TLSMemoryBIOFactory`.
They build a new ``OpenSSL.SSL.Connection`` per connection from contexts they
hold, so replacing those contexts (a reload after a certificate was renewed)
changes what new connections see and leaves established ones alone.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from OpenSSL import SSL, crypto
from service_identity import VerificationError
from service_identity.hazmat import DNS_ID, URI_ID, IPAddress_ID, URIPattern, verify_service_identity
from service_identity.pyopenssl import extract_patterns
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IOpenSSLServerConnectionCreator
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..config_tls import TlsClientSettings, TlsPeer, TlsServerSettings
from ..sip.settings import is_ip

log = Logger(namespace="sipgate_proxy.transport")

_VERSIONS = {"1.2": SSL.TLS1_2_VERSION, "1.3": SSL.TLS1_3_VERSION}
#: TLS 1.2 suites when the config names none: forward secret AEAD only
DEFAULT_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS"
_SESSION_ID = b"sipgate-proxy"


class TlsSetupError(Exception):
    """A certificate, key, CA file or cipher string cannot be used; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def openssl_reason(error: BaseException) -> str:
    """What OpenSSL said about ``error``, in a line."""
    if isinstance(error, SSL.Error) and error.args and isinstance(error.args[0], list):
        parts = [item[2] for item in error.args[0] if len(item) >= 3 and item[2]]
        if parts:
            return "; ".join(parts)
    return str(error) or type(error).__name__


def _base_context(min_version: str, ciphers: str | None) -> SSL.Context:
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(_VERSIONS[min_version])
    context.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE)
    try:
        context.set_cipher_list((ciphers or DEFAULT_CIPHERS).encode("ascii"))
    except SSL.Error as error:
        raise TlsSetupError(f"no usable cipher in {ciphers!r}: {openssl_reason(error)}") from None
    return context


def _load_pair(context: SSL.Context, cert: str, key: str) -> None:
    try:
        context.use_certificate_chain_file(cert)
    except SSL.Error as error:
        raise TlsSetupError(f"cannot load certificate chain {cert}: {openssl_reason(error)}") from None
    try:
        context.use_privatekey_file(key)
    except SSL.Error as error:
        reason = openssl_reason(error)
        if "mismatch" in reason:
            raise TlsSetupError(f"private key {key} does not belong to certificate {cert}") from None
        raise TlsSetupError(f"cannot load private key {key}: {reason}") from None
    try:
        context.check_privatekey()
    except SSL.Error:
        raise TlsSetupError(f"private key {key} does not belong to certificate {cert}") from None


def _load_ca(context: SSL.Context, ca_file: str) -> None:
    try:
        context.load_verify_locations(ca_file)
    except SSL.Error as error:
        raise TlsSetupError(f"cannot load CA certificates from {ca_file}: {openssl_reason(error)}") from None


def check_certificate(cert: str, key: str) -> None:
    """Raise TlsSetupError unless ``cert`` (a PEM chain) and ``key`` load and match."""
    _load_pair(_base_context("1.2", None), cert, key)


def check_ca_file(ca_file: str) -> None:
    """Raise TlsSetupError unless ``ca_file`` holds at least one PEM certificate."""
    try:
        with open(ca_file, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise TlsSetupError(f"cannot read {ca_file}: {error.strerror}") from None
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise TlsSetupError(f"{ca_file} holds no PEM certificate")
    _load_ca(_base_context("1.2", None), ca_file)


def check_ciphers(ciphers: str) -> None:
    _base_context("1.2", ciphers)


#: OpenSSL X509_V_ERR_* codes worth a plain word in the log
_VERIFY_ERRORS = {
    2: "issuer certificate not found",
    7: "certificate signature failure",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    18: "self-signed certificate",
    19: "self-signed certificate in the chain",
    20: "unable to get local issuer certificate (not signed by a trusted CA)",
    21: "unable to verify the first certificate",
    23: "certificate revoked",
    26: "unsupported certificate purpose",
}


def _accept_verified(connection: Any, cert: Any, errno: int, depth: int, ok: int) -> bool:
    # OpenSSL's own chain verdict (trusted root, validity period) decides;
    # a refusal is told to the connection so that the log can say why
    if not ok:
        reason = _VERIFY_ERRORS.get(errno, f"certificate verify error {errno}")
        subject = cert.get_subject().CN if cert is not None else None
        if subject:
            reason = f"{reason} ({subject})"
        _tell_refused(connection, reason)
    return bool(ok)


def _tell_refused(connection: SSL.Connection, reason: str) -> None:
    """Give the SIP connection under the TLS layer the reason it is refused, for its log line."""
    wrapped = getattr(connection.get_app_data(), "wrappedProtocol", None)
    if wrapped is not None and hasattr(wrapped, "tls_refused"):
        wrapped.tls_refused(reason)


# -- listeners ---------------------------------------------------------------


def _server_context(settings: TlsServerSettings, cert: str, key: str) -> SSL.Context:
    context = _base_context(settings.min_version, settings.ciphers)
    _load_pair(context, cert, key)
    context.set_session_id(_SESSION_ID)
    if settings.client_cert != "none" and settings.client_ca is not None:
        _load_ca(context, settings.client_ca)
        context.load_client_ca(settings.client_ca.encode())
        mode = SSL.VERIFY_PEER
        if settings.client_cert == "required":
            mode |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT
        context.set_verify(mode, _accept_verified)
    return context


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """The contexts of one TLS listener: a default certificate and one per SNI name."""

    def __init__(self, settings: TlsServerSettings) -> None:
        self.default: SSL.Context
        self.by_name: dict[str, SSL.Context] = {}
        self.update(settings)

    def update(self, settings: TlsServerSettings) -> None:
        """Load ``settings`` (raises TlsSetupError); new connections use them."""
        first = settings.certificates[0]
        default = _server_context(settings, first.cert, first.key)
        by_name: dict[str, SSL.Context] = {}
        for extra in settings.certificates[1:]:
            context = _server_context(settings, extra.cert, extra.key)
            for name in extra.names:
                by_name.setdefault(name, context)
        default.set_tlsext_servername_callback(self._choose)
        self.default, self.by_name = default, by_name

    def _choose(self, connection: SSL.Connection) -> None:
        name = connection.get_servername()
        if not name:
            return
        context = self.by_name.get(name.decode("ascii", "replace").lower().rstrip("."))
        if context is not None:
            connection.set_context(context)

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self.default, None)
        connection.set_app_data(tlsProtocol)
        return connection


# -- outbound ----------------------------------------------------------------


def verify_identity(cert: Any, name: str) -> None:
    """RFC 5922 7.1: a SIP URI in subjectAltName names the SIP domain; without
    one, a DNS name; an IP literal next hop needs that IP address. Raises
    :class:`service_identity.VerificationError` on a mismatch."""
    patterns = extract_patterns(cert)
    if is_ip(name):
        verify_service_identity(patterns, [IPAddress_ID(name)], [])
        return
    sip_uris = [p for p in patterns if isinstance(p, URIPattern) and p.protocol_pattern == b"sip"]
    if sip_uris:
        verify_service_identity(patterns, [URI_ID(f"sip:{name}")], [])
    else:
        verify_service_identity(patterns, [DNS_ID(name)], [])


def _describe(cert: Any) -> str:
    patterns = extract_patterns(cert)
    names = []
    for pattern in patterns:
        text = getattr(pattern, "pattern", None)
        if text is None and isinstance(pattern, URIPattern):
            text = pattern.protocol_pattern + b":" + pattern.dns_pattern.pattern
        names.append(text.decode("ascii", "replace") if isinstance(text, bytes) else str(text))
    return ", ".join(names) or f"CN={cert.get_subject().CN}"


@implementer(IOpenSSLClientConnectionCreator)
class ClientTLS:
    """One outbound TLS identity: trust roots, optional client certificate, the name to verify."""

    def __init__(self, settings: TlsClientSettings, peer: TlsPeer | None, server_name: str) -> None:
        self.server_name = server_name
        ca_file = peer.ca_file if peer is not None and peer.ca_file else settings.ca_file
        cert = peer.cert if peer is not None and peer.cert else settings.cert
        key = peer.key if peer is not None and peer.key else settings.key
        self.verify = peer.verify if peer is not None else settings.verify
        context = _base_context(settings.min_version, settings.ciphers)
        if cert is not None and key is not None:
            _load_pair(context, cert, key)
        if self.verify:
            if ca_file is not None:
                _load_ca(context, ca_file)
            else:
                context.set_default_verify_paths()
            context.set_verify(SSL.VERIFY_PEER, _accept_verified)
            context.set_info_callback(self._info)
        self.context = context

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self.context, None)
        connection.set_app_data(tlsProtocol)
        if not is_ip(self.server_name):
            connection.set_tlsext_host_name(self.server_name.encode("idna"))
        return connection

    def _info(self, connection: SSL.Connection, where: int, ret: int) -> None:
        if not where & SSL.SSL_CB_HANDSHAKE_DONE:
            return
        cert = connection.get_peer_certificate()
        try:
            if cert is None:
                raise VerificationError(errors=[])
            verify_identity(cert, self.server_name)
        except VerificationError:
            presented = _describe(cert) if cert is not None else "no certificate"
            reason = f"certificate is for {presented}, not {self.server_name}"
            _tell_refused(connection, reason)
            connection.get_app_data().failVerification(Failure(TlsSetupError(reason)))


class ClientTLSCache:
    """Client creators by (peer entry, name to verify), built on first use."""

    def __init__(self, settings: TlsClientSettings, limit: int = 1000) -> None:
        self.settings = settings
        self.limit = limit
        self._made: OrderedDict[tuple[TlsPeer | None, str], ClientTLS] = OrderedDict()

    def creator(self, host: str, port: int, server_name: str | None) -> ClientTLS:
        """The creator for a next hop at ``host:port`` routed to as ``server_name``."""
        peer = self.settings.peer(server_name or host, port) or self.settings.peer(host, port)
        name = (peer.server_name if peer is not None and peer.server_name else None) or server_name or host
        key = (peer, name.lower())
        made = self._made.get(key)
        if made is None:
            made = ClientTLS(self.settings, peer, name.lower())
            self._made[key] = made
            if len(self._made) > self.limit:
                self._made.popitem(last=False)
        return made


def load_pem_certificate(path: str) -> Any:
    """The first certificate of a PEM file (tests and logs)."""
    with open(path, "rb") as handle:
        return crypto.load_certificate(crypto.FILETYPE_PEM, handle.read())
