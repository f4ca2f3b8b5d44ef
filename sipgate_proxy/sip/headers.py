"""Header values: names, lists, parameters, Via, name-addr, CSeq, integers.

Values come in unfolded (the message layer joins continuation lines) as
``str`` holding the wire octets (latin-1). Linear whitespace is space, tab,
CR and LF only: the latin-1 characters NBSP and NEL are data, not space.
Malformed values raise ``SIPError(400, reason)``; reasons never echo the
input because they end up in a status line.
"""

from __future__ import annotations

import dataclasses
import re

from sipgate_proxy.sip.errors import SIPError
from sipgate_proxy.sip.uri import (
    URI,
    Params,
    format_params,
    parse_host,
    parse_port,
    parse_uri,
)

__all__ = [
    "COMPACT_FORMS",
    "NameAddr",
    "Params",
    "Via",
    "canonical_name",
    "is_star_contact",
    "parse_cseq",
    "parse_int_header",
    "parse_name_addr",
    "parse_params",
    "parse_via",
    "quote",
    "split_values",
    "unquote",
]

COMPACT_FORMS: dict[str, str] = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",
    "r": "refer-to",
    "b": "referred-by",
    "x": "session-expires",
    "u": "allow-events",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
    "y": "identity",
    "n": "identity-info",
}
"""Compact header letter (lower case) -> canonical lower-case long name."""

_WS = " \t\r\n"
_LWS = r"[ \t\r\n]"
_TOKEN = r"[A-Za-z0-9.!%*_+`'~\-]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'

_QUOTED_RE = re.compile(_QUOTED, re.DOTALL)
_QUOTED_PAIR_RE = re.compile(r"\\(.)", re.DOTALL)
_QUOTE_ESCAPE_RE = re.compile(r'["\\\x00-\x08\x0b\x0c\x0e-\x1f\x7f]')
_SPLIT_RE = re.compile(rf'[^",<]+|{_QUOTED}|<[^>]*>|,', re.DOTALL)
_PARAM_RE = re.compile(
    rf"{_LWS}*;{_LWS}*({_TOKEN}){_LWS}*"
    rf'(?:={_LWS}*({_QUOTED}|[^ \t\r\n;",<>]*))?{_LWS}*',
    re.DOTALL,
)
# The usual shape (";branch=z9hG4bK1;rport"): no LWS, no quotes; split it.
_SIMPLE_PARAMS_RE = re.compile(rf'(?:;{_TOKEN}(?:=[^ \t\r\n;",<>]*)?)+')
_EMPTY_PARAM_RE = re.compile(rf"{_LWS}*;{_LWS}*(?:;|$)")
_VIA_PROTOCOL_RE = re.compile(rf"{_LWS}*({_TOKEN}){_LWS}*/{_LWS}*({_TOKEN}){_LWS}*/{_LWS}*({_TOKEN})")
_VIA_SENT_BY_RE = re.compile(rf"{_LWS}+(\[[^\]]*\]|[^ \t\r\n:;\[\]]+)(?:{_LWS}*:{_LWS}*([^ \t\r\n;]*))?{_LWS}*")
# Words of an unquoted display name: anything but controls, space and the
# separators that would make the value ambiguous ('"', ',', ';', '<' ...).
_DISPLAY_WORD = r'[^\x00-\x20\x7f()<>@,;:\\"/\[\]?={}]+'
_DISPLAY_TOKENS_RE = re.compile(rf"{_DISPLAY_WORD}(?:{_LWS}+{_DISPLAY_WORD})*")
_CSEQ_RE = re.compile(rf"{_LWS}*([0-9]+){_LWS}+({_TOKEN}){_LWS}*")
_URI_NEEDS_BRACKETS_RE = re.compile(r"[,;?]")


def canonical_name(name: str) -> str:
    """Lower-case long form of a header name (compact forms expanded)."""
    lname = name.strip(_WS).lower()
    return COMPACT_FORMS.get(lname, lname)


