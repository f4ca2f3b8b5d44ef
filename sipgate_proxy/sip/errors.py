"""What a SIP element should answer when a message is wrong."""

from __future__ import annotations

from typing import Any


class SIPError(Exception):
    """A request cannot be processed; answer it with ``status`` and ``reason``.

    ``headers`` are extra header lines (name, value) for the answer, for
    example ``("Unsupported", "foo")`` on a 420.
    """

    def __init__(
        self,
        status: int,
        reason: str,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.headers = headers


class FramingError(SIPError):
    """The bytes cannot be split into messages; on a stream, close it."""

    def __init__(self, reason: str) -> None:
        super().__init__(400, reason)
        #: messages framed before the fault, set by the framer
        self.messages: list[Any] = []
