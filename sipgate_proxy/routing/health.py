"""Destination health for the ``dispatcher`` router: states, thresholds, OPTIONS probes.

A destination (keyed by its URI string, as configured) is in one of four
states:

- ``active``: takes new calls;
- ``inactive``: down; takes no calls until probes bring it back;
- ``probing``: on its way back up (some, not yet ``up_after``, successful
  probes since it was down) or *suspect* (an INVITE to it went unanswered at
  Timer A). It takes new calls only when no destination of the set is active;
- ``disabled``: by the config or by an operator; never used, never probed.

Evidence comes from two sides. Probes (:class:`Prober`, OPTIONS every
``interval``) and passive checks (what the proxy core tells the router about
real branches) both call :meth:`HealthTable.alive`, :meth:`HealthTable.failed`,
:meth:`HealthTable.down` and :meth:`HealthTable.suspect`:

- ``alive``: consecutive failures are forgotten. A suspect destination is
  active again at once (it answered); an inactive or recovering one needs
  ``up_after`` consecutive successes, and is ``probing`` until then.
- ``failed``: ``down_after`` consecutive failures take an active (or
  suspect) destination down; one failure sends a recovering one back down.
- ``down``: at once (a branch timed out or met a 503).
- ``suspect``: an active destination becomes ``probing`` (suspect).

The table is in-process: each worker judges destinations on its own probes
and calls.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from twisted.logger import Logger

log = Logger(namespace="sipgate_proxy.dispatcher")

ACTIVE = "active"
INACTIVE = "inactive"
PROBING = "probing"
DISABLED = "disabled"
STATES = (ACTIVE, INACTIVE, PROBING, DISABLED)

ProbeMode = Literal["always", "inactive"]


@dataclass(slots=True)
class Health:
    """What is known about one destination."""

    uri: str
    state: str = ACTIVE
    #: consecutive successes (probes answered, responses) and failures
    successes: int = 0
    failures: int = 0
    #: in ``probing`` because an INVITE went unanswered, not on the way up
    suspect: bool = False
    #: time of the last change of state (the reactor's clock)
    since: float = 0.0
    #: the status that last changed or confirmed the state (0: none yet)
    last_status: int = 0
    disabled_by_config: bool = False
    disabled_by_admin: bool = False


class HealthTable:
    """The health of every destination of a router, keyed by URI string."""

    def __init__(self, down_after: int = 2, up_after: int = 1) -> None:
        if down_after < 1 or up_after < 1:
            raise ValueError("down_after and up_after must be at least 1")
        self.down_after = down_after
        self.up_after = up_after
        self._entries: dict[str, Health] = {}
        #: bumped on every change of state, so callers can cache what they derive
        self.version = 0
        #: called with ``(entry, old_state, why)`` after a change of state
        self.on_change: Callable[[Health, str, str], None] | None = None

    # -- membership --------------------------------------------------------

    def add(self, uri: str, disabled: bool = False, now: float = 0.0) -> Health:
        """Register ``uri`` (active, or disabled by the config); an existing entry is kept."""
        entry = self._entries.get(uri)
        if entry is None:
            entry = Health(uri, DISABLED if disabled else ACTIVE, since=now, disabled_by_config=disabled)
            self._entries[uri] = entry
            self.version += 1
        return entry

    def get(self, uri: str) -> Health | None:
        return self._entries.get(uri)

    def __contains__(self, uri: object) -> bool:
        return uri in self._entries

    def __iter__(self) -> Iterator[Health]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def state(self, uri: str) -> str:
        """The state of ``uri``; KeyError for a destination not in the table."""
        return self._entries[uri].state

    def states(self) -> dict[str, str]:
        """Every destination's state, in the order they were added."""
        return {uri: entry.state for uri, entry in self._entries.items()}

    # -- evidence ----------------------------------------------------------

    def alive(self, uri: str, now: float, status: int = 0) -> None:
        """``uri`` answered (a probe counted as alive, or any response to a call)."""
        entry = self._entries.get(uri)
        if entry is None or entry.state == DISABLED:
            return
        entry.failures = 0
        entry.successes += 1
        if entry.state == ACTIVE:
            return
        if entry.suspect:
            self._move(entry, ACTIVE, now, status, "answered after being suspect")
        elif entry.successes >= self.up_after:
            self._move(entry, ACTIVE, now, status, f"{entry.successes} successful probe(s)")
        elif entry.state == INACTIVE:
            self._move(entry, PROBING, now, status, "answered a probe, on its way back up")

    def failed(self, uri: str, now: float, status: int = 408) -> None:
        """A probe of ``uri`` failed (no answer, transport error, a status not counted as alive)."""
        entry = self._entries.get(uri)
        if entry is None or entry.state == DISABLED:
            return
        entry.successes = 0
        entry.failures += 1
        if entry.state == INACTIVE:
            return
        if entry.state == PROBING and not entry.suspect:
            self._move(entry, INACTIVE, now, status, "failed a probe while coming back")
        elif entry.failures >= self.down_after:
            self._move(entry, INACTIVE, now, status, f"{entry.failures} failed probe(s)")

    def down(self, uri: str, now: float, status: int, why: str = "") -> None:
        """Take ``uri`` down at once (a call to it timed out or met 503)."""
        entry = self._entries.get(uri)
        if entry is None or entry.state == DISABLED:
            return
        entry.successes = 0
        entry.failures = max(entry.failures, self.down_after)
        if entry.state != INACTIVE:
            self._move(entry, INACTIVE, now, status, why or f"a call ended with {status}")

    def suspect(self, uri: str, now: float) -> None:
        """An INVITE to ``uri`` got no answer by its first retransmission."""
        entry = self._entries.get(uri)
        if entry is None:
            return
        if entry.state == ACTIVE:
            entry.successes = 0
            entry.suspect = True
            self._move(entry, PROBING, now, 0, "an INVITE went unanswered (suspect)")

    def set_disabled(self, uri: str, disabled: bool, now: float = 0.0) -> None:
        """Disable or re-enable ``uri`` by hand; a re-enabled destination starts active."""
        entry = self._entries[uri]
        entry.disabled_by_admin = disabled
        if disabled and entry.state != DISABLED:
            self._move(entry, DISABLED, now, 0, "disabled by an operator")
        elif not disabled and entry.state == DISABLED and not entry.disabled_by_config:
            entry.successes = entry.failures = 0
            self._move(entry, ACTIVE, now, 0, "enabled by an operator")

    # -- reload ------------------------------------------------------------

    def take_over(self, previous: HealthTable) -> int:
        """Copy the health of every destination ``previous`` knows under the same URI.

        Returns how many were copied. A destination the new config disables
        stays disabled; one only the old config disabled starts active; one an
        operator disabled stays disabled.
        """
        copied = 0
        for uri, entry in self._entries.items():
            old = previous.get(uri)
            if old is None:
                continue
            copied += 1
            entry.disabled_by_admin = old.disabled_by_admin
            if entry.disabled_by_config or old.disabled_by_admin:
                entry.state = DISABLED
                continue
            if old.state == DISABLED:
                continue  # disabled by the old config only: starts afresh
            entry.state = old.state
            entry.successes = old.successes
            entry.failures = old.failures
            entry.suspect = old.suspect
            entry.since = old.since
            entry.last_status = old.last_status
        self.version += 1
        return copied

    # -- inside ------------------------------------------------------------

    def _move(self, entry: Health, state: str, now: float, status: int, why: str) -> None:
        old = entry.state
        entry.state = state
        entry.since = now
        entry.last_status = status
        if state != PROBING:
            entry.suspect = False
        self.version += 1
        log.info("destination {uri} {old} -> {new}: {why}", uri=entry.uri, old=old, new=state, why=why)
        if self.on_change is not None:
            self.on_change(entry, old, why)


