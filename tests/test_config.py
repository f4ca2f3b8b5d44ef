"""Tests for sipgate_proxy.config: TOML -> frozen dataclasses, one-line errors naming file and key."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

import pytest

from sipgate_proxy.config import (
    DEFAULT_LISTENERS,
    Config,
    ConfigError,
    Limits,
    Listener,
    LogSettings,
    ProxySettings,
    Timers,
    load_config,
    parse_config,
)

SHIPPED = Path(__file__).resolve().parents[1] / "etc" / "sipgate-proxy.toml"


def write(tmp_path: Path, text: str, name: str = "proxy.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str) -> Config:
    return load_config(str(write(tmp_path, text)))


def error_for(tmp_path: Path, text: str) -> tuple[ConfigError, str]:
    """Load ``text`` expecting a ConfigError; return it and the file's path."""
    path = str(write(tmp_path, text))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value, path


# --- loading ----------------------------------------------------------------------------


def test_shipped_config_loads() -> None:
    """etc/sipgate-proxy.toml runs as it is: loopback UDP and TCP on 5060, the static router."""
    config = load_config(str(SHIPPED))
    assert config.path == str(SHIPPED)
    assert config.listeners == (
        Listener("udp", "127.0.0.1", 5060),
        Listener("tcp", "127.0.0.1", 5060),
    )
    assert config.timers == Timers()
    assert config.limits == Limits()
    assert config.proxy == ProxySettings()
    assert config.log == LogSettings()
    assert config.routing.routers == ("static",)
    assert "static" in config.routing.tables


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    """An empty file is a valid config: every table takes its defaults."""
    config = load(tmp_path, "")
    defaults = Config()
    for field in dataclasses.fields(Config):
        if field.name != "path":
            assert getattr(config, field.name) == getattr(defaults, field.name), field.name
    assert config.listeners == DEFAULT_LISTENERS
    assert config.routing.routers == ("static",)
    assert config.routing.plugin_dirs == ()
    assert dict(config.routing.tables) == {}


def test_missing_tables_take_defaults(tmp_path: Path) -> None:
    """A file with only some tables keeps the defaults of the others."""
    config = load(tmp_path, '[log]\nlevel = "debug"\n')
    assert config.log.level == "debug"
    assert config.timers == Timers()
    assert config.limits == Limits()
    assert config.proxy == ProxySettings()
    assert config.listeners == DEFAULT_LISTENERS


def test_values_are_read(tmp_path: Path) -> None:
    """Every kind of value lands in its dataclass field, normalised."""
    config = load(
        tmp_path,
        """
[proxy]
domains = ["SIP.Example.NET", "example.net"]
record_route = false
server = "edge-1"

[[listen]]
transport = "udp"
address = "0:0::1"
port = 5070
advertise = "sip.example.net"
advertise_port = 5060

[[listen]]
transport = "tcp"
address = "192.0.2.1"

[timers]
t1 = 1
t2 = 8
t4 = 2.5
timer_c = 120

[limits]
max_message_size = 4096
max_headers = 64
max_line_length = 1024
udp_mtu = 1400
max_transactions = 1000
max_connections = 50
tcp_idle_timeout = 30

[log]
level = "warn"

[routing]
routers = ["lcr", "static"]
plugin_dirs = ["plugins"]

[routing.lcr]
prefixes = { "49" = "gw1" }
""",
    )
    assert config.proxy == ProxySettings(
        domains=("sip.example.net", "example.net"), record_route=False, server="edge-1"
    )
    assert config.listeners == (
        Listener("udp", "::1", 5070, advertise="sip.example.net", advertise_port=5060),
        Listener("tcp", "192.0.2.1", 5060),
    )
    assert config.timers == Timers(t1=1.0, t2=8.0, t4=2.5, timer_c=120.0)
    assert isinstance(config.timers.t1, float)
    assert config.limits == Limits(
        max_message_size=4096,
        max_headers=64,
        max_line_length=1024,
        udp_mtu=1400,
        max_transactions=1000,
        max_connections=50,
        tcp_idle_timeout=30.0,
    )
    assert config.log.level == "warn"
    assert config.routing.routers == ("lcr", "static")
    assert config.routing.plugin_dirs == (str((tmp_path / "plugins").resolve()),)
    assert dict(config.routing.tables) == {"lcr": {"prefixes": {"49": "gw1"}}}


