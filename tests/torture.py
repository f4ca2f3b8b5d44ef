"""What the proxy must do with each RFC 4475 / RFC 5118 torture message.

Shared by the in-process test of the core and the test against the running
proxy. ``FORWARD`` means the request reaches the next hop (the test's sink)
and its answer comes back; a number is the status the proxy itself answers;
``DROP`` means nothing comes back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).parent / "data"

FORWARD = "forward"
DROP = "drop"


@dataclass(frozen=True)
class Case:
    name: str
    path: Path
    outcome: str | int
    #: substrings the forwarded request must contain (bytes), or must not
    must_keep: tuple[bytes, ...] = ()
    must_not_forward: tuple[bytes, ...] = ()


def _r4475(name: str, outcome: str | int, **kw: tuple[bytes, ...]) -> Case:
    return Case(name, DATA / "rfc4475" / f"{name}.dat", outcome, **kw)


def _r5118(name: str, outcome: str | int) -> Case:
    return Case(f"rfc5118-{name}", DATA / "rfc5118" / "wire" / f"{name}.dat", outcome)


CASES = [
    # 3.1.1 valid messages: forwarded, unknown things untouched
    _r4475(
        "wsinv",
        FORWARD,
        must_keep=(b"UnknownHeaderWithUnusualValue: ;;,,;;,;",),
    ),
    _r4475("intmeth", FORWARD, must_keep=(b"!interesting-Method0123456789_*+`.%indeed'~ ",)),
    _r4475("esc01", FORWARD, must_keep=(b"INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0",)),
    _r4475("escnull", FORWARD),
    _r4475("esc02", FORWARD, must_keep=(b"RE%47IST%45R sip:registrar.example.com SIP/2.0",)),
    _r4475("lwsdisp", FORWARD),
    _r4475("longreq", FORWARD),
    _r4475("dblreq", FORWARD, must_not_forward=(b"INVITE sip:joe@example.com",)),
    _r4475("semiuri", FORWARD, must_keep=(b"OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0",)),
    _r4475("transports", FORWARD),
    _r4475("mpart01", FORWARD, must_keep=(b"Content-Type: multipart/mixed;boundary=7a9cbec02ceef655",)),
    _r4475("unreason", DROP),
    _r4475("noreason", DROP),
    # 3.1.2 invalid messages
    _r4475("badinv01", 400),
    _r4475("clerr", 400),
    _r4475("ncl", 400),
    _r4475("scalar02", 400),
    _r4475("scalarlg", DROP),
    _r4475("quotbal", 400),
    _r4475("ltgtruri", 400),
    _r4475("lwsruri", 400),
    _r4475("lwsstart", 400),
    _r4475("trws", 400),
    _r4475("escruri", 400),
    _r4475("baddate", FORWARD),
    _r4475("regbadct", 400),
    _r4475("badaspec", 400),
    _r4475("baddn", 400),
    _r4475("badvers", 505),
    _r4475("mismatch01", 400),
    _r4475("mismatch02", 501),
    _r4475("bigcode", DROP),
    # 3.2 transaction layer
    _r4475("badbranch", FORWARD),
    # 3.3 application layer semantics
    _r4475("insuf", 400),
    _r4475("unkscm", 416),
    _r4475("novelsc", 416),
    _r4475("unksm2", FORWARD),
    _r4475("bext01", 420),
    _r4475("invut", FORWARD, must_keep=(b"Content-Type: application/unknownformat",)),
    _r4475("regaut01", FORWARD, must_keep=(b"Authorization: NoOneKnowsThisScheme opaque-data=here",)),
    _r4475("multi01", 400),
    _r4475("mcl01", 400),
    _r4475("bcast", DROP),
    _r4475("zeromf", 483),
    _r4475("cparam01", FORWARD),
    _r4475("cparam02", FORWARD),
    _r4475("regescrt", FORWARD, must_keep=(b"?Route=%3Csip:sip.example.com%3E>",)),
    _r4475("sdp01", FORWARD),
    # 3.4 backward compatibility
    _r4475("inv2543", FORWARD),
    # not in the RFC text: a Request-Line without version and no Via
    _r4475("test", DROP),
    # RFC 5118 IPv6
    _r5118("ipv6-good", FORWARD),
    _r5118("ipv6-bad", 400),
    _r5118("port-ambiguous", FORWARD),
    _r5118("port-unambiguous", FORWARD),
    _r5118("via-received-param-with-delim", FORWARD),
    _r5118("via-received-param-no-delim", FORWARD),
    _r5118("ipv6-in-sdp", FORWARD),
    _r5118("mult-ip-in-header", FORWARD),
    _r5118("mult-ip-in-sdp", FORWARD),
    _r5118("ipv4-mapped-ipv6", FORWARD),
    _r5118("ipv6-bug-abnf-3-colons", FORWARD),
    _r5118("ipv6-correct-abnf-2-colons", FORWARD),
]


def top_via_transport(data: bytes) -> str:
    """ "udp" or "tcp" as the message's top Via names (TLS goes over TCP)."""
    for line in data.replace(b"\r\n", b"\n").split(b"\n"):
        head = line.split(b":", 1)[0].strip().lower()
        if head in (b"via", b"v") and b":" in line:
            value = line.split(b":", 1)[1].upper()
            if b"/TCP" in value or b"/TLS" in value:
                return "tcp"
            return "udp"
    return "udp"