def split_values(value: str) -> list[str]:
    """Split a comma-separated header value on top-level commas.

    Commas inside quoted strings and inside ``<...>`` do not split. Each
    element is stripped; an empty element (``a,,b``, a trailing comma) is an
    error, an all-blank value is the empty list.
    """
    if '"' not in value and "<" not in value:
        if "," not in value:
            single = value.strip(_WS)
            return [single] if single else []
        parts = [part.strip(_WS) for part in value.split(",")]
    else:
        parts = []
        start = pos = 0
        end = len(value)
        while pos < end:
            match = _SPLIT_RE.match(value, pos)
            if match is None:
                if value[pos] == '"':
                    raise SIPError(400, "Bad header: unterminated quoted string")
                raise SIPError(400, "Bad header: '<' without '>'")
            if match.group(0) == ",":
                parts.append(value[start:pos].strip(_WS))
                start = match.end()
            pos = match.end()
        parts.append(value[start:].strip(_WS))
        if len(parts) == 1 and not parts[0]:
            return []
    if not all(parts):
        raise SIPError(400, "Bad header: empty element in comma-separated list")
    return parts


def quote(text: str) -> str:
    """Make a quoted-string; ``"``, ``\\`` and control characters are escaped.

    CR and LF cannot be quoted in SIP and raise ValueError.
    """
    if "\r" in text or "\n" in text:
        raise ValueError("CR and LF cannot appear in a SIP quoted-string")
    return '"' + _QUOTE_ESCAPE_RE.sub(r"\\\g<0>", text) + '"'


def unquote(text: str) -> str:
    """Content of a quoted-string with ``\\`` escapes resolved.

    Text that does not start with ``"`` is returned unchanged (a token); a
    quoted-string that is not properly closed raises ``SIPError(400)``.
    """
    if not text.startswith('"'):
        return text
    if _QUOTED_RE.fullmatch(text) is None:
        raise SIPError(400, "Bad quoted string: not terminated")
    inner = text[1:-1]
    if "\\" in inner:
        return _QUOTED_PAIR_RE.sub(r"\1", inner)
    return inner


def parse_params(text: str) -> Params:
    """Parse ``;name=value;flag`` (leading ``;`` optional, LWS tolerated).

    Values may be tokens, hosts (``[2001:db8::1]``) or quoted strings, which
    are kept with their quotes. A flag has the value None.
    """
    if _SIMPLE_PARAMS_RE.fullmatch(text) is not None:
        simple: Params = []
        for item in text[1:].split(";"):
            name, eq, value = item.partition("=")
            simple.append((name, value if eq else None))
        return simple
    if not text.strip(_WS):
        return []
    if not text.lstrip(_WS).startswith(";"):
        text = ";" + text
    params: Params = []
    pos = 0
    end = len(text)
    while pos < end:
        match = _PARAM_RE.match(text, pos)
        if match is None:
            raise SIPError(400, _param_error(text, pos))
        params.append((match.group(1), match.group(2)))
        pos = match.end()
    return params


def _param_error(text: str, pos: int) -> str:
    if _EMPTY_PARAM_RE.match(text, pos):
        return "Bad parameter: empty name"
    if '"' in text[pos:] and _QUOTED_RE.search(text, pos) is None:
        return "Bad parameter: unterminated quoted string"
    return "Bad parameter: malformed"


def _find_param(params: Params, name: str) -> str | None:
    lname = name.lower()
    for pname, value in params:
        if pname == name or pname.lower() == lname:
            return "" if value is None else value
    return None


def _set_param(params: Params, name: str, value: str | None) -> None:
    lname = name.lower()
    for index, (pname, _) in enumerate(params):
        if pname.lower() == lname:
            params[index] = (pname, value)
            return
    params.append((name, value))


