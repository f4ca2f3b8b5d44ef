"""Fixtures for the integration tests: SIPp, the twistd proxy, free ports.

In CI (``CI=true``) a missing SIPp or twistd fails the test; elsewhere it
skips it. Every process a fixture starts is stopped at teardown, whether the
test passed or not.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import ProxyProcess, Sipp, free_port, twistd_path


def _missing(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is required for the integration tests in CI")
    pytest.skip(f"{what} not available")


@pytest.fixture(scope="session")
def sipp_binary() -> str:
    """Path of the sipp executable (fails in CI, skips elsewhere, when missing)."""
    path = shutil.which("sipp")
    if path is None:
        _missing("sipp (Debian package sip-tester)")
    assert path is not None
    return path


@pytest.fixture(scope="session")
def twistd_binary() -> Path:
    """The twistd next to the running Python."""
    path = twistd_path()
    if not path.exists():
        _missing(f"twistd ({path})")
    return path


@pytest.fixture
def start_proxy(tmp_path: Path, twistd_binary: Path) -> Iterator[Callable[..., ProxyProcess]]:
    """Start a proxy from config text; every proxy started is stopped at teardown."""
    started: list[ProxyProcess] = []

    def start(config_text: str, name: str = "proxy") -> ProxyProcess:
        proxy = ProxyProcess(config_text, tmp_path, name=name, twistd=twistd_binary)
        started.append(proxy)
        return proxy.start()

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture
def sipp(tmp_path: Path, sipp_binary: str) -> Iterator[Callable[..., Sipp]]:
    """Make SIPp processes (not started); every one is stopped at teardown."""
    made: list[Sipp] = []

    def make(scenario: str, **kwargs: Any) -> Sipp:
        process = Sipp(scenario, tmp_path, sipp=sipp_binary, **kwargs)
        made.append(process)
        return process

    yield make
    for process in made:
        process.stop()


@pytest.fixture
def ports() -> Callable[[], int]:
    """free_port, as a fixture for brevity."""
    return free_port
