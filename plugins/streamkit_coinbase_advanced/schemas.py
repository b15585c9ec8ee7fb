"""Coinbase Advanced Trade market-data wire formats as msgspec Structs mirroring the JSON.

Every data frame is an envelope ``{"channel", "client_id", "timestamp", "sequence_num",
"events": [...]}`` tagged by ``channel``; :data:`message_decoder` decodes a frame in one pass
into the Struct of its channel. The live feed omits ``client_id`` (the docs show ``""``) and
sends ``heartbeat_counter`` as an integer (the docs show a string): both are accepted.
Errors are not enveloped: ``{"type":"error","message":"..."}`` (:data:`head_decoder` reads
them, and the channel/sequence of frames from channels this plugin does not know).

Prices and sizes are strings and decode into Decimal. Times are RFC 3339 strings with up to
nanosecond digits (``2026-09-07T23:37:22.278662782Z``), converted exactly by :func:`to_ns`.
"""

from __future__ import annotations

import calendar
import re
from decimal import Decimal
from typing import Literal, TypeAlias

import msgspec

from streamkit.feed import DecodeError

EventType = Literal["snapshot", "update"]


class _Envelope(msgspec.Struct, gc=False, tag_field="channel", kw_only=True):
    timestamp: str
    sequence_num: int
    """Per connection, shared by every channel, +1 per message, from 0: a jump means loss."""
    client_id: str = ""


# --- level2 (delivered on channel "l2_data") -------------------------------------------------


class L2Level(msgspec.Struct, gc=False):
    side: Literal["bid", "offer"]
    price_level: Decimal
    new_quantity: Decimal
    """Absolute size at the level; 0 removes it."""
    event_time: str | None = None


class L2Event(msgspec.Struct, gc=False):
    type: EventType
    product_id: str
    updates: list[L2Level]


class L2Data(_Envelope, tag="l2_data"):
    events: list[L2Event]


# --- market_trades -----------------------------------------------------------------------------


class WireTrade(msgspec.Struct, gc=False):
    trade_id: str
    product_id: str
    price: Decimal
    size: Decimal
    side: str
    """``BUY``/``SELL`` (see :mod:`streamkit_coinbase_advanced.feed` for whose side it is).
    Kept a plain str: an ``UNKNOWN_ORDER_SIDE`` trade must not fail its whole batch."""
    time: str


class TradesEvent(msgspec.Struct, gc=False):
    type: EventType
    trades: list[WireTrade]


class MarketTrades(_Envelope, tag="market_trades"):
    events: list[TradesEvent]


# --- ticker / ticker_batch -----------------------------------------------------------------------


class WireTicker(msgspec.Struct, gc=False):
    product_id: str
    price: Decimal
    volume_24_h: Decimal | None = None
    low_24_h: Decimal | None = None
    high_24_h: Decimal | None = None
    best_bid: Decimal | None = None
    best_bid_quantity: Decimal | None = None
    best_ask: Decimal | None = None
    best_ask_quantity: Decimal | None = None


class TickerEvent(msgspec.Struct, gc=False):
    type: EventType
    tickers: list[WireTicker]


class TickerMessage(_Envelope, tag="ticker"):
    events: list[TickerEvent]


class TickerBatch(_Envelope, tag="ticker_batch"):
    """The same tickers, batched every 5 s (not subscribed by this plugin; decoded so that a
    connection shared with other software never breaks on it)."""

    events: list[TickerEvent]


# --- candles -------------------------------------------------------------------------------


class WireCandle(msgspec.Struct, gc=False):
    product_id: str
    start: str
    """Unix seconds as a string: the 5-minute bar's opening time."""
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal


class CandlesEvent(msgspec.Struct, gc=False):
    type: EventType
    candles: list[WireCandle]


class Candles(_Envelope, tag="candles"):
    events: list[CandlesEvent]


# --- status --------------------------------------------------------------------------------


class ProductStatus(msgspec.Struct, gc=False):
    id: str
    status: str
    """``online``, ``offline``, ``delisted``, ... (empty for some futures)."""
    status_message: str = ""


class ProductStatusEvent(msgspec.Struct, gc=False):
    type: EventType
    products: list[ProductStatus]


class StatusMessage(_Envelope, tag="status"):
    events: list[ProductStatusEvent]


# --- heartbeats and subscriptions -------------------------------------------------------------


class HeartbeatEvent(msgspec.Struct, gc=False):
    current_time: str
    heartbeat_counter: int | str


class Heartbeats(_Envelope, tag="heartbeats"):
    events: list[HeartbeatEvent]


class SubscriptionsEvent(msgspec.Struct, gc=False):
    subscriptions: dict[str, list[str]]
    """Channel -> product ids: ALL current subscriptions of the connection, not just the
    request's (``heartbeats`` lists the pseudo-product ``heartbeats``)."""


class Subscriptions(_Envelope, tag="subscriptions"):
    """The answer to every subscribe/unsubscribe."""

    events: list[SubscriptionsEvent]


Message: TypeAlias = (
    L2Data
    | MarketTrades
    | TickerMessage
    | TickerBatch
    | Candles
    | StatusMessage
    | Heartbeats
    | Subscriptions
)


class Head(msgspec.Struct, gc=False):
    """What is left to read of a frame that is no known channel: an error, or an envelope
    from a channel this plugin does not know (it still takes a ``sequence_num``)."""

    type: str | None = None
    message: str | None = None
    reason: str | None = None
    channel: str | None = None
    sequence_num: int | None = None


# Decoders are built once: building one compiles the type's decoding plan.
message_decoder: msgspec.json.Decoder[Message] = msgspec.json.Decoder(Message)
head_decoder = msgspec.json.Decoder(Head)

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})"
)


def to_ns(text: str) -> int:
    """RFC 3339 time -> int ns since the epoch, exactly (every fractional digit is kept;
    ``datetime`` would drop the nanoseconds Coinbase sends). Raises DecodeError."""
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise DecodeError(f"not an RFC 3339 time: {text!r}")
    year, month, day, hour, minute, second, frac, zone = m.groups()
    seconds = calendar.timegm(
        (int(year), int(month), int(day), int(hour), int(minute), int(second), 0, 0, 0)
    )
    if zone != "Z":
        offset = int(zone[1:3]) * 3600 + int(zone[4:6]) * 60
        seconds -= offset if zone[0] == "+" else -offset
    return seconds * 1_000_000_000 + int((frac or "0").ljust(9, "0"))


def seconds_to_ns(text: str) -> int:
    """``"1688998200"`` (unix seconds, as candles send them) -> ns. Raises DecodeError."""
    if not text.isdigit():
        raise DecodeError(f"not unix seconds: {text!r}")
    return int(text) * 1_000_000_000
