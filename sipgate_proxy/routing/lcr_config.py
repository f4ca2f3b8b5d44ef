"""Config of the ``lcr`` router: gateways, rules, the rules file, and the model they load into.

See :mod:`sipgate_proxy.routing.lcr` for the routing semantics.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..config import ConfigError, type_name
from ..sip.errors import SIPError
from ..sip.uri import escape_user, parse_host
from .decisions import Reject
from .prefix import PrefixTable

TRANSPORTS = ("udp", "tcp", "tls")
MATCH_ON = ("ruri", "to")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
CSV_COLUMNS = ("prefix", "priority", "gateways", "from_user", "cost")

#: context/Forward attributes this router sets
RULE_ATTR = "lcr.rule"
PREFIX_ATTR = "lcr.prefix"

_TOP_KEYS = frozenset({"gateways", "rules", "rules_file", "match_on", "max_targets", "no_route"})
_GATEWAY_KEYS = frozenset({"id", "address", "port", "transport", "strip", "prefix", "weight", "headers"})
_RULE_KEYS = frozenset(
    {"prefix", "from_user", "time", "timezone", "priority", "gateways", "weighted_gateways", "cost", "stopper"}
)
_WINDOW_KEYS = frozenset({"days", "start", "end"})
_WEIGHTED_KEYS = frozenset({"id", "weight"})

_GATEWAY_ID_RE = re.compile(r"[A-Za-z0-9_.\-]+")
_PREFIX_RE = re.compile(r"[0-9A-Za-z+*#._\-]*")
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_CLOCK_RE = re.compile(r"([0-9]{2}):([0-9]{2})")
#: headers that belong to the transaction or dialog and may not be set per gateway
_RESERVED_HEADERS = frozenset(
    {"via", "v", "call-id", "i", "cseq", "from", "f", "to", "t", "max-forwards", "content-length", "l"}
    | {"route", "record-route"}
)
_PRIORITY_LIMIT = 2**31
_MAX_COST = 1e9


# -- the model ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class Gateway:
    """Where calls leave to: a trunk, a carrier's SBC, a PSTN gateway."""

    id: str
    address: str
    port: int
    transport: str
    #: characters removed from the front of the number
    strip: int
    #: put in front of the number after stripping
    prefix: str
    #: default weight of this gateway in weighted_gateways
    weight: int
    headers: tuple[tuple[str, str], ...]
    #: the Request-URI after its user part: ``@host:port;transport=t``
    uri_tail: str

    def user_for(self, number: str) -> str:
        """The Request-URI user (unescaped) this gateway gets for ``number``."""
        return self.prefix + number[self.strip :]

    def request_uri(self, number: str) -> str:
        """The Request-URI for a request to ``number`` through this gateway."""
        return f"sip:{escape_user(self.user_for(number))}{self.uri_tail}"


@dataclass(frozen=True, slots=True)
class Window:
    """Days of the week and a time of day, in local time."""

    #: bit ``1 << d`` set for weekday ``d`` (Monday 0)
    days: int
    #: seconds after local midnight; end is exclusive and may be 86400;
    #: start > end wraps midnight and the days name the day the window starts
    start: int
    end: int

    def contains(self, weekday: int, second: int) -> bool:
        if self.start < self.end:
            return bool(self.days >> weekday & 1) and self.start <= second < self.end
        if second >= self.start:
            return bool(self.days >> weekday & 1)
        return second < self.end and bool(self.days >> (weekday - 1) % 7 & 1)


@dataclass(frozen=True, slots=True, eq=False)
class RuleBody:
    """What a rule says, shared by the many CSV lines that say the same."""

    priority: int
    #: in the listed order, or by cost when ``costs`` is given
    gateways: tuple[Gateway, ...]
    #: the cost of each gateway (aligned with ``gateways``), or None
    costs: tuple[float, ...] | None
    #: ``1 / weight`` of each gateway (0.0 for weight 0) for weighted rules, or None
    inverse_weights: tuple[float, ...] | None
    from_user: re.Pattern[str] | None = None
    windows: tuple[Window, ...] = ()
    timezone: ZoneInfo | None = None
    stopper: bool = False
    #: None for ``rules`` in the TOML table, else the rules file as configured
    source: str | None = None
    #: numbers at least this long leave every gateway a non-empty user
    shortest: int = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        bare = [gateway.strip for gateway in self.gateways if not gateway.prefix]
        object.__setattr__(self, "shortest", max(bare) + 1 if bare else 0)

    def ordered(self, rng: random.Random) -> Sequence[Gateway]:
        """The gateways in the order to try them for one request."""
        inverse = self.inverse_weights
        if inverse is None:
            return self.gateways
        gateways = self.gateways
        draws = [rng.random() ** step if step else -1.0 for step in inverse]
        costs = self.costs
        if costs is None:
            order = sorted(range(len(gateways)), key=lambda i: -draws[i])
        else:
            order = sorted(range(len(gateways)), key=lambda i: (costs[i], -draws[i]))
        return [gateways[i] for i in order]


