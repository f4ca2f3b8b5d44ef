"""The ``registrar`` router: REGISTER for our domains, and calls to their users.

REGISTER requests whose Request-URI names one of ``domains`` are answered
here (RFC 3261 10.3). Other requests to ``user@domain`` of those domains go to
the user's registered contacts: highest q first, contacts of equal q in
parallel, lower q only when the higher ones failed (Forward mode "grouped").
A contact is reached at the address its REGISTER came from (NAT), or through
its Path (RFC 3327). Unknown users get 404, known users without a binding 480.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.plugin import IPlugin
from zope.interface import implementer

from ..config import ConfigError
from ..interfaces import IRouter, IRouterFactory
from ..routing.decisions import Answer, Forward, RequestContext, Target
from ..sip.errors import SIPError
from ..sip.message import Request
from ..sip.uri import parse_uri, unescape
from .credentials import Credentials, load_credentials
from .digest import Authenticator, NonceCounter, NonceFactory
from .location import Binding
from .registrar import Registrar, RegistrarSettings, aor_of, group_by_q

_KEYS = frozenset(
    {
        "domains",
        "store",
        "path",
        "redis",
        "default_expires",
        "min_expires",
        "max_expires",
        "max_contacts",
        "evict_oldest",
        "auth",
    }
)
_AUTH_KEYS = frozenset(
    {"users_file", "algorithms", "nonce_lifetime", "secret_file", "authenticate_calls", "check_from"}
)


@dataclass(frozen=True, slots=True)
class AuthSettings:
    authenticator: Authenticator
    #: requests other than REGISTER from users of our domains need 407 credentials
    authenticate_calls: bool = True
    #: an authenticated caller may only use its own identity in From
    check_from: bool = True


def target_of(binding: Binding, group: int) -> Target:
    """Where a call to ``binding`` goes.

    Through its Path when it has one (RFC 3327). Otherwise, when the REGISTER
    came from another host than the Contact names (a NAT in between), to the
    address and transport it came from; a TCP binding is then reached over
    the connection it registered on while that lives. A device that
    registered from the host its Contact names is reached at its Contact.
    """
    headers: tuple[tuple[str, str], ...] = ()
    next_hop = None
    if binding.path:
        headers = (("Route", ", ".join(binding.path)),)
    elif binding.received:
        # "transport:host:port", the host possibly IPv6
        transport, _, rest = binding.received.partition(":")
        host, _, port = rest.rpartition(":")
        if host and port.isdigit() and (transport != "udp" or not _same_host(binding.contact, host)):
            shown = f"[{host}]" if ":" in host else host
            next_hop = f"sip:{shown}:{port};transport={transport or 'udp'}"
    return Target(binding.contact, next_hop, headers, label=binding.contact, group=group)


def _same_host(contact: str, host: str) -> bool:
    try:
        target = parse_uri(contact).host
    except SIPError:
        return False
    return target.strip("[]").lower() == host.lower()


@implementer(IRouter)
class RegistrarRouter:
    def __init__(
        self, registrar: Registrar, known_users: frozenset[str] | None = None, auth: AuthSettings | None = None
    ) -> None:
        self.registrar = registrar
        self.known_users = known_users
        self.auth = auth

    def route(self, request: Request, context: RequestContext) -> Any:
        uri = request.uri
        if request.method == "REGISTER":
            if uri.scheme not in ("sip", "sips") or not self.registrar.is_ours(uri.host):
                return None
            if self.auth is not None:
                refused = self._authenticate(request, context, "authorization", request.to.uri)
                if refused is not None:
                    return refused
            return self.registrar.register(request, context)
        if self.auth is not None and self.auth.authenticate_calls and "trusted" not in context.attrs:
            # trusted peers (provider trunks, own servers) are not challenged
            caller = request.from_.uri
            if caller.scheme in ("sip", "sips") and self.registrar.is_ours(caller.host):
                refused = self._authenticate(request, context, "proxy-authorization", caller)
                if refused is not None:
                    return refused
        if uri.scheme not in ("sip", "sips") or not self.registrar.is_ours(uri.host):
            return None
        if uri.user is None:
            return None
        try:
            aor = aor_of(uri)
        except SIPError:
            return None
        found: Deferred[list[Binding]] = self.registrar.store.get(aor, context.now)
        return found.addCallback(self._targets, aor)

    def _authenticate(self, request: Request, context: RequestContext, header: str, identity: Any) -> Answer | None:
        """None when the request may go on; else the 401/407/403 to answer.

        An unknown user and a wrong password get the same fresh challenge, so
        that nobody learns which users exist (svwar-style enumeration).
        """
        assert self.auth is not None
        realm = identity.host.lower()
        result = self.auth.authenticator.check(
            request.method, request.get_all(header), realm, context.now, request.uri_text
        )
        registering = header == "authorization"
        if result.kind == "ok":
            own = unescape(identity.user or "") == result.username
            if registering and not own:
                return Answer(403, "Forbidden (may only register its own address)")
            if not registering and self.auth.check_from and not own:
                return Answer(403, "Forbidden (From is not the authenticated user)")
            context.attrs["auth.user"] = f"{result.username}@{result.realm}"
            return None
        name = "WWW-Authenticate" if registering else "Proxy-Authenticate"
        status, reason = (401, "Unauthorized") if registering else (407, "Proxy Authentication Required")
        return Answer(status, reason, tuple((name, value) for value in result.challenges))

    def _targets(self, bindings: list[Binding], aor: str) -> Forward | Answer:
        if not bindings:
            if self.known_users is not None and aor not in self.known_users:
                return Answer(404, "Not Found")
            if self.known_users is None:
                return Answer(404, "Not Found")
            return Answer(480, "Temporarily Unavailable (not registered)")
        targets = tuple(target_of(binding, group) for binding, group in group_by_q(bindings))
        return Forward(targets, mode="grouped")

    def stop(self) -> None:
        closing = self.registrar.store.close()
        if isinstance(closing, Deferred):
            closing.addErrback(lambda failure: None)


def _int(config: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = config.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"routing.registrar.{name}", f"expected an integer from {low} to {high}")
    return value


def _parse_auth(raw: Any, config: Mapping[str, Any]) -> tuple[AuthSettings, Credentials]:
    key = "routing.registrar.auth"
    if not isinstance(raw, dict):
        raise ConfigError(key, "expected a table with users_file")
    unknown = set(raw) - _AUTH_KEYS
    if unknown:
        raise ConfigError(f"{key}.{sorted(unknown)[0]}", "unknown key")
    users_file = raw.get("users_file")
    if not isinstance(users_file, str) or not users_file:
        raise ConfigError(f"{key}.users_file", "expected the path of a credentials file ([[users]] with HA1 values)")
    resolve = getattr(config, "path", None)
    credentials = load_credentials(resolve(users_file) if callable(resolve) else users_file)
    algorithms = raw.get("algorithms", ["SHA-256", "MD5"])
    if not isinstance(algorithms, list) or not algorithms or any(a not in ("SHA-256", "MD5") for a in algorithms):
        raise ConfigError(f"{key}.algorithms", 'expected a list of "SHA-256" and/or "MD5", strongest first')
    lifetime = raw.get("nonce_lifetime", 300)
    if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or not 10 <= lifetime <= 86400:
        raise ConfigError(f"{key}.nonce_lifetime", "expected seconds from 10 to 86400")
    secret_file = raw.get("secret_file")
    if secret_file is None:
        # every worker and node must share the secret to verify each other's
        # nonces; without a file each process has its own
        secret = os.urandom(32)
    else:
        if not isinstance(secret_file, str):
            raise ConfigError(f"{key}.secret_file", "expected a file name")
        path = resolve(secret_file) if callable(resolve) else secret_file
        try:
            secret = Path(path).read_bytes().strip()
        except OSError as error:
            raise ConfigError(f"{key}.secret_file", f"cannot read {path}: {error.strerror}") from None
        if len(secret) < 16:
            raise ConfigError(f"{key}.secret_file", "the secret must be at least 16 bytes")
    flags = {}
    for name in ("authenticate_calls", "check_from"):
        value = raw.get(name, True)
        if not isinstance(value, bool):
            raise ConfigError(f"{key}.{name}", "expected true or false")
        flags[name] = value
    authenticator = Authenticator(
        credentials, NonceFactory(secret, float(lifetime)), NonceCounter(float(lifetime)), algorithms
    )
    return AuthSettings(authenticator, **flags), credentials


def parse_registrar_config(config: Mapping[str, Any]) -> tuple[RegistrarSettings, str, str | None]:
    """Settings, store kind ("memory", "sqlite" or "redis") and store path (SQLite) or URL (Redis)."""
    unknown = set(config) - _KEYS
    if unknown:
        raise ConfigError(f"routing.registrar.{sorted(unknown)[0]}", "unknown key")
    domains = config.get("domains")
    if not isinstance(domains, list) or not domains or not all(isinstance(d, str) and d for d in domains):
        raise ConfigError("routing.registrar.domains", "expected a list of the domains this registrar serves")
    store = config.get("store", "sqlite")
    if store not in ("memory", "sqlite", "redis"):
        raise ConfigError("routing.registrar.store", f"expected 'memory', 'sqlite' or 'redis', got {store!r}")
    path = config.get("path", "registrations.sqlite")
    if not isinstance(path, str) or not path:
        raise ConfigError("routing.registrar.path", "expected a file name for the SQLite store")
    min_expires = _int(config, "min_expires", 60, 1, 86400)
    max_expires = _int(config, "max_expires", 7200, min_expires, 7 * 86400)
    default_expires = _int(config, "default_expires", 3600, min_expires, max_expires)
    max_contacts_raw = config.get("max_contacts")
    max_contacts = None if max_contacts_raw is None else _int(config, "max_contacts", 0, 1, 1000)
    evict = config.get("evict_oldest", False)
    if not isinstance(evict, bool):
        raise ConfigError("routing.registrar.evict_oldest", "expected true or false")
    settings = RegistrarSettings(
        domains=frozenset(d.lower() for d in domains),
        default_expires=default_expires,
        min_expires=min_expires,
        max_expires=max_expires,
        max_contacts=max_contacts,
        evict_oldest=evict,
    )
    if store == "redis":
        return settings, store, _redis_url(config)
    resolve = getattr(config, "path", None)
    full = resolve(path) if callable(resolve) else path
    return settings, store, full


def _redis_url(config: Mapping[str, Any]) -> str:
    """The validated ``redis`` URL; store = "redis" needs one (no silent localhost default)."""
    from .redis import parse_redis_url

    url = config.get("redis")
    if url is None:
        raise ConfigError("routing.registrar.store", 'store = "redis" needs redis = "redis://host:port/db"')
    if not isinstance(url, str):
        raise ConfigError("routing.registrar.redis", "expected a URL like redis://127.0.0.1:6379/0")
    try:
        parse_redis_url(url)
    except ValueError as error:
        raise ConfigError("routing.registrar.redis", str(error)) from None
    return url


@implementer(IPlugin, IRouterFactory)
class RegistrarRouterFactory:
    name = "registrar"

    def make_router(self, config: Mapping[str, Any], reactor: Any) -> RegistrarRouter:
        settings, kind, path = parse_registrar_config(config)
        auth = None
        known = None
        if "auth" in config:
            auth, credentials = _parse_auth(config["auth"], config)
            known = frozenset(f"sip:{user}@{realm.lower()}" for user, realm in credentials.users())
        if kind == "memory":
            from .memory import MemoryLocationStore

            store: Any = MemoryLocationStore()
        elif kind == "redis":
            from .redis import RedisLocationStore

            store = RedisLocationStore(str(path), reactor)
        else:
            from .sqlite import SQLiteLocationStore

            try:
                store = SQLiteLocationStore(str(path), reactor)
            except Exception as error:
                raise ConfigError("routing.registrar.path", f"cannot open {path}: {error}") from None
        return RegistrarRouter(Registrar(store, settings), known, auth)
