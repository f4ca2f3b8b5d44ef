"""The location service's data model and store interface.

A :class:`Binding` maps an address-of-record (AoR) to one contact (RFC 3261
section 10). Stores implement :class:`ILocationStore`; every method returns a
Deferred so that a networked store (Redis) fits the same interface as the
in-process ones (memory, SQLite), which fire their Deferreds at once.

Time is always passed in as ``now`` (the reactor's clock, seconds); a binding
is alive while ``now < expires_at``. An expired binding is treated as absent
by every operation even before :meth:`ILocationStore.purge` deletes it.

The merge rules of a REGISTER (identity, CSeq ordering, contact limits) live
here as the pure function :func:`merge_changes`, so that every store applies
exactly the same rules; a store only has to make the read-merge-write atomic.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from zope.interface import Attribute, Interface

from sipgate_proxy.sip.uri import parse_uri, unescape

__all__ = [
    "Binding",
    "Change",
    "ILocationStore",
    "LocationError",
    "StaleRequest",
    "TooManyContacts",
    "contact_key",
    "merge_changes",
    "ordered",
]

# URI parameters that make two SIP URIs differ when only one has them
# (RFC 3261 19.1.4); they are part of a contact's identity key.
_STRICT_PARAMS = ("user", "ttl", "method", "maddr", "transport")


class LocationError(Exception):
    """A REGISTER's changes cannot be applied; nothing was changed."""


class StaleRequest(LocationError):
    """A change carries a CSeq not higher than the stored one of the same
    Call-ID (RFC 3261 10.3 steps 6 and 7): the request is out of order or a
    retransmission, and the whole update is aborted."""

    def __init__(self, aor: str, contact: str, call_id: str, stored_cseq: int, cseq: int) -> None:
        super().__init__(f"{aor}: CSeq {cseq} of Call-ID {call_id!r} is not above {stored_cseq} for {contact}")
        self.aor = aor
        self.contact = contact
        self.call_id = call_id
        self.stored_cseq = stored_cseq
        self.cseq = cseq


class TooManyContacts(LocationError):
    """The AoR would hold more than ``limit`` bindings."""

    def __init__(self, aor: str, limit: int, wanted: int) -> None:
        super().__init__(f"{aor}: {wanted} bindings, at most {limit} allowed")
        self.aor = aor
        self.limit = limit
        self.wanted = wanted


@dataclass(frozen=True, slots=True, kw_only=True)
class Binding:
    """One registered contact of an address-of-record (fields by keyword only).

    ``aor`` is canonical (``sip:user@domain``, domain lower-case); the store
    uses it as given. ``contact`` is the Contact URI exactly as registered.
    ``expires_at`` and ``updated_at`` are absolute reactor times. ``path``
    holds the Path header values (RFC 3327) in order; ``instance`` and
    ``reg_id`` are ``+sip.instance`` and ``reg-id`` (RFC 5626);
    ``received`` is the ``transport:host:port`` the REGISTER came from and
    ``connection`` the id of the connection it came on (None for UDP).
    """

    aor: str
    contact: str
    expires_at: float
    q: float = 1.0
    call_id: str
    cseq: int
    path: tuple[str, ...] = ()
    instance: str | None = None
    reg_id: int | None = None
    received: str | None = None
    connection: str | None = None
    user_agent: str | None = None
    updated_at: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.q <= 1.0:
            raise ValueError(f"q must be between 0 and 1, not {self.q}")

    @property
    def identity(self) -> str:
        """The key that tells bindings of one AoR apart.

        ``instance <id> reg-id <n>`` (or ``instance <id>`` without reg-id)
        when ``+sip.instance`` is set, so that a device's re-registration
        replaces its own binding even from a new address (RFC 5626);
        otherwise :func:`contact_key` of the contact URI. The instance id is
        compared as exact text.
        """
        if self.instance is not None:
            if self.reg_id is None:
                return f"instance {self.instance}"
            return f"instance {self.instance} reg-id {self.reg_id}"
        return contact_key(self.contact)

    def alive(self, now: float) -> bool:
        """Whether the binding has not expired at ``now``."""
        return now < self.expires_at

    def expires_in(self, now: float) -> int:
        """Whole seconds left at ``now`` (for the ``expires`` of a 200's Contact), never negative."""
        return max(0, int(self.expires_at - now))


@dataclass(frozen=True, slots=True)
class Change:
    """One Contact of a REGISTER: add or refresh ``binding``, or, with
    ``remove``, delete the stored binding of the same identity (its
    ``call_id`` and ``cseq`` still count for the CSeq check)."""

    binding: Binding
    remove: bool = False