# -- probes ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    """The validated ``probing`` table."""

    enabled: bool = True
    interval: float = 10.0
    timeout: float = 2.0
    down_after: int = 2
    up_after: int = 1
    #: statuses counted as alive; None: any final status but 408 and 503
    alive_codes: frozenset[int] | None = None
    #: "always": probe every destination; "inactive": only those not active
    mode: ProbeMode = "always"

    def is_alive(self, status: int) -> bool:
        """Whether a probe's final ``status`` shows the destination alive."""
        if self.alive_codes is None:
            return status not in (408, 503)
        return status in self.alive_codes


class Prober:
    """Sends OPTIONS to destinations every ``interval`` seconds and records the results.

    The first round goes out when :meth:`start` is called (the proxy runs);
    a destination whose probe has not reported yet is not probed again until
    it does (or until ``timeout + interval`` passed, should a sender forget).
    """

    def __init__(self, reactor: Any, table: HealthTable, settings: ProbeSettings) -> None:
        self.reactor = reactor
        self.table = table
        self.settings = settings
        self.sender: Any = None
        self._call: Any = None
        self._running = False
        #: URI -> time its unanswered probe was sent
        self._outstanding: dict[str, float] = {}

    @property
    def running(self) -> bool:
        return self._running

    def start(self, sender: Any) -> None:
        """Use ``sender`` (an IRequestSender) from now on; start the rounds if not running."""
        self.sender = sender
        if self._running or not self.settings.enabled:
            return
        self._running = True
        self.probe_round()

    def stop(self) -> None:
        """Cancel the next round; results of probes under way are ignored."""
        self._running = False
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()
        self._outstanding.clear()

    def due(self) -> list[str]:
        """The destinations the next round probes, by mode, in config order."""
        always = self.settings.mode == "always"
        return [entry.uri for entry in self.table if entry.state != DISABLED and (always or entry.state != ACTIVE)]

    def probe_round(self) -> None:
        """Probe the destinations that are due, and schedule the next round."""
        self._call = None
        if not self._running:
            return
        now = self.reactor.seconds()
        stale = now - (self.settings.timeout + self.settings.interval)
        for uri in self.due():
            sent = self._outstanding.get(uri)
            if sent is not None and sent > stale:
                continue
            self._outstanding[uri] = now
            self._send(uri)
            if not self._running:
                return  # a synchronous result stopped us (cannot happen, but be safe)
        self._call = self.reactor.callLater(self.settings.interval, self.probe_round)

    def _send(self, uri: str) -> None:
        def on_result(status: int) -> None:
            self.record(uri, status)

        try:
            self.sender.send_options(uri, on_result, self.settings.timeout)
        except Exception:
            log.failure("probe of {uri} could not be sent", uri=uri)
            self.record(uri, 503)

    def record(self, uri: str, status: int) -> None:
        """The probe of ``uri`` ended with ``status``."""
        if not self._running:
            return
        self._outstanding.pop(uri, None)
        now = self.reactor.seconds()
        if self.settings.is_alive(status):
            self.table.alive(uri, now, status)
        else:
            self.table.failed(uri, now, status)


