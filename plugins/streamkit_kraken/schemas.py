"""Kraken WebSocket v2 wire formats as msgspec Structs mirroring the exchange's JSON.

Every frame is a JSON object of one of two shapes:

- channel data ``{"channel": name, "type": "snapshot"|"update", "data": [...]}`` (and the
  bare ``{"channel": "heartbeat"}``);
- method responses ``{"method": "subscribe"|"unsubscribe"|"pong", "success": bool,
  "result": {...}, "error": text, "symbol": pair, "req_id": n, "time_in": .., "time_out": ..}``.

:class:`Envelope` reads the routing fields and keeps ``data`` raw; the per-channel decoders
then decode it straight into Structs. Prices and quantities are JSON *numbers* in v2: they
decode into Decimal exactly as written (``1797.30`` stays ``Decimal("1797.30")``), which is
what the book checksum needs (see :mod:`streamkit_kraken.checksum`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Literal

import msgspec

AwareTime = Annotated[datetime, msgspec.Meta(tz=True)]
"""An RFC 3339 time with its zone (Kraken writes ``Z``); a naive one is a malformed frame."""


class Result(msgspec.Struct, gc=False):
    """``result`` of a subscribe/unsubscribe acknowledgement (one per symbol)."""

    channel: str
    symbol: str | None = None


class Envelope(msgspec.Struct, gc=False):
    channel: str | None = None
    type: str | None = None
    data: msgspec.Raw = msgspec.Raw()  # empty when absent (Raw cannot be Optional)
    method: str | None = None
    success: bool | None = None
    result: Result | None = None
    error: str | None = None
    symbol: str | None = None
    req_id: int | None = None


class Level(msgspec.Struct, gc=False):
    price: Decimal
    qty: Decimal


class BookData(msgspec.Struct, gc=False):
    """One symbol's part of a ``book`` message. ``checksum`` covers the book *after* this
    message is applied (snapshots carry one too in v2)."""

    symbol: str
    checksum: int
    bids: list[Level] = []
    asks: list[Level] = []
    timestamp: AwareTime | None = None


class TradeData(msgspec.Struct, gc=False):
    """One execution; ``side`` is the taker's side."""

    symbol: str
    side: Literal["buy", "sell"]
    price: Decimal
    qty: Decimal
    trade_id: int
    timestamp: AwareTime
    ord_type: str = ""


class TickerData(msgspec.Struct, gc=False):
    """Level-1 data: best bid/offer and the last 24 h of trading."""

    symbol: str
    bid: Decimal
    bid_qty: Decimal
    ask: Decimal
    ask_qty: Decimal
    last: Decimal
    volume: Decimal
    vwap: Decimal | None = None
    low: Decimal | None = None
    high: Decimal | None = None
    change: Decimal | None = None
    change_pct: Decimal | None = None
    timestamp: AwareTime | None = None


class StatusData(msgspec.Struct, gc=False):
    """``status`` channel: sent on connect and whenever the trading engine's state changes
    (``online``, ``maintenance``, ``cancel_only``, ``post_only``, ...)."""

    system: str
    api_version: str = ""
    version: str = ""
    connection_id: int | None = None


# Decoders are built once: building one compiles the type's decoding plan.
envelope_decoder = msgspec.json.Decoder(Envelope)
book_decoder = msgspec.json.Decoder(list[BookData])
trade_decoder = msgspec.json.Decoder(list[TradeData])
ticker_decoder = msgspec.json.Decoder(list[TickerData])
status_decoder = msgspec.json.Decoder(list[StatusData])

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_ns(moment: datetime) -> int:
    """RFC 3339 time (microsecond resolution on Kraken) -> int ns since the epoch, exactly."""
    return (moment - _EPOCH) // _MICROSECOND * 1000
