"""The ``dialplan`` router: number normalisation and translation.

Modelled on the behaviour of Kamailio's dialplan module. Rules are grouped in
numbered plans; the plan asked is ``context.attrs["dialplan.plan"]`` when an
earlier router set it (an integer as a string), otherwise ``default_plan``.
Within a plan the rules are tried by ``(priority, position in the config)``
and the first that matches is the only one applied (rules do not chain).

The string matched is the user part of the Request-URI (``match_on =
"ruri"``), of the From URI or of the To URI, %-unescaped; for a ``tel:`` URI
it is the number as written. ``equal`` and ``prefix`` rules compare plain
strings; ``regex`` rules use :func:`re.search` (unanchored, like the PCRE
match of Kamailio): write ``^`` and ``$`` to anchor.

A matching rule computes a new user: ``replace`` is substituted for the first
match of ``subst`` (or, without ``subst``, of a regex ``match``) and the rest
of the string is kept, as in ``s/subst/replace/``; then ``strip`` characters
are removed from the front and ``prefix`` is put in front. The result always
becomes the user part of the Request-URI, also when the rule matched on From
or To. The router then records the rule in ``context.attrs`` and passes the
request on, unless the rule has ``next_hop`` (Forward) or ``reject`` (Reject).

Lookups stay fast for plans with thousands of rules: ``equal`` rules are in a
dict, ``prefix`` rules in a dict keyed by the prefix (one probe per distinct
prefix length), and only regex rules ranked before the best indexed candidate
are scanned. The result is always the first match in priority order.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from twisted.plugin import IPlugin
from zope.interface import implementer

from ..config import ConfigError, RouterTable, check_hop_uri, type_name
from ..interfaces import IRouter, IRouterFactory
from ..sip.message import Request
from ..sip.uri import URI, escape_user, unescape
from .decisions import Forward, Reject, RequestContext, Target

MatchType = Literal["equal", "prefix", "regex"]
MATCH_TYPES: tuple[MatchType, ...] = ("equal", "prefix", "regex")
MATCH_ON = ("ruri", "from", "to")

#: context.attrs keys this router reads and writes
PLAN_ATTR = "dialplan.plan"
ATTRS_ATTR = "dialplan.attrs"
RULE_ATTR = "dialplan.rule"

_TOP_KEYS = frozenset({"default_plan", "match_on", "rules", "rules_file"})
_RULE_KEYS = frozenset(
    {"plan", "priority", "match", "match_type", "subst", "replace", "strip", "prefix", "attrs", "next_hop", "reject"}
)
_PREFIX = "routing.dialplan"


@dataclass(frozen=True, slots=True)
class Rule:
    """One translation rule, validated."""

    #: position over ``rules`` then the rules file's ``[[rules]]`` (0-based)
    index: int
    plan: int
    priority: int
    match_type: MatchType
    match: str
    #: compiled ``match`` for regex rules, else None
    pattern: re.Pattern[str] | None = None
    subst: re.Pattern[str] | None = None
    replace: str | None = None
    strip: int = 0
    prefix: str = ""
    attrs: str = ""
    next_hop: str | None = None
    reject: Reject | None = None
    #: "<plan>:<index>", written to context.attrs["dialplan.rule"]
    label: str = field(default="", compare=False)

    @property
    def rank(self) -> tuple[int, int]:
        """Order within a plan: lower priority first, then config position."""
        return (self.priority, self.index)

    def matches(self, text: str) -> bool:
        """Whether this rule matches ``text`` on its own (no index involved)."""
        if self.match_type == "equal":
            return text == self.match
        if self.match_type == "prefix":
            return text.startswith(self.match)
        assert self.pattern is not None
        return self.pattern.search(text) is not None

    def apply(self, text: str) -> str:
        """The new user for a matched ``text``: replace, then strip, then prefix."""
        if self.replace is not None:
            pattern = self.subst if self.subst is not None else self.pattern
            assert pattern is not None
            text = pattern.sub(self.replace, text, count=1)
        if self.strip:
            text = text[self.strip :]
        if self.prefix:
            text = self.prefix + text
        return text


@dataclass(frozen=True, slots=True)
class DialplanConfig:
    """The validated ``[routing.dialplan]`` table."""

    default_plan: int = 1
    match_on: str = "ruri"
    rules: tuple[Rule, ...] = ()


class _Plan:
    """The rules of one plan, indexed so a lookup skips rules that cannot match."""

    __slots__ = ("equal", "prefix_lengths", "prefixes", "regexes")

    def __init__(self, rules: list[Rule]) -> None:
        ordered = sorted(rules, key=lambda rule: rule.rank)
        #: the first rule (in rank order) per exact value / per prefix
        self.equal: dict[str, Rule] = {}
        self.prefixes: dict[str, Rule] = {}
        regexes: list[Rule] = []
        for rule in ordered:
            if rule.match_type == "equal":
                self.equal.setdefault(rule.match, rule)
            elif rule.match_type == "prefix":
                self.prefixes.setdefault(rule.match, rule)
            else:
                regexes.append(rule)
        self.prefix_lengths = tuple(sorted({len(prefix) for prefix in self.prefixes}))
        self.regexes = tuple(regexes)

    def lookup(self, text: str) -> Rule | None:
        """The first rule in rank order that matches ``text``, or None."""
        best = self.equal.get(text)
        if self.prefixes:
            size = len(text)
            for length in self.prefix_lengths:
                if length > size:
                    break
                candidate = self.prefixes.get(text[:length])
                if candidate is not None and (best is None or candidate.rank < best.rank):
                    best = candidate
        for rule in self.regexes:
            if best is not None and rule.rank > best.rank:
                break
            assert rule.pattern is not None
            if rule.pattern.search(text) is not None:
                return rule
        return best


@implementer(IRouter)
class DialplanRouter:
    """Rewrites the Request-URI user by the first matching rule of a plan.

    Passes on (None) after a rewrite, unless the rule names a ``next_hop``
    (Forward to it) or a ``reject`` (Reject). A request no rule matches is
    left untouched and passes on.
    """

    def __init__(self, config: DialplanConfig) -> None:
        self.config = config
        self.default_plan = config.default_plan
        self.match_on = config.match_on
        grouped: dict[int, list[Rule]] = {}
        for rule in config.rules:
            grouped.setdefault(rule.plan, []).append(rule)
        self._plans = {plan: _Plan(rules) for plan, rules in grouped.items()}

    def lookup(self, plan: int, text: str) -> Rule | None:
        """The rule of ``plan`` that applies to ``text`` (already unescaped), or None."""
        rules = self._plans.get(plan)
        return None if rules is None else rules.lookup(text)

    def translate(self, plan: int, text: str) -> tuple[Rule, str] | None:
        """``(rule, new user)`` for ``text`` in ``plan``, or None when no rule matches."""
        rule = self.lookup(plan, text)
        return None if rule is None else (rule, rule.apply(text))

    def _plan_for(self, context: RequestContext) -> int | None:
        value = context.attrs.get(PLAN_ATTR)
        if value is None:
            return self.default_plan
        try:
            return int(value)
        except ValueError:
            return None  # an earlier router named no plan we can have: nothing matches

    def _subject(self, request: Request) -> URI:
        if self.match_on == "ruri":
            return request.uri
        if self.match_on == "from":
            return request.from_.uri
        return request.to.uri

    def route(self, request: Request, context: RequestContext) -> Forward | Reject | None:
        plan = self._plan_for(context)
        if plan is None:
            return None
        rules = self._plans.get(plan)
        if rules is None:
            return None
        subject = self._subject(request)
        if subject.opaque is not None or subject.user is None:
            return None
        text = unescape(subject.user)
        rule = rules.lookup(text)
        if rule is None:
            return None
        self._rewrite(request, rule.apply(text))
        context.attrs[ATTRS_ATTR] = rule.attrs
        context.attrs[RULE_ATTR] = rule.label
        if rule.reject is not None:
            return rule.reject
        if rule.next_hop is not None:
            attrs = {ATTRS_ATTR: rule.attrs, RULE_ATTR: rule.label}
            return Forward((Target(request.uri_text, rule.next_hop),), attrs=attrs)
        return None

    @staticmethod
    def _rewrite(request: Request, user: str) -> None:
        """Set the Request-URI user to ``user`` (unescaped) when it changes it.

        An empty result, or a Request-URI of a scheme without a user part,
        leaves the Request-URI as it is.
        """
        uri = request.uri
        if not user or uri.opaque is not None:
            return
        if uri.user is not None and unescape(uri.user) == user:
            return  # unchanged: keep the URI exactly as received
        request.uri = uri.copy(user=escape_user(user))


# -- configuration -------------------------------------------------------------


def _integer(value: Any, key: str, default: int, low: int | None = None) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, f"expected an integer, got {type_name(value)}")
    if low is not None and value < low:
        raise ConfigError(key, f"expected an integer of at least {low}, got {value}")
    return value


def _string(value: Any, key: str, what: str = "a string") -> str:
    if not isinstance(value, str):
        raise ConfigError(key, f"expected {what}, got {type_name(value)}")
    return value


def _regex(value: Any, key: str) -> re.Pattern[str]:
    text = _string(value, key, "a regular expression string")
    try:
        return re.compile(text)
    except re.error as error:
        raise ConfigError(key, f"not a valid regular expression: {error}") from None


def _next_hop(value: Any, key: str) -> str:
    text = _string(value, key, "a SIP URI string such as 'sip:192.0.2.1:5060;transport=tcp'")
    return check_hop_uri(text, key)


def _reject(value: Any, key: str) -> Reject:
    if not isinstance(value, list) or len(value) != 2:
        raise ConfigError(key, 'expected [status, "reason"], for example [403, "Forbidden"]')
    status, reason = value
    if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 699:
        raise ConfigError(key, f"expected a status from 400 to 699, got {status!r}")
    if not isinstance(reason, str) or not reason.strip():
        raise ConfigError(key, "expected a non-empty reason phrase string")
    if any(char in reason for char in "\r\n\x00"):
        raise ConfigError(key, "the reason phrase must be one line")
    return Reject(status, reason)


def _rule(item: Any, key: str, index: int, default_plan: int) -> Rule:
    """Validate one rule table; ``key`` names it in errors."""
    if not isinstance(item, dict):
        raise ConfigError(key, f"expected a table with at least match, got {type_name(item)}")
    extra = set(item) - _RULE_KEYS
    if extra:
        raise ConfigError(f"{key}.{sorted(extra)[0]}", "unknown key")
    if "match" not in item:
        raise ConfigError(f"{key}.match", "required: the string or regular expression to match")
    match_type = item.get("match_type", "regex")
    if match_type not in MATCH_TYPES:
        raise ConfigError(f"{key}.match_type", f"expected one of {', '.join(MATCH_TYPES)}, got {match_type!r}")
    pattern: re.Pattern[str] | None = None
    if match_type == "regex":
        pattern = _regex(item["match"], f"{key}.match")
        match = pattern.pattern
    else:
        match = _string(item["match"], f"{key}.match")
    plan = _integer(item.get("plan"), f"{key}.plan", default_plan)
    priority = _integer(item.get("priority"), f"{key}.priority", 0)

    subst = None if item.get("subst") is None else _regex(item["subst"], f"{key}.subst")
    replace = item.get("replace")
    if replace is not None:
        replace = _string(replace, f"{key}.replace", "a replacement string")
        source = subst if subst is not None else pattern
        if source is None:
            raise ConfigError(
                f"{key}.replace",
                f"nothing to replace: add subst (a regular expression), or use match_type regex; "
                f"for a {match_type} match use strip and prefix",
            )
        try:
            source.sub(replace, "")  # compiles the template: bad escapes, unknown groups
        except (re.error, IndexError) as error:
            what = "subst" if subst is not None else "match"
            raise ConfigError(f"{key}.replace", f"not a valid replacement for {what}: {error}") from None
    elif subst is not None:
        raise ConfigError(f"{key}.subst", 'subst without replace: add replace (replace = "" deletes the match)')

    strip = _integer(item.get("strip"), f"{key}.strip", 0, low=0)
    prefix = _string(item.get("prefix", ""), f"{key}.prefix")
    attrs = _string(item.get("attrs", ""), f"{key}.attrs")
    next_hop = None if item.get("next_hop") is None else _next_hop(item["next_hop"], f"{key}.next_hop")
    reject = None if item.get("reject") is None else _reject(item["reject"], f"{key}.reject")
    if reject is not None and next_hop is not None:
        raise ConfigError(f"{key}.reject", "a rule either forwards (next_hop) or rejects, not both")
    return Rule(
        index=index,
        plan=plan,
        priority=priority,
        match_type=match_type,
        match=match,
        pattern=pattern,
        subst=subst,
        replace=replace,
        strip=strip,
        prefix=prefix,
        attrs=attrs,
        next_hop=next_hop,
        reject=reject,
        label=f"{plan}:{index}",
    )


def _rule_list(raw: Any, key: str) -> list[Any]:
    if not isinstance(raw, list):
        raise ConfigError(key, f"expected a list of rule tables ([[rules]]), got {type_name(raw)}")
    return raw


def _load_rules_file(config: Mapping[str, Any], name: Any) -> tuple[str, list[Any]]:
    """Read the rules file; return its path (for error keys) and its rule tables."""
    name = _string(name, f"{_PREFIX}.rules_file", "a file name")
    path = config.path(name) if isinstance(config, RouterTable) else str(Path(name))
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as error:
        raise ConfigError(f"{_PREFIX}.rules_file", f"cannot read {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{_PREFIX}.rules_file", f"{path} is not valid TOML: {error}") from None
    where = f"{_PREFIX}.rules_file: {path}"
    extra = set(data) - {"rules"}
    if extra:
        raise ConfigError(f"{where}: {sorted(extra)[0]}", "unknown key (a rules file holds only [[rules]] tables)")
    return where, _rule_list(data.get("rules", []), f"{where}: rules")


def parse_dialplan_config(config: Mapping[str, Any]) -> DialplanConfig:
    """Validate the ``[routing.dialplan]`` table (and its rules file).

    Errors name the key, as ``routing.dialplan.rules[3].match``; for a rule
    in the rules file, as ``routing.dialplan.rules_file: PATH: rules[3].match``.
    """
    unknown = set(config) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"{_PREFIX}.{sorted(unknown)[0]}", "unknown key")
    default_plan = _integer(config.get("default_plan"), f"{_PREFIX}.default_plan", 1)
    match_on = config.get("match_on", "ruri")
    if match_on not in MATCH_ON:
        raise ConfigError(f"{_PREFIX}.match_on", f"expected one of {', '.join(MATCH_ON)}, got {match_on!r}")
    sources = [(f"{_PREFIX}.rules", _rule_list(config.get("rules", []), f"{_PREFIX}.rules"))]
    if config.get("rules_file") is not None:
        where, items = _load_rules_file(config, config["rules_file"])
        sources.append((f"{where}: rules", items))
    rules: list[Rule] = []
    for base, items in sources:
        for position, item in enumerate(items):
            rules.append(_rule(item, f"{base}[{position}]", len(rules), default_plan))
    return DialplanConfig(default_plan=default_plan, match_on=match_on, rules=tuple(rules))


@implementer(IPlugin, IRouterFactory)
class DialplanRouterFactory:
    """IRouterFactory for ``dialplan``."""

    name = "dialplan"

    def make_router(self, config: Mapping[str, Any], reactor: Any) -> DialplanRouter:
        return DialplanRouter(parse_dialplan_config(config))
