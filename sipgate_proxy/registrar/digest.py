"""SIP digest authentication (RFC 3261 section 22, RFC 7616, RFC 8760): sans-IO.

Pieces, each usable alone:

- :class:`NonceFactory` makes and checks stateless nonces (timestamp, random, HMAC), so
  every worker and node that shares the secret accepts the nonces of the others.
- :class:`NonceCounter` remembers the highest nonce-count (nc) seen per nonce, against
  replays within a nonce's lifetime.
- :func:`challenge` formats WWW-Authenticate / Proxy-Authenticate values;
  :func:`parse_authorization` parses Authorization / Proxy-Authorization values;
  :func:`verify` recomputes the response.
- :class:`Authenticator` puts them together for one request.

No I/O and no clock: time comes in as ``now`` (seconds since the epoch, as every worker
and node must agree on it to within ``max_skew``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from sipgate_proxy.registrar.credentials import CredentialStore, hash_hex
from sipgate_proxy.sip.errors import SIPError
from sipgate_proxy.sip.uri import parse_uri, unescape

NonceStatus = Literal["ok", "stale", "invalid"]

#: Algorithms this module computes, strongest first (RFC 8760 section 2.4: a server
#: that offers several puts its preferred first).
SUPPORTED_ALGORITHMS: tuple[str, ...] = ("SHA-256", "SHA-256-SESS", "MD5", "MD5-SESS")
_STRENGTH = {name: rank for rank, name in enumerate(SUPPORTED_ALGORITHMS)}
#: How a challenge spells each algorithm (the -sess suffix is lowercase in RFC 7616).
_SPELLING = {"SHA-256": "SHA-256", "SHA-256-SESS": "SHA-256-sess", "MD5": "MD5", "MD5-SESS": "MD5-sess"}

# ---------------------------------------------------------------------------------------
# Nonces


_TIME = struct.Struct(">Q")
_RANDOM_BYTES = 8
_MAC_BYTES = 16
_NONCE_BYTES = _TIME.size + _RANDOM_BYTES + _MAC_BYTES


class NonceFactory:
    """Stateless nonces: base64url(timestamp | random | HMAC-SHA256(secret, ...)[:16]).

    The timestamp is whole seconds, 8 bytes big-endian; the HMAC covers timestamp, random
    and the realm, so a nonce is only good for the realm it was made for. Nothing is
    stored: any process holding the same ``secret`` checks any other's nonces, which is
    what N workers and several nodes need. Rotating the secret makes every outstanding
    nonce "invalid"; clients are then simply challenged again.

    ``lifetime`` is how long a nonce is accepted (seconds); ``max_skew`` is how far in
    the future a timestamp may lie before it is refused (clocks of other nodes).
    ``random_bytes`` is for tests.
    """

    def __init__(
        self,
        secret: bytes,
        lifetime: float = 300.0,
        max_skew: float = 5.0,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the nonce secret needs at least 16 bytes")
        if lifetime <= 0:
            raise ValueError("the nonce lifetime must be positive")
        self._secret = secret
        self.lifetime = lifetime
        self.max_skew = max_skew
        self._random_bytes = random_bytes

    def make(self, now: float, realm: str) -> str:
        """A fresh nonce for ``realm`` issued at ``now``."""
        head = _TIME.pack(max(0, int(now))) + self._random_bytes(_RANDOM_BYTES)
        raw = head + self._mac(head, realm)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def check(self, nonce: str, now: float, realm: str) -> NonceStatus:
        """ "ok", "stale" (genuine but older than ``lifetime``) or "invalid" (not ours,
        tampered, another realm, badly encoded, or dated in the future)."""
        raw = _decode_nonce(nonce)
        if raw is None:
            return "invalid"
        head, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(head, realm)):
            return "invalid"
        (issued,) = _TIME.unpack_from(head)
        if issued - now > self.max_skew:
            return "invalid"
        if now - issued > self.lifetime:
            return "stale"
        return "ok"

    def _mac(self, head: bytes, realm: str) -> bytes:
        return hmac.new(self._secret, head + realm.encode("utf-8"), hashlib.sha256).digest()[:_MAC_BYTES]


def _decode_nonce(nonce: str) -> bytes | None:
    """The nonce's bytes, or None unless it is the one canonical encoding of 32 bytes.

    Insisting on the canonical spelling means one nonce has one string, so the nc
    bookkeeping (keyed by the string) cannot be dodged by re-spelling a nonce.
    """
    if len(nonce) != 43 or not nonce.isascii():
        return None
    try:
        raw = base64.urlsafe_b64decode(nonce + "=")
    except ValueError:
        return None
    if len(raw) != _NONCE_BYTES or base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != nonce:
        return None
    return raw


class NonceCountStore(Protocol):
    """Replay bookkeeping for nonce-counts; a shared (Redis) store can stand in later."""

    def seen(self, nonce: str, nc: int, now: float) -> bool:
        """True if ``nc`` is not above the highest count already accepted for ``nonce``
        (a replay); otherwise record ``nc`` as the highest and return False."""
        ...


class NonceCounter:
    """Highest nonce-count accepted per nonce, in memory, for one worker.

    RFC 7616 section 3.4: the nc of a nonce increases with each request, so a request
    whose nc is not above the highest seen is a replay. Entries expire ``lifetime``
    seconds after their first use (a nonce is at least that old by then, so the
    NonceFactory rejects it anyway) and the table keeps at most ``max_entries``, dropping
    the oldest first. Only requests whose digest verified reach this table, so filling it
    takes valid credentials.

    Per worker: with N workers a replay sent to another worker is not caught until a
    shared store implements :class:`NonceCountStore`. A client that sends requests with
    counts out of order (2 arrives after 3) sees the late one refused as a replay; it is
    answered with a stale challenge and retries without asking its user.
    """

    def __init__(self, lifetime: float = 300.0, max_entries: int = 100_000) -> None:
        self.lifetime = lifetime
        self.max_entries = max_entries
        # nonce -> (highest nc, first seen); insertion order is first-seen order
        self._entries: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def seen(self, nonce: str, nc: int, now: float) -> bool:
        """True for a replay; else remember ``nc`` as the highest for ``nonce``."""
        self._expire(now)
        entry = self._entries.get(nonce)
        if entry is not None:
            highest, first = entry
            if nc <= highest:
                return True
            self._entries[nonce] = (nc, first)
            return False
        self._entries[nonce] = (nc, now)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return False

    def __len__(self) -> int:
        return len(self._entries)

    def _expire(self, now: float) -> None:
        entries = self._entries
        while entries:
            nonce, (_, first) = next(iter(entries.items()))
            if now - first <= self.lifetime:
                break
            del entries[nonce]


# ---------------------------------------------------------------------------------------
# Header values


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def challenge(
    realm: str,
    nonce: str,
    algorithms: Iterable[str] = ("SHA-256", "MD5"),
    stale: bool = False,
    opaque: str | None = None,
) -> list[str]:
    """WWW-Authenticate / Proxy-Authenticate values: one per algorithm, strongest first.

    Each reads ``Digest realm="...", nonce="...", algorithm=SHA-256, qop="auth"``, then
    ``stale=true`` and ``opaque="..."`` when asked for. The same nonce serves all of them
    (RFC 8760 section 2.4: the client answers the first algorithm it supports).
    """
    names = []
    for algorithm in algorithms:
        key = algorithm.upper()
        if key not in _STRENGTH:
            raise ValueError(f"unsupported digest algorithm {algorithm!r}")
        if key not in names:
            names.append(key)
    names.sort(key=_STRENGTH.__getitem__)
    tail = ""
    if stale:
        tail += ", stale=true"
    if opaque is not None:
        tail += f", opaque={_quote(opaque)}"
    head = f"Digest realm={_quote(realm)}, nonce={_quote(nonce)}, algorithm="
    return [f'{head}{_SPELLING[name]}, qop="auth"{tail}' for name in names]


@dataclass(frozen=True)
class DigestResponse:
    """The credentials of one Authorization / Proxy-Authorization value.

    ``algorithm`` is upper-cased ("MD5" when absent, RFC 7616 section 3.4); ``nc``,
    ``qop`` and the rest are as sent, since the response hash covers them as sent.
    ``params`` holds every parameter, lower-cased names, unquoted values.
    """

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    cnonce: str | None = None
    opaque: str | None = None
    qop: str | None = None
    nc: str | None = None
    params: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def nc_value(self) -> int | None:
        """The nonce-count as a number, or None without qop."""
        return int(self.nc, 16) if self.nc is not None else None


_WS = " \t\r\n"
_SEPARATORS = frozenset(_WS + ",")
_REQUIRED = ("username", "realm", "nonce", "uri", "response")
_HEXDIGITS = frozenset("0123456789abcdefABCDEF")


class _Malformed(Exception):
    pass


def parse_authorization(value: str, header: str = "Authorization") -> DigestResponse | None:
    """Parse one Authorization (or Proxy-Authorization) value.

    None if the scheme is not Digest (case does not matter); ``SIPError(400, "Bad
    <header> header")`` if it is Digest but malformed: bad syntax, a parameter twice,
    a required one missing (username, realm, nonce, uri, response; with qop also cnonce
    and nc), or nc not 8 hex digits.
    """
    text = value.strip(_WS)
    end = 0
    while end < len(text) and text[end] not in _WS:
        end += 1
    if text[:end].lower() != "digest":
        return None
    try:
        params = _parse_params(text, end)
        return _build(params)
    except _Malformed:
        raise SIPError(400, f"Bad {header} header") from None


# one auth-param: token "=" (token / quoted-string), with optional whitespace around "="
_PARAM_RE = re.compile(r'([^ \t\r\n,="]+)[ \t\r\n]*=[ \t\r\n]*(?:"((?:[^"\\]|\\.)*)"|([^ \t\r\n,="]+))[ \t\r\n]*', re.S)
_ESCAPED_RE = re.compile(r"\\(.)", re.S)


def _parse_params(text: str, pos: int) -> dict[str, str]:
    params: dict[str, str] = {}
    n = len(text)
    match_param = _PARAM_RE.match
    while True:
        while pos < n and text[pos] in _SEPARATORS:
            pos += 1
        if pos >= n:
            break
        match = match_param(text, pos)
        if match is None:
            raise _Malformed
        name = match.group(1).lower()
        item = match.group(2)
        if item is None:
            item = match.group(3)
        elif "\\" in item:
            item = _ESCAPED_RE.sub(r"\1", item)
        if name in params:
            raise _Malformed
        params[name] = item
        pos = match.end()
        if pos < n and text[pos] != ",":
            raise _Malformed
    return params


def _build(params: dict[str, str]) -> DigestResponse:
    for name in _REQUIRED:
        if name not in params:
            raise _Malformed
    qop = params.get("qop")
    nc = params.get("nc")
    cnonce = params.get("cnonce")
    if qop is not None and (nc is None or cnonce is None):
        raise _Malformed
    if nc is not None and (len(nc) != 8 or not set(nc) <= _HEXDIGITS):
        raise _Malformed
    return DigestResponse(
        username=params["username"],
        realm=params["realm"],
        nonce=params["nonce"],
        uri=params["uri"],
        response=params["response"],
        algorithm=params.get("algorithm", "MD5").upper(),
        cnonce=cnonce,
        opaque=params.get("opaque"),
        qop=qop,
        nc=nc,
        params=params,
    )


# ---------------------------------------------------------------------------------------
# Verification


def expected_response(resp: DigestResponse, method: str, ha1: str) -> str | None:
    """The response a client holding ``ha1`` would send, or None if it cannot be computed
    (unknown algorithm, qop other than "auth", -sess or qop without cnonce)."""
    algorithm = resp.algorithm.upper()
    if algorithm not in _STRENGTH:
        return None
    base = algorithm.removesuffix("-SESS")
    ha1 = ha1.lower()
    if algorithm != base:
        # RFC 7616 section 3.4.2: the session variant hashes the nonces into HA1.
        if resp.cnonce is None:
            return None
        ha1 = hash_hex(base, f"{ha1}:{resp.nonce}:{resp.cnonce}")
    ha2 = hash_hex(base, f"{method}:{resp.uri}")
    if resp.qop is None:
        # RFC 2069 compatibility (RFC 3261 section 22.4 still requires it).
        return hash_hex(base, f"{ha1}:{resp.nonce}:{ha2}")
    if resp.qop.lower() != "auth" or resp.nc is None or resp.cnonce is None:
        return None
    return hash_hex(base, f"{ha1}:{resp.nonce}:{resp.nc}:{resp.cnonce}:{resp.qop}:{ha2}")


def verify(resp: DigestResponse, method: str, ha1: str, body: bytes = b"") -> bool:
    """Whether ``resp`` is the right response for ``method`` given the user's ``ha1``.

    qop "auth" and no qop (RFC 2069 clients) are supported; "auth-int" is not and gives
    False (``body`` is reserved for it). Algorithms MD5, SHA-256 and their -sess
    variants; the comparison takes constant time.
    """
    expected = expected_response(resp, method, ha1)
    if expected is None:
        return False
    return hmac.compare_digest(expected.encode("ascii"), resp.response.lower().encode("utf-8"))


def uri_matches(digest_uri: str, request_uri: str) -> bool:
    """Loosely, whether the digest ``uri`` parameter names the Request-URI.

    RFC 3261 section 22.4 wants them equal, but devices and intermediaries differ in
    parameters and escaping; this accepts equal text, or the same scheme, user, host and
    port (parameters and headers ignored). Unparsable URIs do not match.
    """
    if digest_uri.strip() == request_uri.strip():
        return True
    try:
        left = parse_uri(digest_uri.strip())
        right = parse_uri(request_uri.strip())
    except SIPError:
        return False
    if left.opaque is not None or right.opaque is not None:
        return False
    return (
        left.scheme == right.scheme
        and left.host.lower() == right.host.lower()
        and left.port == right.port
        and _unescaped(left.user) == _unescaped(right.user)
    )


def _unescaped(text: str | None) -> str | None:
    return unescape(text) if text is not None else None


# ---------------------------------------------------------------------------------------
# One request


AuthKind = Literal["ok", "challenge", "stale", "failed"]


@dataclass(frozen=True)
class AuthResult:
    """What :meth:`Authenticator.check` decided.

    - "ok": ``username`` is authenticated in ``realm``; ``challenges`` is empty.
    - "challenge": no usable credentials for this realm (none sent, an unknown or
      forged nonce, an algorithm not offered): answer 401/407 with ``challenges``.
    - "stale": the digest was right but the nonce expired or its nc was replayed:
      answer 401/407 with ``challenges`` (they carry stale=true).
    - "failed": wrong password or unknown user, deliberately the same. ``challenges``
      holds fresh ones for a caller that re-challenges; otherwise answer 403.

    The result never tells an unknown user from a wrong password; do not add that here.
    """

    kind: AuthKind
    realm: str
    username: str | None = None
    challenges: tuple[str, ...] = ()


class Authenticator:
    """Checks the Authorization values of one request against a credential store.

    ``algorithms`` are offered in challenges (strongest first) and accepted in answers,
    with their -sess variants. A user whose store holds no HA1 for the algorithm the
    client picked fails like a wrong password, so offer only algorithms the store has.
    ``realm_for`` maps the ``realm`` argument of :meth:`check` (typically the domain
    the request is for) to the digest realm; by default the two are the same.
    ``allow_no_qop`` accepts RFC 2069 answers without qop (no replay protection).
    """

    def __init__(
        self,
        credentials: CredentialStore,
        nonces: NonceFactory,
        counter: NonceCountStore,
        algorithms: Sequence[str] = ("SHA-256", "MD5"),
        realm_for: Callable[[str], str] | None = None,
        allow_no_qop: bool = True,
        check_uri: bool = True,
    ) -> None:
        offered = [a.upper() for a in algorithms]
        for name in offered:
            if name not in _STRENGTH:
                raise ValueError(f"unsupported digest algorithm {name!r}")
        if not offered:
            raise ValueError("at least one digest algorithm is needed")
        self.credentials = credentials
        self.nonces = nonces
        self.counter = counter
        self.algorithms = tuple(sorted(set(offered), key=_STRENGTH.__getitem__))
        self._accepted = frozenset(offered) | {f"{a.removesuffix('-SESS')}-SESS" for a in offered}
        self.realm_for = realm_for or (lambda realm: realm)
        self.allow_no_qop = allow_no_qop
        self.check_uri = check_uri
        # Stand-in HA1 values for unknown users: the same work as a real check, never a match.
        seed = os.urandom(32).hex()
        self._dummy = {name: hash_hex(name.removesuffix("-SESS"), seed) for name in SUPPORTED_ALGORITHMS}

    def challenges(self, realm: str, now: float, stale: bool = False) -> tuple[str, ...]:
        """Fresh challenge values for the digest realm ``realm``."""
        nonce = self.nonces.make(now, realm)
        return tuple(challenge(realm, nonce, self.algorithms, stale=stale))

    def check(
        self,
        request_method: str,
        header_values: Sequence[str],
        realm: str,
        now: float,
        request_uri: str | None = None,
    ) -> AuthResult:
        """Decide on a request from its Authorization (or Proxy-Authorization) values.

        Values for other realms or other schemes are ignored (they belong to other
        elements). A malformed Digest value raises ``SIPError(400)``. When
        ``request_uri`` is given and ``check_uri`` is on, the digest uri must match it
        (:func:`uri_matches`).
        """
        realm = self.realm_for(realm)
        resp = None
        for value in header_values:
            parsed = parse_authorization(value)
            if parsed is not None and parsed.realm == realm:
                resp = parsed
                break
        if resp is None or resp.algorithm not in self._accepted:
            return self._challenge("challenge", realm, now)
        if resp.qop is None and not self.allow_no_qop:
            return self._challenge("challenge", realm, now)
        status = self.nonces.check(resp.nonce, now, realm)
        if status == "invalid":
            return self._challenge("challenge", realm, now)
        # From here on an unknown user and a wrong password take the same steps.
        # -sess variants use the HA1 of their base algorithm; stores only know MD5 and SHA-256.
        ha1 = self.credentials.ha1(resp.username, realm, resp.algorithm.removesuffix("-SESS"))
        known = ha1 is not None
        good = verify(resp, request_method, ha1 if ha1 is not None else self._dummy[resp.algorithm])
        uri_ok = not self.check_uri or request_uri is None or uri_matches(resp.uri, request_uri)
        if not (known and good and uri_ok):
            return self._challenge("failed", realm, now)
        if status == "stale":
            return self._challenge("stale", realm, now, stale=True)
        nc = resp.nc_value
        if nc is not None and self.counter.seen(resp.nonce, nc, now):
            return self._challenge("stale", realm, now, stale=True)
        return AuthResult("ok", realm, username=resp.username)

    def _challenge(self, kind: AuthKind, realm: str, now: float, stale: bool = False) -> AuthResult:
        return AuthResult(kind, realm, challenges=self.challenges(realm, now, stale=stale))
