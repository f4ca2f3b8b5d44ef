"""SIP, SIPS and tel URIs: parse, serialise and compare.

Grammar: RFC 3261 section 19.1 and 25, IPv6 references per RFC 5118, tel
URIs per RFC 3966. Any other scheme is kept opaque so that the proxy can
answer 416 instead of 400.

Text is a ``str`` whose characters are the wire octets (latin-1), so an
escape such as ``%E9`` unescapes to ``"\\xe9"``. Components are stored as
written (still %-escaped); only the scheme and the host are lower-cased.
Reason phrases of the errors raised here never echo the input, because they
end up in a status line.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from typing import Any

from sipgate_proxy.sip.errors import SIPError

__all__ = [
    "URI",
    "Params",
    "escape_user",
    "format_params",
    "parse_host",
    "parse_port",
    "parse_uri",
    "unescape",
]

Params = list[tuple[str, str | None]]
"""Parameters in order: (name as written, value or None for a flag)."""

_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_WHITESPACE_RE = re.compile(r"[ \t\r\n]")
_BAD_CHAR_RE = re.compile(r"[\x00-\x20\x7f<>]")
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_\-]*[A-Za-z0-9_])?"
_HOSTNAME_RE = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}\.?")
_IPV6_REF_RE = re.compile(r"\[[0-9A-Fa-f:.]+\]")
_ESCAPE_RE = re.compile(r"%([0-9A-Fa-f]{2})")
_USER_UNSAFE_RE = re.compile(r"[^A-Za-z0-9\-_.!~*'()&=+$,;?/]")

# Parameters that make two SIP URIs differ when only one of them has it
# (RFC 3261 19.1.4).
_STRICT_PARAMS = ("user", "ttl", "method", "maddr", "transport")
_TEL_SEPARATORS_RE = re.compile(r"[\-.()]")


def unescape(text: str) -> str:
    """Decode ``%HH`` escapes; a ``%`` not followed by two hex digits stays.

    One pass only (``%2541`` becomes ``%41``, never ``A``).
    """
    if "%" not in text:
        return text
    return _ESCAPE_RE.sub(_unescape_match, text)


def _unescape_match(match: re.Match[str]) -> str:
    return chr(int(match.group(1), 16))


def escape_user(text: str) -> str:
    """Escape ``text`` for the user part of a SIP URI.

    Keeps unreserved and user-unreserved characters (``&=+$,;?/``); ``%``,
    ``@``, ``:`` and everything else become ``%HH``. Characters above U+00FF
    (which wire text never holds) are escaped as their UTF-8 octets.
    """
    if _USER_UNSAFE_RE.search(text) is None:
        return text
    return _USER_UNSAFE_RE.sub(_escape_match, text)


def _escape_match(match: re.Match[str]) -> str:
    char = match.group(0)
    code = ord(char)
    if code < 0x100:
        return f"%{code:02X}"
    return "".join(f"%{octet:02X}" for octet in char.encode("utf-8"))


def format_params(params: Params) -> str:
    """Serialise parameters as ``;name=value;flag`` (empty for no params)."""
    return "".join(f";{name}" if value is None else f";{name}={value}" for name, value in params)


def parse_port(text: str) -> int:
    """Return the port number in ``text`` or raise ``SIPError(400)``."""
    if not (text.isascii() and text.isdigit()):
        raise SIPError(400, "Bad port: not a number")
    digits = text.lstrip("0")
    if not digits:
        return 0
    if len(digits) > 5 or int(digits) > 65535:
        raise SIPError(400, "Bad port: out of range")
    return int(digits)


def parse_host(text: str) -> str:
    """Validate a hostname, IPv4 address or bracketed IPv6 reference.

    Returns it lower-cased (brackets kept). An IPv6 address without
    brackets, as in ``2001:db8::10``, is rejected (RFC 5118 4.2).
    """
    if not text:
        raise SIPError(400, "Bad host: missing")
    if text[0] == "[":
        if _IPV6_REF_RE.fullmatch(text) is None or text.count(":") < 2:
            raise SIPError(400, "Bad host: invalid IPv6 reference")
        return text.lower()
    if _HOSTNAME_RE.fullmatch(text) is None:
        if ":" in text:
            raise SIPError(400, "Bad host: IPv6 address must be enclosed in brackets")
        raise SIPError(400, "Bad host: invalid characters")
    return text.lower()


def _split_hostport(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SIPError(400, "Bad URI: unterminated IPv6 reference")
        host = parse_host(text[: end + 1])
        tail = text[end + 1 :]
        if not tail:
            return host, None
        if tail[0] != ":":
            raise SIPError(400, "Bad URI: text after IPv6 reference")
        return host, parse_port(tail[1:])
    colon = text.find(":")
    if colon < 0:
        return parse_host(text), None
    if text.find(":", colon + 1) >= 0:
        raise SIPError(400, "Bad URI: IPv6 address must be enclosed in brackets")
    return parse_host(text[:colon]), parse_port(text[colon + 1 :])


def _parse_uri_params(text: str) -> Params:
    params: Params = []
    for item in text.split(";"):
        name, eq, value = item.partition("=")
        if not name:
            raise SIPError(400, "Bad URI: empty parameter name")
        params.append((name, value if eq else None))
    return params


@dataclasses.dataclass(slots=True, eq=False)
class URI:
    """A parsed URI; components as written except scheme and host (lower).

    For ``tel:`` the number is in ``user`` and ``host`` is empty. For other
    schemes everything after ``scheme:`` is in ``opaque`` and ``host`` is
    empty. Equality follows RFC 3261 19.1.4 for sip/sips.
    """

    scheme: str = "sip"
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: Params = dataclasses.field(default_factory=list)
    headers: str | None = None
    opaque: str | None = None

    def param(self, name: str) -> str | None:
        """Value of the first parameter called ``name`` (any case).

        ``""`` for a flag such as ``;lr``, None when absent.
        """
        lname = name.lower()
        for pname, value in self.params:
            if pname == name or pname.lower() == lname:
                return "" if value is None else value
        return None

    def has_param(self, name: str) -> bool:
        """Whether a parameter called ``name`` (any case) is present."""
        return self.param(name) is not None

    def with_param(self, name: str, value: str | None) -> URI:
        """A copy with ``name`` set to ``value`` (replaced in place or added)."""
        new = self.copy()
        lname = name.lower()
        for index, (pname, _) in enumerate(new.params):
            if pname.lower() == lname:
                new.params[index] = (pname, value)
                return new
        new.params.append((name, value))
        return new

    def without_param(self, name: str) -> URI:
        """A copy without any parameter called ``name`` (any case)."""
        lname = name.lower()
        return self.copy(params=[p for p in self.params if p[0].lower() != lname])

    def copy(self, **changes: Any) -> URI:
        """A copy with ``changes`` applied; the params list is never shared."""
        new = dataclasses.replace(self, **changes)
        if "params" not in changes:
            new.params = list(self.params)
        return new

    def host_port(self) -> tuple[str, int | None]:
        """``(host, port)``; port is None when the URI has none."""
        return self.host, self.port

    @property
    def transport(self) -> str | None:
        """The ``transport`` parameter lower-cased, or None."""
        value = self.param("transport")
        return value.lower() if value else None

    @property
    def is_secure(self) -> bool:
        """Whether this is a ``sips:`` URI."""
        return self.scheme == "sips"

    def __str__(self) -> str:
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts.append(self.user)
            if self.password is not None:
                parts += (":", self.password)
            if self.scheme != "tel":
                parts.append("@")
        parts.append(self.host)
        if self.port is not None:
            parts += (":", str(self.port))
        if self.params:
            parts.append(format_params(self.params))
        if self.headers is not None:
            parts += ("?", self.headers)
        return "".join(parts)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, URI):
            return NotImplemented
        if self.scheme != other.scheme:
            return False
        if self.opaque is not None or other.opaque is not None:
            return self.opaque == other.opaque
        if self.scheme == "tel":
            return _tel_key(self) == _tel_key(other)
        if self.port != other.port or _host_key(self.host) != _host_key(other.host):
            return False
        if _unescape_opt(self.user) != _unescape_opt(other.user):
            return False
        if _unescape_opt(self.password) != _unescape_opt(other.password):
            return False
        if not _params_match(self.params, other.params):
            return False
        return _headers_key(self.headers) == _headers_key(other.headers)

    def __hash__(self) -> int:
        if self.opaque is not None:
            return hash((self.scheme, self.opaque))
        if self.scheme == "tel":
            return hash((self.scheme, _tel_key(self)[0]))
        return hash((self.scheme, _host_key(self.host), self.port))


def _unescape_opt(text: str | None) -> str | None:
    return None if text is None else unescape(text)


def _host_key(host: str) -> str:
    host = host.lower()
    if host.startswith("["):
        try:
            return f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
        except ValueError:
            return host
    return host


def _param_dict(params: Params) -> dict[str, str]:
    result: dict[str, str] = {}
    for name, value in params:
        result.setdefault(unescape(name).lower(), unescape(value or "").lower())
    return result


def _params_match(left: Params, right: Params) -> bool:
    if not left and not right:
        return True
    mine, theirs = _param_dict(left), _param_dict(right)
    for name in _STRICT_PARAMS:
        if mine.get(name) != theirs.get(name):
            return False
    for name, value in mine.items():
        other = theirs.get(name)
        if other is not None and other != value:
            return False
    return True


def _headers_key(headers: str | None) -> list[tuple[str, str]]:
    if not headers:
        return []
    pairs = []
    for item in headers.split("&"):
        name, _, value = item.partition("=")
        pairs.append((unescape(name).lower(), unescape(value)))
    pairs.sort()
    return pairs


def _tel_key(uri: URI) -> tuple[str, list[tuple[str, str]]]:
    number = _TEL_SEPARATORS_RE.sub("", unescape(uri.user or "")).lower()
    params = sorted((unescape(n).lower(), unescape(v or "").lower()) for n, v in uri.params)
    return number, params


def parse_uri(text: str) -> URI:
    """Parse a URI or raise ``SIPError(400)`` saying what is wrong with it.

    Unknown schemes parse as ``scheme`` plus ``opaque`` so that the caller
    can answer 416 Unsupported URI Scheme.
    """
    bad = _BAD_CHAR_RE.search(text)
    if bad is not None:
        char = bad.group(0)
        if char in "<>":
            raise SIPError(400, "Bad URI: '<' or '>' inside URI")
        if _WHITESPACE_RE.match(char):
            raise SIPError(400, "Bad URI: whitespace inside URI")
        raise SIPError(400, "Bad URI: control character")
    match = _SCHEME_RE.match(text)
    if match is None:
        raise SIPError(400, "Bad URI: missing scheme")
    scheme = match.group(0)[:-1].lower()
    rest = text[match.end() :]
    if scheme == "sip" or scheme == "sips":
        return _parse_sip(scheme, rest)
    if not rest:
        raise SIPError(400, "Bad URI: nothing after scheme")
    if scheme == "tel":
        number, semi, tail = rest.partition(";")
        if not number:
            raise SIPError(400, "Bad URI: tel URI without number")
        return URI(scheme, number, params=_parse_uri_params(tail) if semi else [])
    return URI(scheme, opaque=rest)


def _parse_sip(scheme: str, rest: str) -> URI:
    user: str | None = None
    password: str | None = None
    at = rest.find("@")
    if at >= 0:
        user = rest[:at]
        colon = user.find(":")
        if colon >= 0:
            password = user[colon + 1 :]
            user = user[:colon]
        if not user:
            raise SIPError(400, "Bad URI: empty user part")
        rest = rest[at + 1 :]
    headers: str | None = None
    question = rest.find("?")
    if question >= 0:
        headers = rest[question + 1 :]
        rest = rest[:question]
    semi = rest.find(";")
    if semi >= 0:
        params = _parse_uri_params(rest[semi + 1 :])
        rest = rest[:semi]
    else:
        params = []
    if not rest:
        raise SIPError(400, "Bad URI: missing host")
    host, port = _split_hostport(rest)
    return URI(scheme, user, password, host, port, params, headers)
