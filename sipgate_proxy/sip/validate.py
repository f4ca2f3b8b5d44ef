"""Request validation of a proxy (RFC 3261 16.3) and Via stamping (18.2.1)."""

from __future__ import annotations

from .errors import SIPError
from .headers import Via, parse_cseq, parse_int_header, parse_name_addr, parse_via, split_values
from .message import Message, Request, pretty_name
from .settings import bare

#: methods this proxy knows; others are forwarded all the same (16.3)
KNOWN_METHODS = frozenset(
    {
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "SUBSCRIBE",
        "NOTIFY",
        "REFER",
        "MESSAGE",
        "PRACK",
        "UPDATE",
        "INFO",
        "PUBLISH",
    }
)

#: URI schemes a request may be routed on
ROUTABLE_SCHEMES = frozenset({"sip", "sips", "tel"})

_SINGLE = ("call-id", "from", "to", "cseq")
_WATCHED = frozenset({*_SINGLE, "max-forwards", "proxy-require", "contact"})


def validate_request(request: Request) -> int | None:
    """Check 16.3 steps 1, 2 and 5; return Max-Forwards (None when absent).

    Raises :class:`SIPError` with the status the request should get. One pass
    over the headers collects what the checks need.
    """
    seen: dict[str, list[str]] = {}
    for name, value, _ in request.headers:
        if name in _WATCHED:
            found = seen.get(name)
            if found is None:
                seen[name] = [value]
            else:
                found.append(value)
    for key in _SINGLE:
        values = seen.get(key)
        if values is None:
            raise SIPError(400, f"Missing {pretty_name(key)} header")
        if len(values) > 1:
            raise SIPError(400, f"More than one {pretty_name(key)} header")
    if request._cseq is None:
        request._cseq = parse_cseq(seen["cseq"][0])
    method = request._cseq[1]
    if method != request.method:
        if request.method not in KNOWN_METHODS:
            raise SIPError(501, "Not Implemented (CSeq method does not match the Request-Line)")
        raise SIPError(400, "CSeq method does not match the Request-Line")
    request.top_via  # noqa: B018 - a bad top Via is a bad request
    request.to  # noqa: B018
    request.from_  # noqa: B018
    max_forwards: int | None = None
    values = seen.get("max-forwards")
    if values is not None:
        if len(values) > 1:
            raise SIPError(400, "More than one Max-Forwards header")
        max_forwards = parse_int_header(values[0], "Max-Forwards", 255)
    if request.method == "REGISTER" and "contact" in seen:
        # a proxy forwards Contact untouched; only bindings must parse
        contacts = request.values("contact")
        if not (len(contacts) == 1 and contacts[0].strip() == "*"):
            for value in contacts:
                parse_name_addr(value)
    uri = request.uri
    if uri.scheme not in ROUTABLE_SCHEMES:
        raise SIPError(416, f"Unsupported URI Scheme {uri.scheme[:20]}")
    if uri.headers is not None:
        raise SIPError(400, "Request-URI must not carry headers")
    if "proxy-require" in seen:
        tags = ", ".join(tag.strip() for tag in request.values("proxy-require"))
        raise SIPError(420, "Bad Extension", (("Unsupported", tags),))
    return max_forwards


def stamp_via(request: Message, source_host: str, source_port: int) -> Via:
    """Add received and rport to the top Via (RFC 3261 18.2.1, RFC 3581).

    Returns the (possibly changed) top Via; the header line is rewritten only
    when something changed.
    """
    headers = request.headers
    index = next((i for i, entry in enumerate(headers) if entry[0] == "via"), -1)
    if index < 0:
        raise SIPError(400, "Missing Via header")
    value = headers[index][1]
    if "," in value:
        parts = split_values(value)
        via = parse_via(parts[0])
    else:
        parts = None
        via = parse_via(value)
    changed = False
    if bare(via.host) != source_host:
        via.set_param("received", source_host)
        changed = True
    if via.rport is not None:
        via.set_param("rport", str(source_port))
        changed = True
    if changed:
        text = str(via)
        if parts is not None:
            text = ", ".join([text, *parts[1:]])
        headers[index] = ("via", text, f"Via: {text}")
        request._vias = None
    request._top_via = via
    return via
