"""TOML configuration -> frozen dataclasses.

Every error names the file, the key and what was expected, in one line, so
that an operator sees at once what to fix. Router tables are kept as plain
mappings here and validated by each router factory (which raises
:class:`ConfigError` with the key inside its own table).
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config_base import ConfigError as ConfigError
from .config_base import Table, ip_address
from .config_base import type_name as type_name
from .config_tls import TlsClientSettings, TlsServerSettings, client_tls, listener_tls, reject_tls_keys
from .security.admission import AdmissionSettings
from .security.flood import FloodSettings
from .security.peers import TrustedPeer

TRANSPORTS = ("udp", "tcp", "tls")
LOG_LEVELS = ("debug", "info", "warn", "error")


class RouterTable(dict[str, Any]):
    """A router's own config table; ``base_dir`` is the config file's folder,
    against which a router resolves relative file names (rules files ...)."""

    def __init__(self, data: Mapping[str, Any], base_dir: str = ".") -> None:
        super().__init__(data)
        self.base_dir = base_dir

    def path(self, name: str) -> str:
        """``name`` resolved against the config file's folder."""
        return str(Path(self.base_dir, name))


@dataclass(frozen=True, slots=True)
class Listener:
    transport: str
    address: str
    port: int
    #: host and port written into Via and Record-Route; default: address/port
    advertise: str | None = None
    advertise_port: int | None = None
    #: certificates and client-certificate policy of a TLS listener
    tls: TlsServerSettings | None = None

    @property
    def name(self) -> str:
        """How the core and the logs name this listener: ``transport:address:port``."""
        return f"{self.transport}:{self.address}:{self.port}"


@dataclass(frozen=True, slots=True)
class ProxySettings:
    domains: tuple[str, ...] = ()
    record_route: bool = True
    server: str = "sipgate-proxy"


@dataclass(frozen=True, slots=True)
class Timers:
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    timer_c: float = 180.0


@dataclass(frozen=True, slots=True)
class Limits:
    max_message_size: int = 65535
    max_headers: int = 128
    max_line_length: int = 8192
    udp_mtu: int = 1300
    max_transactions: int = 200_000
    max_connections: int = 10_000
    tcp_idle_timeout: float = 600.0
    #: receive and send buffer of each UDP socket, in bytes (bursts wait here)
    udp_buffer: int = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: str = "info"


@dataclass(frozen=True, slots=True)
class DnsSettings:
    #: names answered without asking DNS (like /etc/hosts)
    hosts: Mapping[str, str] = field(default_factory=dict)
    #: "system": other names through DNS (``servers``, else /etc/resolv.conf); "hosts": never ask
    mode: str = "system"
    #: DNS servers to ask (host, port); empty: those of /etc/resolv.conf
    servers: tuple[tuple[str, int], ...] = ()
    #: seconds one query may take, all retries included
    timeout: float = 5.0
    #: answers are kept as long as their TTL says, within these bounds (seconds)
    min_ttl: float = 0.0
    max_ttl: float = 3600.0
    #: how long "no such name" / "no such record" is remembered
    negative_ttl: float = 30.0


@dataclass(frozen=True, slots=True)
class RoutingSettings:
    routers: tuple[str, ...] = ("static",)
    plugin_dirs: tuple[str, ...] = ()
    #: final statuses (and timeouts, 408) that move a serial request on
    failover: tuple[int, ...] = (408, 500, 502, 503, 504)
    follow_redirects: bool = False
    max_redirects: int = 3
    #: on reload, routers carry over destination health and similar state
    keep_state_on_reload: bool = True
    #: each router's own table, keyed by router name
    tables: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


DEFAULT_LISTENERS = (
    Listener("udp", "127.0.0.1", 5060),
    Listener("tcp", "127.0.0.1", 5060),
)


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    flood: FloodSettings = field(default_factory=FloodSettings)
    trusted: tuple[TrustedPeer, ...] = ()
    admission: AdmissionSettings = field(default_factory=AdmissionSettings)


@dataclass(frozen=True, slots=True)
class Config:
    path: str = "<defaults>"
    proxy: ProxySettings = ProxySettings()
    listeners: tuple[Listener, ...] = DEFAULT_LISTENERS
    timers: Timers = Timers()
    limits: Limits = Limits()
    log: LogSettings = LogSettings()
    routing: RoutingSettings = RoutingSettings()
    dns: DnsSettings = DnsSettings()
    security: SecuritySettings = SecuritySettings()
    #: outbound TLS: trust roots, per-trunk identities and client certificates
    tls: TlsClientSettings = field(default_factory=TlsClientSettings)


def check_hop_uri(value: str, key: str) -> str:
    """Validate a next-hop URI of a router table: sip:/sips: with a host and a
    known transport. Returns the text; raises ConfigError naming ``key``."""
    from .sip.errors import SIPError
    from .sip.uri import parse_uri

    try:
        hop = parse_uri(value)
    except SIPError as error:
        raise ConfigError(key, f"not a valid SIP URI: {error.reason}") from None
    if hop.scheme not in ("sip", "sips") or not hop.host:
        raise ConfigError(key, "expected a sip: or sips: URI with a host")
    if hop.transport not in (None, "udp", "tcp", "tls"):
        raise ConfigError(key, f"unknown transport {hop.transport!r}")
    return value


