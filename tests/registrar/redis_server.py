"""A real redis-server for tests, and a way to drive Redis Deferreds from a test.

:class:`RedisServer` starts ``redis-server`` on 127.0.0.1 with a free port,
no persistence and its working directory in a temporary directory, waits
until it answers PING and stops it again. :func:`require_redis_server`
fails the test in CI (``CI=true``) and skips it elsewhere when the binary is
missing.

The Redis store talks over real sockets, so its Deferreds fire only while
the reactor runs. Unit tests do not start the reactor; :func:`wait` turns it
by hand (``reactor.iterate``) until one Deferred has fired, bounded by a
timeout. That is fine for these I/O tests: nothing else runs on that reactor.
As the reactor never runs, its thread pool (which resolves the Redis host
name, also ``127.0.0.1``) would never start: :func:`wait` starts it, and
:func:`stop_reactor_threads` (called by the conftest at the end of the
session) stops it again.
:class:`SyncStore` wraps a store so that each method returns an
already-fired Deferred, which lets the store contract suite (written for
stores whose Deferreds fire at once) run against Redis unchanged.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface import implementer

from sipgate_proxy.registrar.location import Binding, Change, ILocationStore
from sipgate_proxy.registrar.redis import RedisLocationStore

T = TypeVar("T")

LOOPBACK = "127.0.0.1"


def require_redis_server() -> str:
    """Path of redis-server; in CI its absence fails the test, elsewhere it skips it."""
    path = shutil.which("redis-server")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is required for the Redis tests in CI (Debian package redis-server)")
        pytest.skip("redis-server not available")
    assert path is not None
    return path


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def ping(port: int, timeout: float = 0.5) -> bool:
    """Whether a Redis server on 127.0.0.1:port answers PING with PONG."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """``redis-server`` on 127.0.0.1 and a free port, without persistence, in ``workdir``."""

    def __init__(self, workdir: Path, binary: str = "redis-server") -> None:
        self.workdir = Path(workdir)
        self.binary = binary
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def start(self, timeout: float = 15.0) -> RedisServer:
        """Start the server and wait until it answers PING; a failed start leaves no process."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # another process may take the free port before redis binds it
            self.port = _free_tcp_port()
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    [
                        *(self.binary, "--port", str(self.port), "--bind", LOOPBACK),
                        *("--save", "", "--appendonly", "no", "--dir", str(self.workdir), "--daemonize", "no"),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=self.workdir,
                    start_new_session=True,
                )
            deadline = time.monotonic() + timeout
            while self.process.poll() is None:
                if ping(self.port):
                    return self
                if time.monotonic() >= deadline:
                    self.stop()
                    raise TimeoutError(f"redis-server did not answer PING in {timeout} s: {self.log_tail()}")
                time.sleep(0.02)  # poll interval while waiting for the PING answer, not a fixed wait
        self.stop()
        raise RuntimeError(f"redis-server did not start: {self.log_tail()}")

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


_shared: RedisServer | None = None


def shared_server() -> RedisServer:
    """One server for the whole test session, started on first use.

    Tests keep apart by key prefix (:func:`unique_prefix`); tests/registrar's
    conftest stops it at the end of the session.
    """
    global _shared
    binary = require_redis_server()
    if _shared is None or _shared.process is None or _shared.process.poll() is not None:
        _shared = RedisServer(Path(tempfile.mkdtemp(prefix="sipgate-redis-")), binary).start()
    return _shared


def stop_shared_server() -> None:
    global _shared
    if _shared is not None:
        _shared.stop()
        shutil.rmtree(_shared.workdir, ignore_errors=True)
        _shared = None


def unique_prefix() -> str:
    """A key prefix no other test uses."""
    return f"test:{uuid.uuid4().hex}:"


def wait(d: defer.Deferred[T], timeout: float = 5.0) -> T:
    """Turn the global reactor until ``d`` fires; return its result or raise its failure.

    For unit tests of the Redis store, whose Deferreds fire on socket I/O.
    Raises TimeoutError when ``d`` has not fired after ``timeout`` seconds.
    """
    from twisted.internet import reactor as global_reactor

    reactor: Any = global_reactor
    pool = reactor.getThreadPool()
    if not pool.started:
        pool.start()
    results: list[Any] = []
    d.addBoth(results.append)
    deadline = time.monotonic() + timeout
    while not results:
        if time.monotonic() >= deadline:
            raise TimeoutError(f"the Deferred did not fire within {timeout} s")
        reactor.iterate(0.001)
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]  # type: ignore[no-any-return]


def stop_reactor_threads() -> None:
    """Stop the global reactor's thread pool if :func:`wait` started it."""
    from twisted.internet import reactor

    pool = getattr(reactor, "threadpool", None)
    if pool is not None and pool.started:
        pool.stop()


def redis_store(url: str | None = None, prefix: str | None = None, **kwargs: Any) -> RedisLocationStore:
    """A store on the shared server (or ``url``) with a fresh prefix, on the global reactor."""
    from twisted.internet import reactor

    return RedisLocationStore(url or shared_server().url, reactor, prefix or unique_prefix(), **kwargs)


def _settled(d: defer.Deferred[T]) -> defer.Deferred[T]:
    try:
        return defer.succeed(wait(d))
    except Exception:
        return defer.fail()


@implementer(ILocationStore)
class SyncStore:
    """A Redis store whose methods return Deferreds that have already fired."""

    name = "redis"

    def __init__(self, store: RedisLocationStore) -> None:
        self.store = store

    def get(self, aor: str, now: float) -> defer.Deferred[list[Binding]]:
        return _settled(self.store.get(aor, now))

    def apply(
        self,
        aor: str,
        changes: Sequence[Change],
        now: float,
        max_contacts: int | None = None,
        evict_oldest: bool = False,
    ) -> defer.Deferred[list[Binding]]:
        return _settled(self.store.apply(aor, changes, now, max_contacts, evict_oldest))

    def remove_all(self, aor: str, call_id: str, cseq: int, now: float) -> defer.Deferred[int]:
        return _settled(self.store.remove_all(aor, call_id, cseq, now))

    def purge(self, now: float) -> defer.Deferred[int]:
        return _settled(self.store.purge(now))

    def count(self, now: float) -> defer.Deferred[int]:
        return _settled(self.store.count(now))

    def close(self) -> defer.Deferred[None]:
        return _settled(self.store.close())