@dataclasses.dataclass(slots=True)
class Via:
    """One via-parm: ``SIP/2.0/UDP host:port;branch=...``."""

    protocol: str = "SIP/2.0"
    transport: str = "UDP"
    host: str = ""
    port: int | None = None
    params: Params = dataclasses.field(default_factory=list)

    def param(self, name: str) -> str | None:
        """Value of parameter ``name`` (any case); ``""`` for a flag."""
        return _find_param(self.params, name)

    def set_param(self, name: str, value: str | None) -> None:
        """Replace the value of ``name`` in place, or append it."""
        _set_param(self.params, name, value)

    @property
    def branch(self) -> str | None:
        """The ``branch`` parameter, or None."""
        return _find_param(self.params, "branch")

    @property
    def received(self) -> str | None:
        """The ``received`` parameter as written (brackets kept), or None."""
        return _find_param(self.params, "received")

    @property
    def rport(self) -> str | None:
        """None if absent, ``""`` for a bare ``;rport``, else the value."""
        return _find_param(self.params, "rport")

    @property
    def maddr(self) -> str | None:
        """The ``maddr`` parameter, or None."""
        return _find_param(self.params, "maddr")

    @property
    def ttl(self) -> str | None:
        """The ``ttl`` parameter, or None."""
        return _find_param(self.params, "ttl")

    def __str__(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        params = format_params(self.params) if self.params else ""
        return f"{self.protocol}/{self.transport} {self.host}{port}{params}"


def parse_via(value: str) -> Via:
    """Parse one via-parm (split the header with :func:`split_values` first).

    Whitespace around ``/``, ``:``, ``;`` and ``=`` is tolerated (RFC 4475
    wsinv); the transport is upper-cased and may be any token.
    """
    protocol = _VIA_PROTOCOL_RE.match(value)
    if protocol is None:
        raise SIPError(400, "Bad Via: expected protocol/version/transport")
    sent_by = _VIA_SENT_BY_RE.match(value, protocol.end())
    if sent_by is None:
        tail = value[protocol.end() :].strip(_WS)
        if not tail or tail[0] == ";":
            raise SIPError(400, "Bad Via: missing sent-by")
        raise SIPError(400, "Bad Via: malformed sent-by")
    try:
        host = parse_host(sent_by.group(1))
        port_text = sent_by.group(2)
        port: int | None = None
        if port_text is not None:
            if ":" in port_text:
                raise SIPError(400, "Bad host: IPv6 address must be enclosed in brackets")
            port = parse_port(port_text)
        rest = value[sent_by.end() :]
        if rest and rest[0] != ";":
            raise SIPError(400, "unexpected text after sent-by")
        params = parse_params(rest) if rest else []
    except SIPError as exc:
        raise SIPError(400, f"Bad Via: {exc.reason}") from None
    return Via(
        f"{protocol.group(1)}/{protocol.group(2)}",
        protocol.group(3).upper(),
        host,
        port,
        params,
    )


@dataclasses.dataclass(slots=True)
class NameAddr:
    """A To/From/Contact/Route value: display name, URI, header params.

    ``display`` is as written (with its quotes if quoted) or None.
    ``bracketed`` records whether the URI was in ``<...>``; serialising adds
    brackets anyway when the URI would otherwise be ambiguous.
    """

    display: str | None
    uri: URI
    params: Params = dataclasses.field(default_factory=list)
    bracketed: bool = True

    @property
    def tag(self) -> str | None:
        """The ``tag`` header parameter, or None."""
        return _find_param(self.params, "tag")

    def param(self, name: str) -> str | None:
        """Value of header parameter ``name`` (any case); ``""`` for a flag."""
        return _find_param(self.params, name)

    def set_param(self, name: str, value: str | None) -> None:
        """Replace header parameter ``name`` in place, or append it."""
        _set_param(self.params, name, value)

    def __str__(self) -> str:
        uri = str(self.uri)
        params = format_params(self.params) if self.params else ""
        if self.display is not None:
            return f"{self.display} <{uri}>{params}"
        if self.bracketed or _URI_NEEDS_BRACKETS_RE.search(uri) is not None:
            return f"<{uri}>{params}"
        return uri + params


def is_star_contact(value: str) -> bool:
    """Whether a Contact value is the wildcard ``*`` (REGISTER removal)."""
    return value.strip(_WS) == "*"


def parse_name_addr(value: str) -> NameAddr:
    """Parse one name-addr or addr-spec value.

    With ``<...>`` the parameters after ``>`` are header parameters; without
    brackets all ``;`` parameters after the URI are header parameters too
    (RFC 3261 20.10), and a URI carrying ``?headers`` must be bracketed.
    """
    text = value.strip(_WS)
    if not text:
        raise SIPError(400, "Bad address: empty")
    if text[0] == '"':
        quoted = _QUOTED_RE.match(text)
        if quoted is None:
            raise SIPError(400, "Bad address: unterminated quoted display name")
        display: str | None = quoted.group(0)
        lt = quoted.end()
        while lt < len(text) and text[lt] in _WS:
            lt += 1
        if lt >= len(text) or text[lt] != "<":
            raise SIPError(400, "Bad address: quoted display name without <URI>")
    else:
        lt = text.find("<")
        semi = text.find(";")
        if lt < 0 or 0 <= semi < lt:
            return _parse_addr_spec(text)
        display = text[:lt].rstrip(_WS) or None
        if display is not None and _DISPLAY_TOKENS_RE.fullmatch(display) is None:
            raise SIPError(400, "Bad address: display name with special characters not quoted")
    gt = text.find(">", lt + 1)
    if gt < 0:
        raise SIPError(400, "Bad address: '<' without '>'")
    uri = parse_uri(text[lt + 1 : gt])
    rest = text[gt + 1 :]
    if rest and rest.lstrip(_WS)[:1] != ";":
        raise SIPError(400, "Bad address: unexpected text after '>'")
    return NameAddr(display, uri, parse_params(rest) if rest else [], True)


def _parse_addr_spec(text: str) -> NameAddr:
    # The user part may hold ';' (RFC 4475 semiuri), so header parameters
    # start at the first ';' after the '@' (or after the scheme when there
    # is no userinfo). A quoted parameter value may hold an '@'.
    at = text.find("@")
    dquote = text.find('"')
    start = at if at >= 0 and (dquote < 0 or at < dquote) else text.find(":")
    semi = text.find(";", max(start, 0))
    if semi >= 0:
        uri_text = text[:semi].rstrip(_WS)
        rest = text[semi:]
    else:
        uri_text = text
        rest = ""
    uri = parse_uri(uri_text)
    if uri.headers is not None:
        raise SIPError(400, "Bad address: URI with headers must be in '<' '>'")
    return NameAddr(None, uri, parse_params(rest) if rest else [], False)


def parse_cseq(value: str) -> tuple[int, str]:
    """``"4711 INVITE"`` -> ``(4711, "INVITE")``; the number is 32 bits."""
    match = _CSEQ_RE.fullmatch(value)
    if match is None:
        parts = value.split()
        if not parts:
            raise SIPError(400, "Bad CSeq: empty")
        if not (parts[0].isascii() and parts[0].isdigit()):
            raise SIPError(400, "Bad CSeq: sequence number is not a number")
        if len(parts) == 1:
            raise SIPError(400, "Bad CSeq: missing method")
        raise SIPError(400, "Bad CSeq: malformed method")
    digits = match.group(1).lstrip("0")
    if len(digits) > 10 or (digits and int(digits) > 0xFFFFFFFF):
        raise SIPError(400, "Bad CSeq: sequence number too large")
    return (int(digits) if digits else 0), match.group(2)


def parse_int_header(value: str, name: str, maximum: int) -> int:
    """Digits-only header value (Max-Forwards, Expires, Content-Length).

    Surrounding whitespace is allowed; anything else, or a number above
    ``maximum``, raises ``SIPError(400, f"Bad {name}")``.
    """
    text = value.strip(_WS)
    if not (text.isascii() and text.isdigit()):
        raise SIPError(400, f"Bad {name}")
    digits = text.lstrip("0")
    if not digits:
        return 0
    if len(digits) > len(str(maximum)) or int(digits) > maximum:
        raise SIPError(400, f"Bad {name}")
    return int(digits)