def contact_key(contact: str) -> str:
    """A string equal for contacts that are equal per RFC 3261 10.3 / 19.1.4.

    Made of the scheme, the unescaped user, the host (lower-case, IPv6
    compressed), the port (absent differs from 5060) and the parameters that
    must match when only one URI has them (``user``, ``ttl``, ``method``,
    ``maddr``, ``transport``; values lower-cased), for example
    ``sip:alice@192.0.2.1:5060;transport=tcp``. It is an index key, not a
    URI. Simplifications: other parameters, the password and URI headers are
    ignored (19.1.4 would let a parameter present in both with different
    values make the URIs differ). Non-SIP schemes key on their text.

    Raises :class:`sipgate_proxy.sip.errors.SIPError` (400) when the contact
    does not parse; the registrar validates contacts before storing them.
    """
    uri = parse_uri(contact)
    if uri.opaque is not None or uri.scheme not in ("sip", "sips"):
        return str(uri)
    host = uri.host
    if host.startswith("["):
        try:
            host = f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
        except ValueError:
            pass
    parts = [uri.scheme, ":"]
    if uri.user is not None:
        parts += (unescape(uri.user), "@")
    parts.append(host)
    if uri.port is not None:
        parts += (":", str(uri.port))
    for name in _STRICT_PARAMS:
        value = uri.param(name)
        if value is not None:
            parts += (";", name, "=", unescape(value).lower())
    return "".join(parts)


def ordered(bindings: Iterable[Binding]) -> list[Binding]:
    """Bindings by ``q`` descending, then most recently updated first, then contact."""
    result = sorted(bindings, key=lambda b: b.contact)
    result.sort(key=lambda b: (b.q, b.updated_at), reverse=True)
    return result


def merge_changes(
    aor: str,
    stored: Mapping[str, Binding],
    changes: Sequence[Change],
    now: float,
    max_contacts: int | None = None,
    evict_oldest: bool = False,
) -> dict[str, Binding]:
    """Apply a REGISTER's ``changes`` to the AoR's ``stored`` bindings
    (identity -> binding) and return the bindings afterwards, all alive at
    ``now``. ``stored`` is not modified.

    - Expired stored bindings count as absent.
    - A change matching an alive stored binding with the same Call-ID must
      carry a higher CSeq, else :class:`StaleRequest`; the check is against
      the stored state, so a REGISTER listing one contact twice is not stale
      against itself (the later change wins).
    - A removal of an absent binding does nothing. An addition whose
      ``expires_at`` is not after ``now`` is a removal.
    - When the result holds more than ``max_contacts`` bindings and more than
      before the request: :class:`TooManyContacts`, unless ``evict_oldest``,
      which drops the least recently updated ones. An AoR already over a
      (lowered) limit can still refresh or remove its bindings.

    Raises before anything is decided, so a store that writes only the
    returned state applies a request entirely or not at all.
    """
    current = {key: b for key, b in stored.items() if b.alive(now)}
    result = dict(current)
    for change in changes:
        binding = change.binding
        key = binding.identity
        old = current.get(key)
        if old is not None and old.call_id == binding.call_id and binding.cseq <= old.cseq:
            raise StaleRequest(aor, binding.contact, binding.call_id, old.cseq, binding.cseq)
        if change.remove or not binding.alive(now):
            result.pop(key, None)
        else:
            result.pop(key, None)  # keep insertion order: the newest change last
            result[key] = binding
    if max_contacts is not None and len(result) > max_contacts:
        if not evict_oldest:
            if len(result) > len(current):
                raise TooManyContacts(aor, max_contacts, len(result))
        else:
            # Stable: among equal updated_at, earlier entries go first.
            oldest = sorted(result, key=lambda k: result[k].updated_at)
            for key in oldest[: len(result) - max_contacts]:
                del result[key]
    return result


class ILocationStore(Interface):
    """Where registrations live: shared by every worker and node using it.

    Every method returns a Deferred. ``aor`` is the canonical AoR string of
    :attr:`Binding.aor`; ``now`` is the reactor's time. Failures arrive as
    errbacks: :class:`StaleRequest`, :class:`TooManyContacts`, or the
    store's own errors.
    """

    name = Attribute("Short name of the implementation for logs and config, e.g. 'memory' or 'sqlite'.")

    def get(aor, now):  # type: ignore[no-untyped-def]
        """Fire with the list of alive :class:`Binding` of ``aor``, highest
        ``q`` first, then most recently updated first (:func:`ordered`)."""

    def apply(aor, changes, now, max_contacts=None, evict_oldest=False):  # type: ignore[no-untyped-def]
        """Atomically apply a REGISTER's ``changes`` (a list of
        :class:`Change`) to ``aor`` by the rules of :func:`merge_changes`
        and fire with the AoR's alive bindings afterwards, ordered as by
        :meth:`get`. On an errback nothing was changed."""

    def remove_all(aor, call_id, cseq, now):  # type: ignore[no-untyped-def]
        """``Contact: *`` with ``Expires: 0`` (RFC 3261 10.3 step 6): remove
        every binding of ``aor`` and fire with how many alive ones were
        removed. A binding with the same ``call_id`` must have a lower CSeq
        than ``cseq``; otherwise errback :class:`StaleRequest` and remove
        nothing."""

    def purge(now):  # type: ignore[no-untyped-def]
        """Delete bindings expired at ``now``; fire with how many."""

    def count(now):  # type: ignore[no-untyped-def]
        """Fire with the number of alive bindings over all AoRs."""

    def close():  # type: ignore[misc, no-untyped-def]
        """Release the store's resources and timers; fire with None."""
