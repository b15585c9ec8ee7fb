"""Bybit v5 public wire formats as msgspec Structs mirroring the exchange's JSON.

Every frame is one JSON object:

- data: ``{"topic": "<name>.<symbol>", "type": "snapshot"|"delta", "ts": ms, "data": ...}``
  (key order differs between spot and futures: nothing here depends on it);
- command replies: ``{"success": bool, "ret_msg": str, "op": "subscribe"|"ping"|...,
  "req_id": str, "conn_id": str}`` (spot omits ``req_id`` on pongs);
- option/spread style pongs: ``{"op": "pong", "args": [ms]}``.

``data`` is kept raw by the envelope and decoded by the topic's own Decoder, so each frame is
parsed once. Prices and sizes decode straight into Decimal, except in ``tickers`` whose
deltas carry only the fields that changed and may send ``""`` for an absent value: those
fields stay optional strings and are merged, then converted; and orderbook level prices, which
stay strings for the plugin to intern (:class:`~streamkit.book.PriceInterner`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec


class Envelope(msgspec.Struct, gc=False):
    """Every frame; ``topic`` is set on data, ``op`` on command replies."""

    topic: str | None = None
    type: str | None = None
    ts: int | None = None
    data: msgspec.Raw = msgspec.Raw()  # empty when absent (Raw cannot be Optional)
    success: bool | None = None
    ret_msg: str | None = None
    op: str | None = None
    req_id: str | None = None
    conn_id: str | None = None


Level = tuple[str, Decimal]
"""An orderbook level ``[price, size]``. The price stays Bybit's string: the plugin maps it
through the symbol's :class:`~streamkit.book.PriceInterner` to a shared Decimal (the book hashes
every level's price on every update, and hashing a fresh Decimal is slow)."""


class OrderbookData(msgspec.Struct, gc=False):
    """``orderbook.{depth}.{symbol}``: absolute sizes, ``"0"`` deletes; ``u`` is the update
    id (consecutive; ``u == 1`` is a fresh snapshot after a service restart); ``seq`` the
    cross sequence, comparable across depths."""

    symbol: str = msgspec.field(name="s")
    bids: list[Level] = msgspec.field(name="b")
    asks: list[Level] = msgspec.field(name="a")
    update_id: int = msgspec.field(name="u")
    seq: int | None = None


class TradeData(msgspec.Struct, gc=False):
    """One fill of ``publicTrade.{symbol}``; ``S`` is the taker's side."""

    time: int = msgspec.field(name="T")
    symbol: str = msgspec.field(name="s")
    side: Literal["Buy", "Sell"] = msgspec.field(name="S")
    size: Decimal = msgspec.field(name="v")
    price: Decimal = msgspec.field(name="p")
    trade_id: str = msgspec.field(name="i")
    block_trade: bool = msgspec.field(default=False, name="BT")


class TickerData(msgspec.Struct, gc=False):
    """``tickers.{symbol}``. Spot sends full snapshots without bid/ask; linear sends a
    snapshot then deltas of the changed fields only, bid/ask and the derivative fields
    included. Unset fields are None."""

    symbol: str
    last_price: str | None = msgspec.field(default=None, name="lastPrice")
    prev_price_24h: str | None = msgspec.field(default=None, name="prevPrice24h")
    high_price_24h: str | None = msgspec.field(default=None, name="highPrice24h")
    low_price_24h: str | None = msgspec.field(default=None, name="lowPrice24h")
    volume_24h: str | None = msgspec.field(default=None, name="volume24h")
    turnover_24h: str | None = msgspec.field(default=None, name="turnover24h")
    bid1_price: str | None = msgspec.field(default=None, name="bid1Price")
    bid1_size: str | None = msgspec.field(default=None, name="bid1Size")
    ask1_price: str | None = msgspec.field(default=None, name="ask1Price")
    ask1_size: str | None = msgspec.field(default=None, name="ask1Size")
    mark_price: str | None = msgspec.field(default=None, name="markPrice")
    index_price: str | None = msgspec.field(default=None, name="indexPrice")
    open_interest: str | None = msgspec.field(default=None, name="openInterest")
    funding_rate: str | None = msgspec.field(default=None, name="fundingRate")
    next_funding_time: str | None = msgspec.field(default=None, name="nextFundingTime")


TICKER_FIELDS = ("last_price", "high_price_24h", "low_price_24h", "volume_24h", "turnover_24h")
"""Fields whose change makes a new Ticker record (bid/ask move too often to count)."""
FUNDING_FIELDS = ("funding_rate", "next_funding_time", "mark_price", "index_price")
"""Fields whose change makes a new Funding record."""


class LiquidationData(msgspec.Struct, gc=False):
    """One entry of ``allLiquidation.{symbol}``. ``S`` is the side of the *position* that
    was liquidated (``Buy``: a long), so the forced order went the other way."""

    time: int = msgspec.field(name="T")
    symbol: str = msgspec.field(name="s")
    position_side: Literal["Buy", "Sell"] = msgspec.field(name="S")
    size: Decimal = msgspec.field(name="v")
    price: Decimal = msgspec.field(name="p")


# Decoders are built once: building one compiles the type's decoding plan.
envelope_decoder = msgspec.json.Decoder(Envelope)
orderbook_decoder = msgspec.json.Decoder(OrderbookData)
trades_decoder = msgspec.json.Decoder(list[TradeData])
ticker_decoder = msgspec.json.Decoder(TickerData)
liquidation_decoder = msgspec.json.Decoder(list[LiquidationData])
