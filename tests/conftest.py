"""Guards for every test: no test asks the machine's DNS resolver."""

from __future__ import annotations

from typing import Any

import pytest

from sipgate_proxy import service


@pytest.fixture(autouse=True)
def _no_system_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    """A service built without an injected resolver must not reach /etc/resolv.conf's servers."""

    def refuse(self: Any, query: Any, timeout: Any = None) -> Any:
        raise AssertionError(f"a test asked the machine's resolver for {query!r}; inject a resolver")

    monkeypatch.setattr(service._SystemResolver, "query", refuse)