# In the prefix table a rule is the int ``line << 32 | body number``
# (``line``: index in ``rules``, or line of the rules file; the body number
# indexes LcrSettings.bodies): 32 bytes per rule where an object holding its
# line number takes 88, which saves a quarter of a million-line table's memory.
# Rule objects are made only for the rules a lookup finds.
_LINE_SHIFT = 32
_BODY_MASK = (1 << _LINE_SHIFT) - 1


class Rule(NamedTuple):
    """A rule found for a number: what it says and where it is written."""

    body: RuleBody
    #: index in ``rules``, or line in the rules file
    line: int

    @property
    def label(self) -> str:
        """``rules[3]`` or ``lcr.csv:17``: where the rule is written."""
        if self.body.source is None:
            return f"rules[{self.line}]"
        return f"{self.body.source}:{self.line}"

    def __repr__(self) -> str:
        return f"<Rule {self.label}>"


class Selection(NamedTuple):
    """What the lookup found for a number."""

    prefix: str
    #: the applicable rules of that prefix, in order
    rules: tuple[Rule, ...]
    #: the gateways to try, in order, at most max_targets
    gateways: tuple[Gateway, ...]


#: a stopper ended the search: no route
_STOPPED = Selection("", (), ())


@dataclass(frozen=True, slots=True)
class LcrSettings:
    """The validated ``[routing.lcr]`` table."""

    gateways: Mapping[str, Gateway]
    #: prefix -> rules, each as ``line << 32 | index in bodies``
    rules: PrefixTable[int]
    bodies: Sequence[RuleBody]
    match_on: str = "ruri"
    max_targets: int = 5
    #: answer when nothing routes; None passes the request on
    no_route: Reject | None = None
    #: whether any rule looks at the From user
    uses_from: bool = False


# -- config ------------------------------------------------------------------------


