"""What a router can decide about a request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class Target:
    """One place to send the request.

    ``uri`` becomes the Request-URI; ``next_hop``, when given, is where the
    request is sent instead of the address the URI names (an outbound proxy
    or gateway; its transport and port apply). ``headers`` are added to the
    request sent to this target.
    """

    uri: str
    next_hop: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    #: told how the branch to this target went (an IBranchObserver), or None
    observer: Any = field(default=None, compare=False)
    #: a name for logs and observers (a gateway or destination id)
    label: str | None = None
    #: with Forward(mode="grouped"): targets of one group ring in parallel,
    #: groups are tried in ascending order (registered contacts by q-value)
    group: int = 0


@dataclass(frozen=True, slots=True)
class Forward:
    """Send the request to ``targets``: all at once, or one after another."""

    targets: tuple[Target, ...]
    mode: Literal["parallel", "serial", "grouped"] = "parallel"
    #: attributes for the log line and later routers (dial plan results ...)
    attrs: dict[str, str] = field(default_factory=dict)
    #: final statuses that move a serial request to its next target; None:
    #: the proxy's configured set (routing.failover)
    failover: frozenset[int] | None = None
    #: give up on an INVITE branch that has not answered at all by its first
    #: retransmission (Timer A) and move on: a silent destination is dead
    fail_silent: bool = False
    #: with fail_silent: how long (seconds) to wait for any answer, 100 Trying
    #: included, before moving on; None waits for Timer A (T1)
    silent_after: float | None = None


@dataclass(frozen=True, slots=True)
class Redirect:
    """Answer 302 with these Contact URIs."""

    contacts: tuple[str, ...]
    status: int = 302


@dataclass(frozen=True, slots=True)
class Reject:
    """Answer with ``status`` and ``reason``."""

    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class Answer:
    """Answer the request here with ``status`` (a 2xx too) and these headers:
    what a registrar or a challenge (401/407 with WWW-Authenticate) needs."""

    status: int
    reason: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


Decision = Forward | Redirect | Reject | Answer


@dataclass(slots=True)
class RequestContext:
    """What a router knows about a request besides the request itself."""

    #: transport ("udp", "tcp"), address and port the request came from
    transport: str
    source_host: str
    source_port: int
    #: the time the request arrived (the reactor's clock)
    now: float
    #: attributes set by earlier routers, read by later ones
    attrs: dict[str, str] = field(default_factory=dict)
    #: name of the router that decided (set by the chain)
    decided_by: str | None = None
