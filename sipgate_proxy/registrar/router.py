"""The ``registrar`` router: REGISTER for our domains, and calls to their users.

REGISTER requests whose Request-URI names one of ``domains`` are answered
here (RFC 3261 10.3). Other requests to ``user@domain`` of those domains go to
the user's registered contacts: highest q first, contacts of equal q in
parallel, lower q only when the higher ones failed (Forward mode "grouped").
A contact is reached at the address its REGISTER came from (NAT), or through
its Path (RFC 3327). Unknown users get 404, known users without a binding 480.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred
from twisted.plugin import IPlugin
from zope.interface import implementer

from ..config import ConfigError
from ..interfaces import IRouter, IRouterFactory
from ..routing.decisions import Answer, Forward, RequestContext, Target
from ..sip.errors import SIPError
from ..sip.message import Request
from .location import Binding
from .registrar import Registrar, RegistrarSettings, aor_of, group_by_q

_KEYS = frozenset(
    {"domains", "store", "path", "default_expires", "min_expires", "max_expires", "max_contacts", "evict_oldest"}
)


def target_of(binding: Binding, group: int) -> Target:
    """Where a call to ``binding`` goes: its Path, else the REGISTER's source."""
    headers: tuple[tuple[str, str], ...] = ()
    next_hop = None
    if binding.path:
        headers = (("Route", ", ".join(binding.path)),)
    elif binding.received:
        # "transport:host:port", the host possibly IPv6
        transport, _, rest = binding.received.partition(":")
        host, _, port = rest.rpartition(":")
        if host and port.isdigit():
            shown = f"[{host}]" if ":" in host else host
            next_hop = f"sip:{shown}:{port};transport={transport or 'udp'}"
    return Target(binding.contact, next_hop, headers, label=binding.contact, group=group)


@implementer(IRouter)
class RegistrarRouter:
    def __init__(self, registrar: Registrar, known_users: frozenset[str] | None = None) -> None:
        self.registrar = registrar
        self.known_users = known_users

    def route(self, request: Request, context: RequestContext) -> Any:
        uri = request.uri
        if uri.scheme not in ("sip", "sips") or not self.registrar.is_ours(uri.host):
            return None
        if request.method == "REGISTER":
            return self.registrar.register(request, context)
        if uri.user is None:
            return None
        try:
            aor = aor_of(uri)
        except SIPError:
            return None
        found: Deferred[list[Binding]] = self.registrar.store.get(aor, context.now)
        return found.addCallback(self._targets, aor)

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


def parse_registrar_config(config: Mapping[str, Any]) -> tuple[RegistrarSettings, str, str | None]:
    """Settings, store kind ("memory" or "sqlite") and store path."""
    unknown = set(config) - _KEYS
    if unknown:
        raise ConfigError(f"routing.registrar.{sorted(unknown)[0]}", "unknown key")
    domains = config.get("domains")
    if not isinstance(domains, list) or not domains or not all(isinstance(d, str) and d for d in domains):
        raise ConfigError("routing.registrar.domains", "expected a list of the domains this registrar serves")
    store = config.get("store", "sqlite")
    if store not in ("memory", "sqlite"):
        raise ConfigError("routing.registrar.store", f"expected 'memory' or 'sqlite', got {store!r}")
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
    resolve = getattr(config, "path", None)
    full = resolve(path) if callable(resolve) else path
    return settings, store, full


@implementer(IPlugin, IRouterFactory)
class RegistrarRouterFactory:
    name = "registrar"

    def make_router(self, config: Mapping[str, Any], reactor: Any) -> RegistrarRouter:
        settings, kind, path = parse_registrar_config(config)
        if kind == "memory":
            from .memory import MemoryLocationStore

            store: Any = MemoryLocationStore()
        else:
            from .sqlite import SQLiteLocationStore

            try:
                store = SQLiteLocationStore(str(path), reactor)
            except Exception as error:
                raise ConfigError("routing.registrar.path", f"cannot open {path}: {error}") from None
        return RegistrarRouter(Registrar(store, settings))
