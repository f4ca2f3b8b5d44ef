"""Call admission control: concurrent calls per account and per trunk, counted from 2xx to BYE."""

from __future__ import annotations

from typing import Any

from sipgate_proxy.routing.decisions import Forward, RequestContext, Target
from sipgate_proxy.security.admission import AdmissionSettings, CallCounter
from sipgate_proxy.sip.message import Request
from tests.sip.test_proxy import Harness, answer, invite, statuses


def test_counter_limits_per_account_and_trunk_and_frees_on_end() -> None:
    """Calls count per key up to the limit; ending one frees its slot; a default trunk limit applies to all tags."""
    counter = CallCounter(AdmissionSettings(per_account=1, per_trunk={"*": 2}))
    keys = counter.keys_for({"auth.user": "alice@example.com", "trusted": "carrier-a"})
    assert keys == ("account:alice@example.com", "trunk:carrier-a")
    assert counter.over_limit(keys, 0.0) is None
    counter.established("c1", keys, 0.0)
    assert counter.over_limit(keys, 1.0) == "account:alice@example.com"
    counter.ended("c1")
    assert counter.over_limit(keys, 2.0) is None


def test_dialog_timeout_frees_a_call_whose_bye_was_lost() -> None:
    """A call without BYE stops counting after dialog_timeout."""
    counter = CallCounter(AdmissionSettings(per_account=1, dialog_timeout=3600.0))
    keys = ("account:alice@example.com",)
    counter.established("c1", keys, 0.0)
    assert counter.over_limit(keys, 100.0) is not None
    assert counter.over_limit(keys, 3700.0) is None


class Routed:
    """A router that marks requests as coming from trunk carrier-a and forwards them."""

    def route(self, request: Request, context: RequestContext) -> Any:
        context.attrs["trusted"] = "carrier-a"
        return Forward((Target("sip:b@127.0.0.1:5070"),))


def test_core_rejects_over_the_trunk_limit_until_a_bye() -> None:
    """With one call allowed per trunk the second INVITE gets 503 + Retry-After while the first is up;
    after its BYE a new call goes through."""
    h = Harness(admission=AdmissionSettings(per_trunk={"carrier-a": 1}, retry_after=20))
    h.core.router = Routed()
    h.receive(invite(call_id="one", branch="z9hG4bK1"))
    ((first, _),) = h.requests()
    h.receive(answer(first, 200))
    h.take()
    h.receive(invite(call_id="two", branch="z9hG4bK2"))
    sent = h.take()
    assert [s for s in statuses(sent) if s != 100] == [503]
    assert any(b"Retry-After: 20" in d for d, _ in sent)
    h.receive(invite(method="BYE", call_id="one", branch="z9hG4bK3", to_tag=";tag=b1"))
    h.take()
    h.receive(invite(call_id="three", branch="z9hG4bK4"))
    assert [r.method for r, _ in h.requests()] == ["INVITE"]


def test_unanswered_calls_do_not_count_and_486_can_be_chosen() -> None:
    """A call that was never answered takes no slot; status = 486 answers Busy Here instead of 503."""
    h = Harness(admission=AdmissionSettings(per_trunk={"carrier-a": 1}, status=486))
    h.core.router = Routed()
    h.receive(invite(call_id="one", branch="z9hG4bK1"))
    ((first, _),) = h.requests()
    h.receive(answer(first, 486))
    h.receive(invite(call_id="two", branch="z9hG4bK2"))
    ((second, _),) = [(r, d) for r, d in h.requests() if r.method == "INVITE"]
    h.receive(answer(second, 200))
    h.take()
    h.receive(invite(call_id="three", branch="z9hG4bK5"))
    assert [s for s in statuses(h.take()) if s != 100] == [486]