def test_config_is_frozen(tmp_path: Path) -> None:
    """The loaded config cannot be changed by accident."""
    config = load(tmp_path, "")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.timers.t1 = 2.0  # type: ignore[misc]


def test_port_zero_listeners_may_repeat(tmp_path: Path) -> None:
    """Ephemeral ports (0) never clash, so the same transport and address may appear twice."""
    config = load(tmp_path, '[[listen]]\ntransport = "udp"\nport = 0\n[[listen]]\ntransport = "udp"\nport = 0\n')
    assert [listener.port for listener in config.listeners] == [0, 0]


def test_same_port_on_different_transports(tmp_path: Path) -> None:
    """UDP and TCP on the same address and port are two listeners, not a duplicate."""
    config = load(tmp_path, '[[listen]]\ntransport = "udp"\n[[listen]]\ntransport = "tcp"\n')
    assert len(config.listeners) == 2


# --- errors -------------------------------------------------------------------------------------

ERRORS = [
    ("unknown top-level key", "colour = 1\n", "colour", "unknown key"),
    ("unknown key in a table", "[proxy]\nrecord_rout = true\n", "proxy.record_rout", "unknown key"),
    ("unknown key in listen", '[[listen]]\ntransport = "udp"\nhost = "x"\n', "listen[0].host", "unknown key"),
    ("table expected", "proxy = 5\n", "proxy", "expected a table, got an integer"),
    ("bool for int", "[limits]\nmax_headers = true\n", "limits.max_headers", "expected an integer, got a boolean"),
    ("float for int", "[limits]\nmax_headers = 10.5\n", "limits.max_headers", "expected an integer, got a number"),
    (
        "int out of range",
        "[limits]\nmax_headers = 1\n",
        "limits.max_headers",
        "expected an integer from 8 to 10000, got 1",
    ),
    (
        "port out of range",
        '[[listen]]\ntransport = "udp"\nport = 70000\n',
        "listen[0].port",
        "expected an integer from 0 to 65535, got 70000",
    ),
    ("bool for number", "[timers]\nt1 = true\n", "timers.t1", "expected a number of seconds, got a boolean"),
    ("string for number", '[timers]\nt1 = "1"\n', "timers.t1", "expected a number of seconds, got a string"),
    ("number out of range", "[timers]\nt1 = 0\n", "timers.t1", "expected a number from 0.01 to 60.0, got 0"),
    ("int for bool", "[proxy]\nrecord_route = 1\n", "proxy.record_route", "expected true or false, got an integer"),
    ("int for string", "[proxy]\nserver = 1\n", "proxy.server", "expected a string, got an integer"),
    ("list of strings", "[proxy]\ndomains = [1]\n", "proxy.domains", "expected a list of strings"),
    ("bad log level", '[log]\nlevel = "trace"\n', "log.level", "expected one of debug, info, warn, error"),
    (
        "bad IP in listen address",
        '[[listen]]\ntransport = "udp"\naddress = "localhost"\n',
        "listen[0].address",
        "expected an IP address, got 'localhost'",
    ),
    (
        "bad IPv4",
        '[[listen]]\ntransport = "udp"\naddress = "192.0.2.256"\n',
        "listen[0].address",
        "expected an IP address",
    ),
    (
        "bad transport",
        '[[listen]]\ntransport = "sctp"\n',
        "listen[0].transport",
        "expected one of udp, tcp, tls, got 'sctp'",
    ),
    ("missing transport", "[[listen]]\nport = 5060\n", "listen[0].transport", "required: one of udp, tcp, tls"),
    (
        "duplicate listener",
        '[[listen]]\ntransport = "udp"\nport = 5060\n[[listen]]\ntransport = "tcp"\n[[listen]]\ntransport = "udp"\n',
        "listen[2]",
        "udp 127.0.0.1:5060 is listed twice",
    ),
    (
        "duplicate listener spelled differently",
        '[[listen]]\ntransport = "tcp"\naddress = "::1"\n[[listen]]\ntransport = "tcp"\naddress = "0:0::1"\n',
        "listen[1]",
        "tcp ::1:5060 is listed twice",
    ),
    ("listen not tables", "listen = 5\n", "listen", "expected one or more [[listen]] tables"),
    ("listen empty", "listen = []\n", "listen", "expected one or more [[listen]] tables"),
    ("listen item not a table", "listen = [1]\n", "listen[0]", "expected a table"),
    ("t2 below t1", "[timers]\nt1 = 2.0\nt2 = 1.0\n", "timers.t2", "expected at least t1 (2.0), got 1.0"),
    (
        "t2 below default t1",
        "[timers]\nt2 = 0.1\n",
        "timers.t2",
        "expected at least t1 (0.5), got 0.1",
    ),
    (
        "routing table for an unnamed router",
        '[routing]\nrouters = ["static"]\n[routing.lcr]\nx = 1\n',
        "routing.lcr",
        "settings for router 'lcr', which routing.routers does not name",
    ),
    (
        "routing table without routers key",
        "[routing.lcr]\nx = 1\n",
        "routing.lcr",
        "which routing.routers does not name",
    ),
    (
        "router named twice",
        '[routing]\nrouters = ["static", "lcr", "static"]\n',
        "routing.routers",
        "a router is named twice",
    ),
    ("routers not a list", '[routing]\nrouters = "static"\n', "routing.routers", "expected a list of strings"),
    ("routing value not a table", "[routing]\nfoo = 1\n", "routing.foo", "expected a table of router settings"),
    ("TOML syntax error", "[proxy\nserver = 1\n", "(syntax)", "not valid TOML"),
    ("TOML duplicate key", "[log]\nlevel = 'info'\nlevel = 'debug'\n", "(syntax)", "not valid TOML"),
]


