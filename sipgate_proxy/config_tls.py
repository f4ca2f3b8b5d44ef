"""TLS settings: certificates of TLS listeners (with SNI) and outbound TLS to trunks.

A ``[[listen]]`` table with ``transport = "tls"`` carries its certificate::

    [[listen]]
    transport = "tls"
    address = "192.0.2.1"
    port = 5061
    cert = "tls/proxy.pem"        # PEM chain, leaf first
    key = "tls/proxy.key"
    client_cert = "optional"      # none | optional | required
    client_ca = "tls/clients-ca.pem"
    min_version = "1.2"           # "1.2" or "1.3"
    ciphers = "ECDHE+AESGCM:ECDHE+CHACHA20"   # OpenSSL cipher string for TLS 1.2

    [[listen.sni]]                # another certificate for these server names
    names = ["trunk.example.com"]
    cert = "tls/trunk.pem"
    key = "tls/trunk.key"

and ``[tls]`` says how the proxy connects out::

    [tls]
    ca_file = "tls/ca.pem"        # default: the system's trust store
    verify = true

    [[tls.peers]]                 # per trunk: identity, trust roots, client certificate
    host = "gw.carrier.net"       # the next hop's host as routed (name or IP)
    port = 5061                   # optional
    server_name = "carrier.net"   # identity its certificate must carry (default: host)
    ca_file = "tls/carrier-ca.pem"
    cert = "tls/to-carrier.pem"
    key = "tls/to-carrier.key"

Every file is loaded while the config is read, so a missing file, a key that
does not match its certificate or a bad cipher string stops the start (or a
reload) with the file and key named.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config_base import ConfigError, Table

CLIENT_CERT_MODES = ("none", "optional", "required")
MIN_VERSIONS = ("1.2", "1.3")


@dataclass(frozen=True, slots=True)
class CertificateFiles:
    cert: str
    key: str
    #: server names (SNI) this certificate answers; empty for the default one
    names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TlsServerSettings:
    certificates: tuple[CertificateFiles, ...]
    client_cert: str = "none"
    client_ca: str | None = None
    ciphers: str | None = None
    min_version: str = "1.2"


@dataclass(frozen=True, slots=True)
class TlsPeer:
    host: str
    port: int | None = None
    server_name: str | None = None
    ca_file: str | None = None
    cert: str | None = None
    key: str | None = None
    verify: bool = True


@dataclass(frozen=True, slots=True)
class TlsClientSettings:
    ca_file: str | None = None
    verify: bool = True
    cert: str | None = None
    key: str | None = None
    ciphers: str | None = None
    min_version: str = "1.2"
    handshake_timeout: float = 10.0
    peers: tuple[TlsPeer, ...] = ()

    def peer(self, host: str, port: int) -> TlsPeer | None:
        """The ``[[tls.peers]]`` entry for a next hop, the one naming the port first."""
        host = host.lower()
        fallback = None
        for peer in self.peers:
            if peer.host == host:
                if peer.port == port:
                    return peer
                if peer.port is None and fallback is None:
                    fallback = peer
        return fallback


def _file(table: Table, name: str, base: Path, required: bool = False) -> str | None:
    value = table.string(name, None)
    if value is None:
        if required:
            raise ConfigError(table.key(name), "required for a TLS listener: a PEM file")
        return None
    path = base / value
    if not path.is_file():
        raise ConfigError(table.key(name), f"no such file: {path}")
    return str(path)


def _certificate(table: Table, base: Path, names: tuple[str, ...] = ()) -> CertificateFiles:
    from .transport.tls import TlsSetupError, check_certificate

    cert = _file(table, "cert", base, required=True)
    key = _file(table, "key", base, required=True)
    assert cert is not None and key is not None
    try:
        check_certificate(cert, key)
    except TlsSetupError as error:
        which = "key" if "private key" in error.reason else "cert"
        raise ConfigError(table.key(which), error.reason) from None
    return CertificateFiles(cert, key, names)


def _ca_file(table: Table, name: str, base: Path) -> str | None:
    from .transport.tls import TlsSetupError, check_ca_file

    path = _file(table, name, base)
    if path is not None:
        try:
            check_ca_file(path)
        except TlsSetupError as error:
            raise ConfigError(table.key(name), error.reason) from None
    return path


def _ciphers(table: Table) -> str | None:
    from .transport.tls import TlsSetupError, check_ciphers

    ciphers = table.string("ciphers", None)
    if ciphers is not None:
        try:
            check_ciphers(ciphers)
        except TlsSetupError as error:
            raise ConfigError(table.key("ciphers"), error.reason) from None
    return ciphers


def listener_tls(table: Table, base: Path) -> TlsServerSettings:
    """The TLS keys of one ``[[listen]]`` table with ``transport = "tls"``."""
    certificates = [_certificate(table, base)]
    expected = "with names, cert and key"
    for sni in table.tables("sni", f"expected [[listen.sni]] tables {expected}", f"expected a table {expected}") or ():
        names = tuple(name.lower().rstrip(".") for name in sni.strings("names", ()))
        if not names:
            raise ConfigError(sni.key("names"), "required: the server names this certificate answers")
        certificates.append(_certificate(sni, base, names))
        sni.finish()
    client_cert = table.string("client_cert", "none", CLIENT_CERT_MODES) or "none"
    client_ca = _ca_file(table, "client_ca", base)
    if client_cert != "none" and client_ca is None:
        raise ConfigError(table.key("client_ca"), f"required with client_cert = {client_cert!r}: a PEM file of CAs")
    return TlsServerSettings(
        certificates=tuple(certificates),
        client_cert=client_cert,
        client_ca=client_ca,
        ciphers=_ciphers(table),
        min_version=table.string("min_version", "1.2", MIN_VERSIONS) or "1.2",
    )


def reject_tls_keys(table: Table, transport: str) -> None:
    """TLS keys on a UDP or TCP listener are a mistake worth naming."""
    for name in ("cert", "key", "sni", "client_cert", "client_ca", "ciphers", "min_version"):
        if name in table.data:
            raise ConfigError(table.key(name), f'only for transport = "tls", not {transport!r}')


def client_tls(raw: Any, base: Path) -> TlsClientSettings:
    """The ``[tls]`` table."""
    table = Table(raw if raw is not None else {}, "tls")
    if not isinstance(table.data, dict):
        raise ConfigError("tls", "expected a table")
    ca_file = _ca_file(table, "ca_file", base)
    verify = table.boolean("verify", True)
    cert = key = None
    if "cert" in table.data or "key" in table.data:
        pair = _certificate(table, base)
        cert, key = pair.cert, pair.key
    peers = []
    for peer_t in table.tables("peers", "expected [[tls.peers]] tables", "expected a table with host") or ():
        host = peer_t.string("host", None)
        if not host:
            raise ConfigError(peer_t.key("host"), "required: the next hop's host name or IP address")
        port = peer_t.integer("port", 0, 0, 65535) or None
        server_name = peer_t.string("server_name", None)
        peer_ca = _ca_file(peer_t, "ca_file", base)
        peer_cert = peer_key = None
        if "cert" in peer_t.data or "key" in peer_t.data:
            pair = _certificate(peer_t, base)
            peer_cert, peer_key = pair.cert, pair.key
        peer_verify = peer_t.boolean("verify", verify)
        peer_t.finish()
        peers.append(
            TlsPeer(
                host=host.lower(),
                port=port,
                server_name=server_name.lower() if server_name else None,
                ca_file=peer_ca,
                cert=peer_cert,
                key=peer_key,
                verify=peer_verify,
            )
        )
    settings = TlsClientSettings(
        ca_file=ca_file,
        verify=verify,
        cert=cert,
        key=key,
        ciphers=_ciphers(table),
        min_version=table.string("min_version", "1.2", MIN_VERSIONS) or "1.2",
        handshake_timeout=table.number("handshake_timeout", 10.0, 0.1, 600.0),
        peers=tuple(peers),
    )
    table.finish()
    return settings
