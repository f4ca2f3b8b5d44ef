"""Two proxies share registrations through Redis: registered at one, reached through the other.

Two twistd proxies on two free UDP ports use one real redis-server
(``store = "redis"``). A Python client registers SIPp's callee for alice
through proxy A with digest authentication; SIPp then calls
sip:alice@127.0.0.1 through proxy B, which has never seen that REGISTER and
finds the binding in Redis.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.harness import LOOPBACK, ProxyProcess, Sipp, explain, free_port, run_sipp_pair
from tests.integration.test_registrar_calls import Client, registrar_config
from tests.registrar.redis_server import RedisServer, require_redis_server

pytestmark = pytest.mark.integration


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own on 127.0.0.1 (fails in CI, skips elsewhere, when missing)."""
    server = RedisServer(tmp_path / "redis", require_redis_server()).start()
    try:
        yield server
    finally:
        server.stop()


def _config(port: int, workdir: Path, redis_url: str) -> str:
    return registrar_config(port, workdir, f'store = "redis"\nredis = "{redis_url}"')


def test_registered_through_one_proxy_called_through_the_other(
    tmp_path: Path,
    redis_server: RedisServer,
    start_proxy: Callable[..., ProxyProcess],
    sipp: Callable[..., Sipp],
) -> None:
    """A digest REGISTER at proxy A lands in Redis; five calls sent to proxy B reach the registered device."""
    port_a, port_b, callee_port = free_port(), free_port(), free_port()
    start_proxy(_config(port_a, tmp_path, redis_server.url), name="proxy_a")
    proxy_b = start_proxy(_config(port_b, tmp_path, redis_server.url), name="proxy_b")
    client = Client(port_a)
    try:
        contact = f"sip:alice@{LOOPBACK}:{callee_port}"
        status, reply = client.register_with_digest("alice", "wonderland", contact, "SHA-256")
        assert status == 200, reply
        assert f"<{contact}>;expires=" in reply
    finally:
        client.close()

    uas = sipp("uas_call.xml", name="callee", transport="udp", local_port=callee_port, calls=5)
    uac = sipp(
        "uac_call.xml",
        name="caller",
        transport="udp",
        remote=(LOOPBACK, port_b),  # Request-URI sip:alice@127.0.0.1:<proxy B port>
        send_to=(LOOPBACK, port_b),
        calls=5,
        rate=5,
        service="alice",
    )
    caller, callee = run_sipp_pair(uac, uas)
    assert (caller.returncode, caller.successful, caller.failed) == (0, 5, 0), explain(proxy_b, caller, callee)
    assert callee.returncode == 0, explain(proxy_b, caller, callee)