class _Invalid(Exception):
    """A value inside a rule is wrong; ``field`` is its key within the rule."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _no_unknown(table: Mapping[str, Any], allowed: frozenset[str], key: str) -> None:
    extra = set(table) - allowed
    if extra:
        raise ConfigError(f"{key}.{sorted(extra)[0]}", "unknown key")


def _integer(table: Mapping[str, Any], name: str, key: str, default: int, low: int, high: int) -> int:
    value = table.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}.{name}", f"expected an integer, got {type_name(value)}")
    if not low <= value <= high:
        raise ConfigError(f"{key}.{name}", f"expected an integer from {low} to {high}, got {value}")
    return value


def _string(table: Mapping[str, Any], name: str, key: str, default: str | None) -> str | None:
    value = table.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ConfigError(f"{key}.{name}", f"expected a string, got {type_name(value)}")
    return value


def _parse_gateway(item: Any, key: str) -> Gateway:
    if not isinstance(item, dict):
        raise ConfigError(key, "expected a table with id and address")
    _no_unknown(item, _GATEWAY_KEYS, key)
    ident = _string(item, "id", key, None)
    if ident is None or not _GATEWAY_ID_RE.fullmatch(ident):
        raise ConfigError(f"{key}.id", "required: a gateway id of letters, digits, '.', '_' or '-'")
    address = _string(item, "address", key, None)
    if not address:
        raise ConfigError(f"{key}.address", "required: the gateway's host name or IP address")
    host = f"[{address}]" if ":" in address and not address.startswith("[") else address
    try:
        host = parse_host(host)
    except SIPError:
        raise ConfigError(f"{key}.address", f"expected a host name or IP address, got {address!r}") from None
    port = _integer(item, "port", key, 5060, 1, 65535)
    transport = _string(item, "transport", key, "udp") or "udp"
    if transport not in TRANSPORTS:
        raise ConfigError(f"{key}.transport", f"expected one of {', '.join(TRANSPORTS)}, got {transport!r}")
    strip = _integer(item, "strip", key, 0, 0, 64)
    prefix = _string(item, "prefix", key, "") or ""
    if not _PREFIX_RE.fullmatch(prefix):
        raise ConfigError(f"{key}.prefix", f"expected digits, letters, '+', '*' or '#', got {prefix!r}")
    weight = _integer(item, "weight", key, 1, 0, 1_000_000)
    headers = _parse_headers(item.get("headers"), f"{key}.headers")
    tail = f"@{host}:{port};transport={transport}"
    return Gateway(ident, host, port, transport, strip, prefix, weight, headers, tail)


def _parse_headers(raw: Any, key: str) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise ConfigError(key, f"expected a table of header name = value, got {type_name(raw)}")
    headers = []
    for name, value in raw.items():
        if not _TOKEN_RE.fullmatch(name):
            raise ConfigError(f"{key}.{name}", "not a valid header name")
        if name.lower() in _RESERVED_HEADERS:
            raise ConfigError(f"{key}.{name}", "the proxy manages this header; it cannot be set per gateway")
        if not isinstance(value, str):
            raise ConfigError(f"{key}.{name}", f"expected a string, got {type_name(value)}")
        if any((ord(char) < 0x20 and char != "\t") or char == "\x7f" for char in value):
            raise ConfigError(f"{key}.{name}", "the value may not contain line breaks or control characters")
        headers.append((name, value))
    return tuple(headers)


def _parse_gateways(raw: Any) -> dict[str, Gateway]:
    if not isinstance(raw, list):
        raise ConfigError("routing.lcr.gateways", f"expected a list of tables, got {type_name(raw)}")
    gateways: dict[str, Gateway] = {}
    where: dict[str, int] = {}
    for index, item in enumerate(raw):
        key = f"routing.lcr.gateways[{index}]"
        gateway = _parse_gateway(item, key)
        if gateway.id in gateways:
            raise ConfigError(f"{key}.id", f"duplicate gateway id {gateway.id!r} (also gateways[{where[gateway.id]}])")
        gateways[gateway.id] = gateway
        where[gateway.id] = index
    return gateways


def _clock(text: Any, key: str, allow_24: bool) -> int:
    if not isinstance(text, str):
        raise ConfigError(key, f"expected a time of day such as '08:00', got {type_name(text)}")
    match = _CLOCK_RE.fullmatch(text)
    if match is None:
        raise ConfigError(key, f"expected a time of day as HH:MM, got {text!r}")
    hours, minutes = int(match.group(1)), int(match.group(2))
    if allow_24 and hours == 24 and minutes == 0:
        return 86400
    if hours > 23 or minutes > 59:
        latest = "24:00" if allow_24 else "23:59"
        raise ConfigError(key, f"expected a time from 00:00 to {latest}, got {text!r}")
    return hours * 3600 + minutes * 60


def _parse_window(item: Any, key: str) -> Window:
    if not isinstance(item, dict):
        raise ConfigError(key, 'expected a table such as { days = ["mon"], start = "08:00", end = "18:00" }')
    _no_unknown(item, _WINDOW_KEYS, key)
    raw_days = item.get("days", list(DAYS))
    if not isinstance(raw_days, list) or not raw_days or not all(isinstance(day, str) for day in raw_days):
        raise ConfigError(f"{key}.days", f"expected a list of days from {', '.join(DAYS)}")
    days = 0
    for day in raw_days:
        if day.lower() not in DAYS:
            raise ConfigError(f"{key}.days", f"unknown day {day!r}; expected {', '.join(DAYS)}")
        days |= 1 << DAYS.index(day.lower())
    start = _clock(item.get("start", "00:00"), f"{key}.start", allow_24=False)
    end = _clock(item.get("end", "24:00"), f"{key}.end", allow_24=True)
    if start == end:
        raise ConfigError(f"{key}.end", "equal to start: the window would be empty (a whole day is 00:00 to 24:00)")
    return Window(days, start, end)


def _parse_timezone(raw: Any, key: str) -> ZoneInfo:
    if not isinstance(raw, str):
        raise ConfigError(key, f"expected an IANA timezone name such as 'Europe/Berlin', got {type_name(raw)}")
    try:
        return ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(key, f"unknown timezone {raw!r}; expected an IANA name such as 'Europe/Berlin'") from None


class _RuleBuilder:
    """Turns rule fields into shared RuleBodies and files them by prefix."""

    def __init__(self, gateways: Mapping[str, Gateway]) -> None:
        self.gateways = gateways
        self.table: PrefixTable[int] = PrefixTable()
        self.bodies: list[RuleBody] = []
        self.uses_from = False
        self._patterns: dict[str, re.Pattern[str]] = {}
        #: rules file: gateway lists and rule bodies shared by the lines that repeat them
        self._gateway_lists: dict[str, tuple[Gateway, ...]] = {}
        self._bodies: dict[tuple[str, str, tuple[Gateway, ...]], int] = {}

    def gateway(self, ident: Any, field: str) -> Gateway:
        gateway = self.gateways.get(ident) if isinstance(ident, str) else None
        if gateway is None:
            names = sorted(self.gateways)
            known = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "") if names else "none configured"
            raise _Invalid(field, f"unknown gateway id {ident!r} (known: {known})")
        return gateway

    def pattern(self, text: str) -> re.Pattern[str]:
        compiled = self._patterns.get(text)
        if compiled is None:
            try:
                compiled = re.compile(text)
            except re.error as error:
                raise _Invalid("from_user", f"not a valid regular expression: {error}") from None
            self._patterns[text] = compiled
        self.uses_from = True
        return compiled

    def checked(self, gateways: Sequence[Gateway], field: str) -> tuple[Gateway, ...]:
        """``gateways`` when there is at least one and none twice."""
        if not gateways:
            raise _Invalid(field, "expected at least one gateway id")
        for index, gateway in enumerate(gateways):
            if gateway in gateways[:index]:
                raise _Invalid(field, f"gateway {gateway.id!r} is listed twice")
        return tuple(gateways)

    def body(
        self,
        priority: int,
        gateways: Sequence[Gateway],
        weights: Sequence[int] | None,
        costs: Mapping[str, float] | None,
        **extra: Any,
    ) -> RuleBody:
        gateways = self.checked(gateways, "gateways" if weights is None else "weighted_gateways")
        inverse = None if weights is None else tuple(1.0 / weight if weight else 0.0 for weight in weights)
        cost_list = None
        if costs is not None:
            order = _cost_order(gateways, costs)
            gateways = tuple(gateways[i] for i in order)
            cost_list = tuple(costs[gateway.id] for gateway in gateways)
            if inverse is not None:
                inverse = tuple(inverse[i] for i in order)
        return RuleBody(priority, gateways, cost_list, inverse, **extra)

    # -- TOML rules

    def toml_rule(self, item: Any, index: int) -> None:
        key = f"routing.lcr.rules[{index}]"
        try:
            prefix, body = self._toml_rule(item, key)
        except _Invalid as error:
            raise ConfigError(f"{key}.{error.field}", error.message) from None
        self.table.add(prefix, index << _LINE_SHIFT | self.number(body))

    def number(self, body: RuleBody) -> int:
        """Keep ``body`` and return its index in ``bodies`` (below 2**32:
        there is at most one body per rule, and memory ends far sooner)."""
        self.bodies.append(body)
        return len(self.bodies) - 1

    def _toml_rule(self, item: Any, key: str) -> tuple[str, RuleBody]:
        if not isinstance(item, dict):
            raise ConfigError(key, "expected a table with prefix and gateways")
        _no_unknown(item, _RULE_KEYS, key)
        prefix = item.get("prefix")
        if prefix is None:
            raise _Invalid("prefix", 'required: the number prefix the rule matches ("" matches every number)')
        if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix):
            raise _Invalid("prefix", f"expected digits, letters, '+', '*' or '#', got {prefix!r}")
        priority = _integer(item, "priority", key, 0, -_PRIORITY_LIMIT, _PRIORITY_LIMIT)
        stopper = item.get("stopper", False)
        if not isinstance(stopper, bool):
            raise _Invalid("stopper", f"expected true or false, got {type_name(stopper)}")
        from_text = _string(item, "from_user", key, None)
        from_user = None if from_text is None else self.pattern(from_text)
        raw_windows = item.get("time")
        windows: tuple[Window, ...] = ()
        if raw_windows is not None:
            if not isinstance(raw_windows, list) or not raw_windows:
                raise _Invalid("time", "expected a list of windows such as { days = [...], start = ..., end = ... }")
            windows = tuple(_parse_window(window, f"{key}.time[{i}]") for i, window in enumerate(raw_windows))
        timezone = None
        if "timezone" in item:
            timezone = _parse_timezone(item["timezone"], f"{key}.timezone")
        gateways, weights = self._toml_gateways(item, key)
        costs = None
        if "cost" in item:
            costs = self._toml_costs(item["cost"], key)
        body = self.body(
            priority, gateways, weights, costs, from_user=from_user, windows=windows, timezone=timezone, stopper=stopper
        )
        return prefix, body

    def _toml_gateways(self, item: Mapping[str, Any], key: str) -> tuple[list[Gateway], list[int] | None]:
        listed = item.get("gateways")
        weighted = item.get("weighted_gateways")
        if listed is not None and weighted is not None:
            raise _Invalid("weighted_gateways", "give either gateways or weighted_gateways, not both")
        if listed is not None:
            if not isinstance(listed, list):
                raise _Invalid("gateways", f"expected a list of gateway ids, got {type_name(listed)}")
            return [self.gateway(ident, "gateways") for ident in listed], None
        if weighted is None:
            raise _Invalid("gateways", "required: a list of gateway ids (or weighted_gateways)")
        if not isinstance(weighted, list):
            raise _Invalid("weighted_gateways", 'expected a list of { id = "...", weight = n }')
        gateways = []
        weights = []
        for index, entry in enumerate(weighted):
            entry_key = f"{key}.weighted_gateways[{index}]"
            if not isinstance(entry, dict):
                raise ConfigError(entry_key, 'expected a table { id = "...", weight = n }')
            _no_unknown(entry, _WEIGHTED_KEYS, entry_key)
            try:
                gateway = self.gateway(entry.get("id"), "id")
            except _Invalid as error:
                raise ConfigError(f"{entry_key}.id", error.message) from None
            gateways.append(gateway)
            weights.append(_integer(entry, "weight", entry_key, gateway.weight, 0, 1_000_000))
        return gateways, weights

    def _toml_costs(self, raw: Any, key: str) -> dict[str, float]:
        if not isinstance(raw, dict):
            raise _Invalid("cost", f"expected a table of gateway id = cost per minute, got {type_name(raw)}")
        costs = {}
        for ident, value in raw.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= _MAX_COST:
                raise ConfigError(f"{key}.cost.{ident}", f"expected a cost from 0 to {_MAX_COST:g}, got {value!r}")
            costs[ident] = float(value)
        return costs

    # -- the rules file

    def csv_file(self, path: str, name: str) -> None:
        key = "routing.lcr.rules_file"
        try:
            handle = open(path, newline="", encoding="utf-8-sig")
        except OSError as error:
            raise ConfigError(key, f"{name}: cannot read: {error.strerror}") from None
        with handle:
            reader = csv.reader(handle, strict=True)
            line = 1  # where the record being read starts (a quoted field may span lines)
            try:
                header = next(reader, None)
                if header is None or tuple(column.strip() for column in header) != CSV_COLUMNS:
                    got = "nothing" if header is None else repr(",".join(header))
                    raise ConfigError(key, f"{name} line 1: expected the header {','.join(CSV_COLUMNS)}, got {got}")
                line = reader.line_num + 1
                for row in reader:
                    if row:
                        try:
                            self._csv_row(row, name, line)
                        except _Invalid as error:
                            what = f"{error.field}: {error.message}" if error.field else error.message
                            raise ConfigError(key, f"{name} line {line}: {what}") from None
                    line = reader.line_num + 1
            except csv.Error as error:
                raise ConfigError(key, f"{name} line {line}: {error}") from None
            except UnicodeDecodeError:
                raise ConfigError(key, f"{name} line {_first_undecodable(path)}: not UTF-8 text") from None

    def _csv_row(self, row: list[str], name: str, line: int) -> None:
        if len(row) != len(CSV_COLUMNS):
            raise _Invalid("", f"expected {len(CSV_COLUMNS)} fields ({','.join(CSV_COLUMNS)}), got {len(row)}")
        prefix, priority_text, gateways_text, from_text, cost_text = map(str.strip, row)
        if not _PREFIX_RE.fullmatch(prefix):
            raise _Invalid("prefix", f"expected digits, letters, '+', '*' or '#', got {prefix!r}")
        gateways = self._gateway_lists.get(gateways_text)
        if gateways is None:
            if not gateways_text:
                raise _Invalid("gateways", "expected gateway ids separated by '|'")
            listed = [self.gateway(ident.strip(), "gateways") for ident in gateways_text.split("|")]
            gateways = self._gateway_lists[gateways_text] = self.checked(listed, "gateways")
        if cost_text:
            # a rules file has no weights, so the costs are only needed to sort
            gateways = tuple(gateways[i] for i in _cost_order(gateways, self._csv_costs(cost_text)))
        body_key = (priority_text, from_text, gateways)
        number = self._bodies.get(body_key)
        if number is None:
            try:
                priority = int(priority_text) if priority_text else 0
            except ValueError:
                raise _Invalid("priority", f"expected an integer, got {priority_text!r}") from None
            if not -_PRIORITY_LIMIT <= priority <= _PRIORITY_LIMIT:
                raise _Invalid("priority", f"out of range: {priority}")
            from_user = self.pattern(from_text) if from_text else None
            body = RuleBody(priority, gateways, None, None, from_user=from_user, source=name)
            number = self._bodies[body_key] = self.number(body)
        self.table.add(prefix, line << _LINE_SHIFT | number)

    def _csv_costs(self, text: str) -> dict[str, float]:
        costs = {}
        for item in text.split("|"):
            ident, colon, value = item.partition(":")
            ident = ident.strip()
            try:
                cost = float(value)
            except ValueError:
                cost = math.nan
            if not colon or not 0 <= cost <= _MAX_COST:
                raise _Invalid("cost", f"expected gateway:cost pairs such as 'gw1:0.012|gw2:0.015', got {item!r}")
            if ident in costs:
                raise _Invalid("cost", f"gateway {ident!r} has two costs")
            costs[ident] = cost
        return costs


def _cost_order(gateways: Sequence[Gateway], costs: Mapping[str, float]) -> list[int]:
    """Indexes of ``gateways`` by ascending cost (a stable sort); every
    gateway must have a cost and every cost a gateway."""
    ids = [gateway.id for gateway in gateways]
    for ident in costs:
        if ident not in ids:
            raise _Invalid("cost", f"gateway {ident!r} has a cost but is not one of this rule's gateways")
    for ident in ids:
        if ident not in costs:
            raise _Invalid("cost", f"no cost for gateway {ident!r}: give every gateway of the rule a cost")
    return sorted(range(len(ids)), key=lambda i: costs[ids[i]])


def _first_undecodable(path: str) -> int:
    """The number of the first line of ``path`` that is not UTF-8 (the
    decoder reads ahead in blocks, so the reader's position does not say)."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0


def _parse_no_route(raw: Any) -> Reject | None:
    if raw is None:
        return None
    key = "routing.lcr.no_route"
    if (
        not isinstance(raw, list)
        or len(raw) != 2
        or isinstance(raw[0], bool)
        or not isinstance(raw[0], int)
        or not isinstance(raw[1], str)
    ):
        raise ConfigError(key, 'expected [status, "reason"], for example [404, "No Route"]')
    status, reason = raw
    if not 400 <= status <= 699:
        raise ConfigError(key, f"expected a status from 400 to 699, got {status}")
    if not reason or any(ord(char) < 0x20 or char == "\x7f" for char in reason):
        raise ConfigError(key, "expected a reason phrase without control characters")
    return Reject(status, reason)


def parse_lcr_config(config: Mapping[str, Any]) -> LcrSettings:
    """Validate the ``[routing.lcr]`` table (and load its rules file)."""
    _no_unknown(config, _TOP_KEYS, "routing.lcr")
    gateways = _parse_gateways(config.get("gateways", []))
    match_on = _string(config, "match_on", "routing.lcr", "ruri") or "ruri"
    if match_on not in MATCH_ON:
        raise ConfigError("routing.lcr.match_on", f"expected one of {', '.join(MATCH_ON)}, got {match_on!r}")
    max_targets = _integer(config, "max_targets", "routing.lcr", 5, 1, 100)
    no_route = _parse_no_route(config.get("no_route"))
    builder = _RuleBuilder(gateways)
    raw_rules = config.get("rules", [])
    if not isinstance(raw_rules, list):
        raise ConfigError("routing.lcr.rules", f"expected a list of tables, got {type_name(raw_rules)}")
    for index, item in enumerate(raw_rules):
        builder.toml_rule(item, index)
    rules_file = _string(config, "rules_file", "routing.lcr", None)
    if rules_file is not None:
        if not rules_file:
            raise ConfigError("routing.lcr.rules_file", "expected the path of a CSV file")
        resolve = getattr(config, "path", None)
        builder.csv_file(resolve(rules_file) if callable(resolve) else rules_file, rules_file)
    bodies = tuple(builder.bodies)
    builder.table.freeze(key=lambda rule: bodies[rule & _BODY_MASK].priority)
    return LcrSettings(gateways, builder.table, bodies, match_on, max_targets, no_route, builder.uses_from)