@pytest.mark.parametrize(("text", "key", "fragment"), [case[1:] for case in ERRORS], ids=[case[0] for case in ERRORS])
def test_errors_name_file_and_key(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    """Each error is one line, 'file: key: what was expected'."""
    error, path = error_for(tmp_path, text)
    assert error.path == path
    assert error.key == key
    assert fragment in error.message
    assert str(error) == f"{path}: {key}: {error.message}"
    assert "\n" not in str(error)


def test_missing_file(tmp_path: Path) -> None:
    """A file that cannot be read is an error naming the file."""
    path = str(tmp_path / "absent.toml")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.path == path
    assert info.value.key == "(file)"
    assert str(info.value) == f"{path}: (file): cannot read: No such file or directory"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    """A directory given as the config file is a readable error, not a traceback."""
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path))
    assert info.value.key == "(file)"
    assert str(info.value).startswith(f"{tmp_path}: (file): cannot read: ")


def test_syntax_error_names_the_line(tmp_path: Path) -> None:
    """A TOML syntax error says where in the file it is."""
    error, _ = error_for(tmp_path, 'server = "x"\n\n[proxy\n')
    assert "line 3" in error.message


def test_parse_config_names_a_default_path() -> None:
    """parse_config() on a mapping uses '<config>' unless a path is given."""
    with pytest.raises(ConfigError) as info:
        parse_config({"bogus": 1})
    assert str(info.value) == "<config>: bogus: unknown key"
    with pytest.raises(ConfigError) as info:
        parse_config({"bogus": 1}, "site.toml")
    assert str(info.value) == "site.toml: bogus: unknown key"


