"""Faults the simulator can inject into its connections, in-process or over HTTP.

A :class:`Fault` is plain data: ``sim.inject(Fault("stall", seconds=2))`` in a test, or
``POST /_sim/fault`` with the same fields as JSON (``{"kind": "stall", "seconds": 2}``) from
another process. ``conn`` picks one connection by its id (0, 1, 2, ... in accept order, see
``sim.stats``); ``None`` targets every connection open at injection time.

Kinds and the fields each one reads:

* ``drop``: abort the TCP connection, no close frame (the client sees an abrupt EOF / 1006).
* ``stall``: send nothing but WS pings for ``seconds`` (``None``: until a ``resume``). Data and
  control replies produced meanwhile are queued and delivered afterwards.
* ``resume``: end a stall early.
* ``garbage``: send ``text`` (default: an HTML error page, not JSON) as a text frame.
* ``oversize``: send one text frame of exactly ``size`` bytes (valid JSON padding).
* ``gap``: withhold the next depth diff of ``symbol`` (``None``: of any symbol) from the
  target, so its next diff has ``U != previous u + 1``; the server's book still applies it.
  (Other venues: withhold the next book update of ``symbol``.)
* ``duplicate``: send the next book update of ``symbol`` twice (venue simulators only).
* ``bad_checksum``: corrupt the checksum field of the next book update of ``symbol``, the
  levels stay as captured (venue simulators of checksummed books: OKX, Kraken).
* ``close``: close the WebSocket with ``code`` and ``reason``.
* ``reject``: refuse the next ``count`` WebSocket handshakes (whoever makes them) with HTTP
  ``status``, plus a ``Retry-After: <retry_after>`` header when ``retry_after`` is set.
* ``shutdown``: send Binance's ``serverShutdown`` event (``!serverShutdown`` stream when
  combined), wait ``seconds`` (``None``: 0), then close with 1001.

Frames of ``garbage``, ``oversize`` and ``shutdown`` are written immediately, ahead of queued
data and regardless of a stall.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias

import msgspec

FaultKind: TypeAlias = Literal[
    "drop",
    "stall",
    "resume",
    "garbage",
    "oversize",
    "gap",
    "close",
    "reject",
    "shutdown",
    "duplicate",
    "bad_checksum",
]

#: Faults aimed at connections (all but ``reject``, which acts on future handshakes).
CONNECTION_FAULTS: Final[frozenset[str]] = frozenset(
    {"drop", "stall", "resume", "garbage", "oversize", "gap", "close", "shutdown"}
)

#: Faults on the next book update of a symbol (the venue simulators support all three; the
#: Binance spot simulator only ``gap``).
BOOK_FAULTS: Final[frozenset[str]] = frozenset({"gap", "duplicate", "bad_checksum"})

DEFAULT_GARBAGE: Final = "<html><body><h1>502 Bad Gateway</h1></body></html>"
_OVERSIZE_HEAD: Final = b'{"pad":"'
_OVERSIZE_TAIL: Final = b'"}'
MIN_OVERSIZE: Final = len(_OVERSIZE_HEAD) + len(_OVERSIZE_TAIL)

# Codes an endpoint may not put in a close frame (RFC 6455 section 7.4.1).
_RESERVED_CLOSE_CODES: Final = frozenset({1004, 1005, 1006, 1015})


class FaultError(ValueError):
    """A fault with inconsistent fields."""


class Fault(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One fault to inject; see the module docstring for what each ``kind`` does."""

    kind: FaultKind
    conn: int | None = None
    seconds: float | None = None
    size: int = 1 << 20
    text: str = DEFAULT_GARBAGE
    symbol: str | None = None
    code: int = 1000
    reason: str = ""
    status: int = 429
    count: int = 1
    retry_after: int | None = None

    def __post_init__(self) -> None:
        if self.seconds is not None and self.seconds < 0:
            raise FaultError("seconds must be >= 0")
        if self.size < MIN_OVERSIZE:
            raise FaultError(f"size must be >= {MIN_OVERSIZE}")
        if not (1000 <= self.code <= 4999) or self.code in _RESERVED_CLOSE_CODES:
            raise FaultError(f"close code {self.code} cannot be sent")
        if len(self.reason.encode()) > 123:
            raise FaultError("a close reason is at most 123 bytes")
        if not (400 <= self.status <= 599):
            raise FaultError("reject status must be 4xx or 5xx")
        if self.count < 1:
            raise FaultError("count must be >= 1")
        if self.retry_after is not None and self.retry_after < 0:
            raise FaultError("retry_after must be >= 0")


def oversize_frame(size: int) -> bytes:
    """A JSON text frame of exactly ``size`` bytes: ``{"pad":"xxx..."}``."""
    return _OVERSIZE_HEAD + b"x" * (size - MIN_OVERSIZE) + _OVERSIZE_TAIL


def decode_fault(body: bytes) -> Fault:
    """Parse the JSON body of ``POST /_sim/fault``; raises :class:`FaultError` if invalid."""
    try:
        return msgspec.json.decode(body, type=Fault)
    except msgspec.ValidationError as exc:
        raise FaultError(str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise FaultError(f"invalid JSON: {exc}") from exc
