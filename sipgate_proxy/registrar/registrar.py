"""REGISTER processing (RFC 3261 section 10.3, RFC 3327 Path, RFC 5626 basics).

Turns a REGISTER into changes of the location store and the store's answer
into the 200 that lists every current binding, or into the error the request
deserves (400, 403, 423, 500). The store is asked through its Deferred API,
so the same code serves the in-memory, SQLite and Redis stores.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from ..routing.decisions import Answer, RequestContext
from ..sip.errors import SIPError
from ..sip.headers import is_star_contact, parse_int_header, parse_name_addr
from ..sip.message import Request
from ..sip.uri import URI, unescape
from .location import Binding, Change, StaleRequest, TooManyContacts


@dataclass(frozen=True, slots=True)
class RegistrarSettings:
    domains: frozenset[str]
    default_expires: int = 3600
    min_expires: int = 60
    max_expires: int = 7200
    max_contacts: int | None = None
    evict_oldest: bool = False


def aor_of(uri: URI) -> str:
    """The address-of-record key of a To URI: "sip:user@domain" (10.3 step 5)."""
    if uri.scheme not in ("sip", "sips") or uri.user is None:
        raise SIPError(400, "Bad Request (To must be a sip: URI with a user)")
    return f"sip:{unescape(uri.user)}@{uri.host.lower()}"


def _expires_header(request: Request) -> int | None:
    value = request.get("expires")
    if value is None:
        return None
    return parse_int_header(value, "Expires", 2**32 - 1)


class Registrar:
    """Processes REGISTER requests against a location store."""

    def __init__(self, store: Any, settings: RegistrarSettings) -> None:
        self.store = store
        self.settings = settings

    def is_ours(self, host: str) -> bool:
        return host.lower() in self.settings.domains

    def register(self, request: Request, context: RequestContext) -> Deferred[Answer]:
        """Apply the REGISTER; fires with the Answer to send."""
        try:
            return self._register(request, context)
        except SIPError as error:
            return succeed(Answer(error.status, error.reason, error.headers))

    def _register(self, request: Request, context: RequestContext) -> Deferred[Answer]:
        settings = self.settings
        now = context.now
        aor = aor_of(request.to.uri)
        call_id = request.call_id
        cseq = request.cseq[0]
        header_expires = _expires_header(request)
        contacts = request.values("contact")
        if not contacts:
            # a query: list the bindings (10.3 step 6)
            return self._answer(self.store.get(aor, now), request, now)
        if any(is_star_contact(value) for value in contacts):
            if len(contacts) != 1 or header_expires != 0:
                raise SIPError(400, "Bad Request (Contact * needs Expires: 0 and no other Contact)")
            removed = self.store.remove_all(aor, call_id, cseq, now)
            removed.addCallback(lambda _: self.store.get(aor, now))
            return self._answer(removed, request, now)
        changes = []
        path = tuple(request.values("path"))
        instance_reg: set[tuple[str, int | None]] = set()
        for value in contacts:
            contact = parse_name_addr(value)
            if contact.uri.scheme not in ("sip", "sips"):
                raise SIPError(400, f"Bad Request (cannot register a {contact.uri.scheme[:10]} Contact)")
            expires_param = contact.param("expires")
            if expires_param is not None:
                expires = parse_int_header(expires_param, "Contact expires", 2**32 - 1)
            elif header_expires is not None:
                expires = header_expires
            else:
                expires = settings.default_expires
            if 0 < expires < settings.min_expires:
                raise SIPError(423, "Interval Too Brief", (("Min-Expires", str(settings.min_expires)),))
            expires = min(expires, settings.max_expires)
            q = _q_value(contact.param("q"))
            instance = contact.param("+sip.instance")
            reg_id_text = contact.param("reg-id")
            reg_id = int(reg_id_text) if reg_id_text and reg_id_text.isdigit() else None
            if instance is not None:
                key = (instance, reg_id)
                if key in instance_reg:
                    raise SIPError(400, "Bad Request (one device registered twice)")
                instance_reg.add(key)
            binding = Binding(
                aor=aor,
                contact=str(contact.uri),
                expires_at=now + expires,
                q=q,
                call_id=call_id,
                cseq=cseq,
                path=path,
                instance=instance,
                reg_id=reg_id,
                received=f"{context.transport}:{context.source_host}:{context.source_port}",
                connection=None,
                user_agent=request.get("user-agent"),
                updated_at=now,
            )
            changes.append(Change(binding, expires == 0))
        applied = self.store.apply(
            aor, changes, now, max_contacts=settings.max_contacts, evict_oldest=settings.evict_oldest
        )
        return self._answer(applied, request, now)

    def _answer(self, bindings: Deferred[list[Binding]], request: Request, now: float) -> Deferred[Answer]:
        def ok(found: list[Binding]) -> Answer:
            headers: list[tuple[str, str]] = []
            for binding in found:
                left = max(0, int(binding.expires_at - now))
                headers.append(("Contact", f"<{binding.contact}>;expires={left}"))
            path = request.values("path")
            if path:
                headers.append(("Path", ", ".join(path)))
            headers.append(("Date", formatdate(now, usegmt=True)))
            return Answer(200, "OK", tuple(headers))

        def failed(failure: Failure) -> Answer:
            if failure.check(StaleRequest):
                return Answer(500, "Server Internal Error (REGISTER out of order: CSeq not increasing)")
            if failure.check(TooManyContacts):
                return Answer(403, "Forbidden (too many registered contacts)")
            if failure.check(SIPError):
                error = failure.value
                return Answer(error.status, error.reason, error.headers)
            return Answer(500, "Server Internal Error (location store failed)")

        return bindings.addCallbacks(ok, failed)


def _q_value(text: str | None) -> float:
    if text is None or text == "":
        return 1.0
    try:
        q = float(text)
    except ValueError:
        raise SIPError(400, "Bad Request (q must be a number from 0 to 1)") from None
    if not 0.0 <= q <= 1.0:
        raise SIPError(400, "Bad Request (q must be a number from 0 to 1)")
    return q


def group_by_q(bindings: Iterable[Binding]) -> list[tuple[Binding, int]]:
    """Bindings with a group number: highest q first, equal q share a group."""
    ordered = sorted(bindings, key=lambda b: (-b.q, -b.updated_at))
    result = []
    group = -1
    last: float | None = None
    for binding in ordered:
        if binding.q != last:
            group += 1
            last = binding.q
        result.append((binding, group))
    return result
