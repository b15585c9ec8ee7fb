"""The Transport protocol: the only thing a connection actor knows about the network.

A transport is one WebSocket connection, used by exactly one task (its actor). It is
single-use: after ``close()`` or any :class:`~streamkit.errors.TransportError` it is dead, and
the actor builds a new one to reconnect.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import NamedTuple, Protocol, runtime_checkable


class Frame(NamedTuple):
    """One whole WebSocket message (fragments already reassembled)."""

    data: bytes
    binary: bool = False


class TransportState(enum.StrEnum):
    NEW = "new"
    CONNECTING = "connecting"
    OPEN = "open"
    CLOSED = "closed"


@runtime_checkable
class Transport(Protocol):
    """One WebSocket connection.

    Errors: every method may raise :class:`~streamkit.errors.TransportError`
    (``ConnectError`` from :meth:`connect`, ``ConnectionClosed`` when the peer closed,
    ``MessageTooLarge``); after that the transport is dead.
    """

    @property
    def state(self) -> TransportState: ...

    async def connect(self) -> None:
        """Open the connection; returns when the upgrade succeeded. Safe to cancel."""

    async def send(self, data: bytes | str) -> None:
        """Queue one text message (bytes are sent as text too: exchange protocols are JSON).

        Never coalesced with other messages: subscription and control messages must reach the
        exchange one frame each."""

    async def recv_batch(self, max_messages: int = 256) -> list[Frame]:
        """Wait for at least one message and return all that are ready (up to
        ``max_messages``), in arrival order. Raises ``ConnectionClosed`` once the connection
        is gone and nothing is buffered."""

    async def ping(self, payload: bytes = b"") -> None:
        """Send a WebSocket ping control frame."""

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection (best effort, bounded time). Idempotent."""


@runtime_checkable
class PushTransport(Transport, Protocol):
    """A transport that can also hand messages over from its reader callback, so its owner
    decodes them without a task switch (push mode). Optional: the actor uses it when the
    transport offers it (:class:`~streamkit.transport.libcurl.LibcurlTransport` does)."""

    def take_batch(self, max_messages: int = 256) -> list[Frame]:
        """``recv_batch`` without waiting: ``[]`` when nothing is queued; raises what
        ``recv_batch`` raises once nothing is left to deliver."""

    def set_receiver(self, receiver: Callable[[], None] | None) -> None:
        """Call ``receiver()`` from the reader callback whenever messages were queued or the
        connection failed; it must not raise or block. ``None`` turns push mode off."""
