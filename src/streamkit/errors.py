"""streamkit's exceptions. Users catch :class:`StreamkitError` to catch them all."""

from __future__ import annotations


class StreamkitError(Exception):
    """Base class of every error streamkit raises on purpose."""


class ConfigError(StreamkitError):
    """A configuration is invalid. ``problems`` lists ``(key_path, message)`` pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{path}: {msg}" if path else msg for path, msg in problems))


class PluginError(StreamkitError):
    """A feed plugin could not be found or loaded."""


class TransportError(StreamkitError):
    """The connection failed. After any TransportError the transport is dead: reconnect."""


class ConnectError(TransportError):
    """The connection could not be opened (refused, DNS, TLS, timeout, or a non-101 answer).

    ``status`` is the HTTP status of a refused handshake where there was one and
    ``retry_after`` the server's ``Retry-After`` in seconds where it sent one.
    """

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        self.status = status
        self.retry_after = retry_after
        super().__init__(message)


class ConnectionClosed(TransportError):
    """The peer closed the connection (``code``/``reason`` from its close frame, 1006 when the
    TCP connection simply went away)."""

    def __init__(self, code: int = 1006, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"connection closed: {code} {reason}".rstrip())


class MessageTooLarge(TransportError):
    """A received message exceeded ``max_message_size``."""


class SlowConsumerError(StreamkitError):
    """The subscriber fell behind under the ``disconnect`` policy and was cut off."""


class EscalationError(StreamkitError):
    """A supervisor exceeded its restart intensity and gave up; ``cause`` is the last failure."""

    def __init__(self, supervisor: str, child: str, cause: BaseException | None) -> None:
        self.supervisor = supervisor
        self.child = child
        self.cause = cause
        super().__init__(
            f"supervisor {supervisor!r} gave up: child {child!r} exceeded its restart "
            f"intensity; last failure: {cause!r}"
        )
