"""The routing chain: routers asked in the configured order.

The first router that returns a decision wins (None passes on). A router may
answer with a Deferred; the chain then waits for it before asking the next
one, and plain values are never wrapped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from zope.interface import implementer

from ..interfaces import IRouter
from ..sip.message import Request
from .decisions import RequestContext


@implementer(IRouter)
class RoutingChain:
    def __init__(self, routers: Sequence[tuple[str, Any]]) -> None:
        self.routers = tuple(routers)

    def get(self, name: str) -> Any:
        """The router configured under ``name``, or None."""
        for router_name, router in self.routers:
            if router_name == name:
                return router
        return None

    def route(self, request: Request, context: RequestContext) -> Any:
        return self._ask(0, request, context)

    def _ask(self, start: int, request: Request, context: RequestContext) -> Any:
        routers = self.routers
        for index in range(start, len(routers)):
            name, router = routers[index]
            result = router.route(request, context)
            if result is None:
                continue
            if hasattr(result, "addCallback"):
                return result.addCallback(self._later, index, name, request, context)
            context.decided_by = name
            return result
        return None

    def _later(self, result: Any, index: int, name: str, request: Request, context: RequestContext) -> Any:
        if result is None:
            return self._ask(index + 1, request, context)
        context.decided_by = name
        return result
