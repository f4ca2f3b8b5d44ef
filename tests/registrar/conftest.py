"""Fixtures for the registrar tests: a real redis-server for the Redis store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.registrar.redis_server import RedisServer, shared_server, stop_reactor_threads, stop_shared_server


@pytest.fixture(scope="session", autouse=True)
def _stop_shared_redis() -> Iterator[None]:
    """Stop the session's redis-server and the reactor threads (if a test started them) at the end."""
    yield
    stop_shared_server()
    stop_reactor_threads()


@pytest.fixture
def redis_server() -> RedisServer:
    """The session's redis-server on 127.0.0.1 (fails in CI, skips elsewhere, when missing)."""
    return shared_server()