def test_config_error_without_path_and_with_path() -> None:
    """ConfigError without a file is 'key: message'; with_path adds the file."""
    error = ConfigError("routing.lcr.gateways", "expected a list")
    assert str(error) == "routing.lcr.gateways: expected a list"
    named = error.with_path("a.toml")
    assert str(named) == "a.toml: routing.lcr.gateways: expected a list"
    assert (named.key, named.message, named.path) == ("routing.lcr.gateways", "expected a list", "a.toml")


# -- TLS and DNS keys ------------------------------------------------------------


def _tls_files(tmp_path: Any) -> tuple[str, str, str]:
    from tests.pki import make_ca

    ca = make_ca(tmp_path)
    issued = ca.issue(tmp_path, "proxy", dns=["proxy.test"])
    other = ca.issue(tmp_path, "other", dns=["other.test"])
    return str(issued.cert), str(issued.key), str(other.key)


def test_tls_listener_and_peers_are_read_with_their_files(tmp_path: Any) -> None:
    """A TLS listener with SNI and client certificates and a [tls] peer load; paths are kept."""
    cert, key, _ = _tls_files(tmp_path)
    ca = str(tmp_path / "ca.pem")
    text = f"""
[[listen]]
transport = "tls"
port = 5061
cert = "{cert}"
key = "{key}"
client_cert = "required"
client_ca = "{ca}"
min_version = "1.3"
[[listen.sni]]
names = ["Trunk.Test."]
cert = "{cert}"
key = "{key}"

[tls]
ca_file = "{ca}"
[[tls.peers]]
host = "GW.example.net"
server_name = "carrier.example"
cert = "{cert}"
key = "{key}"
"""
    config = parse_config(tomllib.loads(text), "p.toml")
    tls = config.listeners[0].tls
    assert tls is not None and tls.client_cert == "required" and tls.min_version == "1.3"
    assert [c.names for c in tls.certificates] == [(), ("trunk.test",)]
    peer = config.tls.peer("gw.example.net", 5061)
    assert peer is not None and peer.server_name == "carrier.example" and peer.cert == cert


@pytest.mark.parametrize(
    ("case", "key", "message"),
    [
        ("no cert", "listen[0].cert", "required for a TLS listener"),
        ("missing file", "listen[0].cert", "no such file"),
        ("key of another cert", "listen[0].key", "does not belong to certificate"),
        ("client_ca missing", "listen[0].client_ca", "required with client_cert = 'required'"),
        ("tls key on udp", "listen[0].cert", 'only for transport = "tls"'),
        ("bad ciphers", "listen[0].ciphers", "no usable cipher"),
        ("bad dns server", "dns.servers[0]", "expected an IP address"),
        ("bad dns port", "dns.servers[0]", "expected an address such as"),
    ],
)
def test_tls_and_dns_errors_name_file_and_key(tmp_path: Any, case: str, key: str, message: str) -> None:
    """Every TLS or DNS mistake stops the start naming the file, the key and what is wrong."""
    cert, good_key, other_key = _tls_files(tmp_path)
    listener = {"transport": "tls", "port": 5061, "cert": cert, "key": good_key}
    data: dict[str, Any] = {"listen": [listener]}
    if case == "no cert":
        del listener["cert"]
    elif case == "missing file":
        listener["cert"] = str(tmp_path / "nowhere.pem")
    elif case == "key of another cert":
        listener["key"] = other_key
    elif case == "client_ca missing":
        listener["client_cert"] = "required"
    elif case == "tls key on udp":
        listener["transport"] = "udp"
    elif case == "bad ciphers":
        listener["ciphers"] = "NO-SUCH-CIPHER"
    elif case == "bad dns server":
        data["dns"] = {"servers": ["resolver.example:53"]}
    elif case == "bad dns port":
        data["dns"] = {"servers": ["192.0.2.53:dns"]}
    with pytest.raises(ConfigError) as raised:
        parse_config(data, "p.toml")
    assert str(raised.value).startswith(f"p.toml: {key}: "), str(raised.value)
    assert message in str(raised.value)