def _dns_server(text: str, key: str) -> tuple[str, int]:
    """``"192.0.2.53"``, ``"192.0.2.53:5353"`` or ``"[2001:db8::53]:53"``."""
    host, port = text, 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            port = _port(rest[1:], key, text)
    elif text.count(":") == 1:
        host, _, rest = text.partition(":")
        port = _port(rest, key, text)
    return ip_address(host, key), port


def _port(text: str, key: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ConfigError(key, f"expected an address such as '192.0.2.53' or '192.0.2.53:5353', got {whole!r}")
    return int(text)


def _listeners(root: Table, base: Path) -> tuple[Listener, ...]:
    expected = "expected one or more [[listen]] tables"
    tables = root.tables("listen", expected, "expected a table")
    if tables is None:
        return DEFAULT_LISTENERS
    if not tables:
        raise ConfigError("listen", expected)
    result = []
    seen = set()
    for table in tables:
        prefix = table.prefix
        transport = table.string("transport", None, TRANSPORTS)
        if transport is None:
            raise ConfigError(table.key("transport"), f"required: one of {', '.join(TRANSPORTS)}")
        address = ip_address(table.string("address", "127.0.0.1") or "", table.key("address"))
        port = table.integer("port", 5060, 0, 65535)
        advertise = table.string("advertise", None)
        advertise_port = table.integer("advertise_port", 0, 0, 65535) or None
        tls = None
        if transport == "tls":
            tls = listener_tls(table, base)
        else:
            reject_tls_keys(table, transport)
        table.finish()
        if port and (transport, address, port) in seen:
            raise ConfigError(prefix, f"{transport} {address}:{port} is listed twice")
        seen.add((transport, address, port))
        result.append(Listener(transport, address, port, advertise, advertise_port, tls))
    return tuple(result)


def _trusted(root: Table) -> tuple[TrustedPeer, ...]:
    peers = []
    for table in root.tables("trusted", "expected [[trusted]] tables", "expected a table with cidr and tag") or ():
        cidr = table.string("cidr", None)
        if cidr is None:
            raise ConfigError(table.key("cidr"), "required: a network such as '192.0.2.0/24'")
        try:
            network = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ConfigError(table.key("cidr"), f"expected a network such as '192.0.2.0/24', got {cidr!r}") from None
        tag = table.string("tag", None) or str(network)
        port = table.integer("port", 0, 0, 65535) or None
        transport = table.string("transport", None, TRANSPORTS)
        table.finish()
        peers.append(TrustedPeer(network, tag, port, transport))
    return tuple(peers)


def parse_config(data: Mapping[str, Any], path: str = "<config>") -> Config:
    """Validate a parsed TOML document; raise :class:`ConfigError`."""
    try:
        return _parse(data, path)
    except ConfigError as error:
        raise error.with_path(path) from None


def _parse(data: Mapping[str, Any], path: str) -> Config:
    root = Table(data, "")

    proxy_t = root.table("proxy")
    proxy = ProxySettings(
        domains=tuple(d.lower() for d in proxy_t.strings("domains", ())),
        record_route=proxy_t.boolean("record_route", True),
        server=proxy_t.string("server", "sipgate-proxy") or "sipgate-proxy",
    )
    proxy_t.finish()

    base_dir = Path(path).parent
    listeners = _listeners(root, base_dir)
    root.used.add("tls")
    tls = client_tls(data.get("tls"), base_dir)

    timers_t = root.table("timers")
    t1 = timers_t.number("t1", 0.5, 0.01, 60.0)
    timers = Timers(
        t1=t1,
        t2=timers_t.number("t2", 4.0, 0.01, 600.0),
        t4=timers_t.number("t4", 5.0, 0.01, 600.0),
        timer_c=timers_t.number("timer_c", 180.0, 1.0, 86400.0),
    )
    if timers.t2 < t1:
        raise ConfigError("timers.t2", f"expected at least t1 ({t1}), got {timers.t2}")
    timers_t.finish()

    limits_t = root.table("limits")
    limits = Limits(
        max_message_size=limits_t.integer("max_message_size", 65535, 1024, 16 * 1024 * 1024),
        max_headers=limits_t.integer("max_headers", 128, 8, 10_000),
        max_line_length=limits_t.integer("max_line_length", 8192, 128, 1024 * 1024),
        udp_mtu=limits_t.integer("udp_mtu", 1300, 200, 65535),
        max_transactions=limits_t.integer("max_transactions", 200_000, 10, 100_000_000),
        max_connections=limits_t.integer("max_connections", 10_000, 1, 1_000_000),
        tcp_idle_timeout=limits_t.number("tcp_idle_timeout", 600.0, 1.0, 86400.0),
        udp_buffer=limits_t.integer("udp_buffer", 8 * 1024 * 1024, 65536, 1024 * 1024 * 1024),
    )
    limits_t.finish()

    log_t = root.table("log")
    log = LogSettings(level=log_t.string("level", "info", LOG_LEVELS) or "info")
    log_t.finish()

    dns_t = root.table("dns")
    mode = dns_t.string("mode", "system", ("system", "hosts")) or "system"
    hosts_t = dns_t.table("hosts")
    hosts: dict[str, str] = {}
    for name, address in hosts_t.data.items():
        hosts_t.used.add(name)
        if not isinstance(address, str):
            raise ConfigError(hosts_t.key(name), "expected an IP address string")
        hosts[name.lower()] = ip_address(address, hosts_t.key(name))
    servers = tuple(_dns_server(text, f"dns.servers[{i}]") for i, text in enumerate(dns_t.strings("servers", ())))
    dns = DnsSettings(
        hosts=hosts,
        mode=mode,
        servers=servers,
        timeout=dns_t.number("timeout", 5.0, 0.1, 60.0),
        min_ttl=dns_t.number("min_ttl", 0.0, 0.0, 86400.0),
        max_ttl=dns_t.number("max_ttl", 3600.0, 0.0, 7 * 86400.0),
        negative_ttl=dns_t.number("negative_ttl", 30.0, 0.0, 86400.0),
    )
    if dns.max_ttl < dns.min_ttl:
        raise ConfigError("dns.max_ttl", f"expected at least min_ttl ({dns.min_ttl}), got {dns.max_ttl}")
    dns_t.finish()

    security_t = root.table("security")
    flood = FloodSettings(
        limit=security_t.integer("flood_limit", 0, 0, 1_000_000),
        window=security_t.number("flood_window", 2.0, 0.1, 3600.0),
        ban=security_t.number("flood_ban", 300.0, 1.0, 86400.0),
    )
    security_t.finish()
    admission_t = root.table("admission")
    trunks_t = admission_t.table("per_trunk")
    per_trunk = {}
    for tag in trunks_t.data:
        per_trunk[tag] = trunks_t.integer(tag, 0, 0, 10_000_000)
    trunks_t.finish()
    admission = AdmissionSettings(
        per_account=admission_t.integer("per_account", 0, 0, 10_000_000),
        per_trunk=per_trunk,
        status=admission_t.integer("status", 503, 486, 503),
        retry_after=admission_t.integer("retry_after", 30, 0, 86400),
        dialog_timeout=admission_t.number("dialog_timeout", 4 * 3600.0, 60.0, 7 * 86400.0),
    )
    if admission.status not in (486, 503):
        raise ConfigError("admission.status", f"expected 503 or 486, got {admission.status}")
    admission_t.finish()
    security = SecuritySettings(flood=flood, trusted=_trusted(root), admission=admission)

    routing_t = root.table("routing")
    routers = routing_t.strings("routers", ("static",))
    if len(set(routers)) != len(routers):
        raise ConfigError("routing.routers", "a router is named twice")
    plugin_dirs = routing_t.strings("plugin_dirs", ())
    failover_raw = routing_t._get("failover")
    failover = (408, 500, 502, 503, 504)
    if failover_raw is not None:
        if not isinstance(failover_raw, list) or not all(
            isinstance(code, int) and not isinstance(code, bool) and 300 <= code <= 699 for code in failover_raw
        ):
            raise ConfigError("routing.failover", "expected a list of final statuses from 300 to 699")
        failover = tuple(failover_raw)
    follow_redirects = routing_t.boolean("follow_redirects", False)
    max_redirects = routing_t.integer("max_redirects", 3, 1, 20)
    keep_state = routing_t.boolean("keep_state_on_reload", True)
    base = Path(path).parent
    plugin_dirs = tuple(str((base / d).resolve()) for d in plugin_dirs)
    tables: dict[str, Mapping[str, Any]] = {}
    for name, value in routing_t.data.items():
        if name in ("routers", "plugin_dirs", "failover", "follow_redirects", "max_redirects", "keep_state_on_reload"):
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"routing.{name}", "expected a table of router settings")
        if name not in routers:
            raise ConfigError(f"routing.{name}", f"settings for router {name!r}, which routing.routers does not name")
        routing_t.used.add(name)
        tables[name] = RouterTable(value, str(base))
    routing_t.finish()
    routing = RoutingSettings(
        routers=routers,
        plugin_dirs=plugin_dirs,
        tables=tables,
        failover=failover,
        follow_redirects=follow_redirects,
        max_redirects=max_redirects,
        keep_state_on_reload=keep_state,
    )

    root.finish()
    return Config(
        path=path,
        proxy=proxy,
        listeners=listeners,
        timers=timers,
        limits=limits,
        log=log,
        routing=routing,
        dns=dns,
        security=security,
        tls=tls,
    )


def load_config(path: str) -> Config:
    """Read and validate the TOML file at ``path``."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as error:
        raise ConfigError("(file)", f"cannot read: {error.strerror}", path) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError("(syntax)", f"not valid TOML: {error}", path) from None
    return parse_config(data, path)