# -- passive checks: following the branches of routed requests ------------

#: a routed request whose branches have not all ended after this long is forgotten
TRACK_LIMIT = 3600.0


class _Request:
    """The targets of one routed request (a serial Forward), to follow its branches."""

    __slots__ = ("born", "counted", "ended", "failover", "invite", "responded", "targets")

    def __init__(self, targets: tuple[Any, ...], invite: bool, failover: frozenset[int], born: float) -> None:
        self.targets = targets
        self.invite = invite
        self.failover = failover
        self.born = born
        size = len(targets)
        self.counted = [False] * size
        self.responded = [False] * size
        self.ended = [False] * size


class BranchTracker:
    """Follows the branches of the requests a router forwarded serially.

    It tells whether a branch had any response before it ended (a 408
    after a response is the destination's downstream timing out, not the
    destination being dead), and counts INVITE branches in flight per
    destination: +1 for the first target when the request is routed, +1 for a
    later target at the first event of its branch (it started because the
    one before failed), -1 when a branch ends. A request is forgotten when its
    last branch has ended: a 2xx, a 6xx, a status outside ``failover`` or its
    last target; or after ``limit`` seconds whatever happened (a branch that
    could not start tells nothing).

    Branches are known by the identity of their Target objects, which the
    proxy core hands back unchanged in every event.
    """

    def __init__(self, limit: float = TRACK_LIMIT) -> None:
        self.limit = limit
        #: INVITE branches in flight, by destination URI
        self.calls: dict[str, int] = {}
        self._branches: dict[int, tuple[_Request, int]] = {}
        self._open: OrderedDict[int, _Request] = OrderedDict()

    def __len__(self) -> int:
        """How many routed requests are followed."""
        return len(self._open)

    def start(self, targets: tuple[Any, ...], invite: bool, failover: frozenset[int], now: float) -> None:
        """A request was routed to ``targets`` (in serial order); its first branch starts now."""
        self.sweep(now)
        request = _Request(targets, invite, failover, now)
        branches = self._branches
        for index, target in enumerate(targets):
            branches[id(target)] = (request, index)
        if invite and targets:
            request.counted[0] = True
            uri = targets[0].label or ""
            self.calls[uri] = self.calls.get(uri, 0) + 1
        self._open[id(request)] = request

    def event(self, target: Any, uri: str, event: str, status: int) -> bool:
        """Record a branch event; True when the branch has had a response (a final: before it)."""
        found = self._branches.get(id(target))
        if found is None or found[0].targets[found[1]] is not target:
            return event == "response"
        request, index = found
        if request.invite and not request.counted[index] and not request.ended[index]:
            request.counted[index] = True  # a failover branch started
            self.calls[uri] = self.calls.get(uri, 0) + 1
        if event == "response":
            request.responded[index] = True
            return True
        responded = request.responded[index]
        if event == "final":
            self._ended(request, index, status)
        return responded

    def _ended(self, request: _Request, index: int, status: int) -> None:
        if request.ended[index]:
            return
        request.ended[index] = True
        if request.counted[index]:
            self._uncount(request.targets[index])
        last = index == len(request.targets) - 1
        if last or status < 300 or status >= 600 or status not in request.failover:
            self._forget(request)

    def _uncount(self, target: Any) -> None:
        uri = target.label or ""
        self.calls[uri] = max(0, self.calls.get(uri, 0) - 1)

    def _forget(self, request: _Request) -> None:
        for index, target in enumerate(request.targets):
            self._branches.pop(id(target), None)
            if request.counted[index] and not request.ended[index]:
                request.ended[index] = True
                self._uncount(target)
        self._open.pop(id(request), None)

    def sweep(self, now: float) -> None:
        """Forget requests routed more than ``limit`` seconds before ``now``."""
        open_requests = self._open
        oldest = now - self.limit
        while open_requests:
            request = next(iter(open_requests.values()))
            if request.born > oldest:
                break
            self._forget(request)
