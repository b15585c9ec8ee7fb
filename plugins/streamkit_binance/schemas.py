"""Binance spot wire formats as msgspec Structs mirroring the exchange's JSON exactly.

Field names are Binance's one-letter keys (renamed to readable attribute names). Prices and
quantities arrive as strings and decode straight into Decimal.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec

Level = tuple[Decimal, Decimal]
RawLevel = tuple[str, Decimal]
"""A diff's level as decoded: the price as Binance's string (the book engine's
:class:`~streamkit.book.PriceInterner` turns it into a shared Decimal), the size a Decimal."""


class ErrorBody(msgspec.Struct, gc=False):
    code: int
    msg: str = ""


class Envelope(msgspec.Struct, gc=False):
    """Every frame on a combined-stream connection: market data is
    ``{"stream": name, "data": payload}``; replies to control messages are
    ``{"result": ..., "id": n}`` on success and ``{"error": {"code": c, "msg": text}, "id": n}``
    on failure (the live venue's form; the docs' error table shows the bare
    ``{"code": c, "msg": text}`` body, which is accepted too)."""

    stream: str | None = None
    data: msgspec.Raw = msgspec.Raw()  # empty when absent (Raw cannot be Optional)
    result: Any = msgspec.UNSET
    id: int | str | None = None
    error: ErrorBody | None = None
    code: int | None = None
    msg: str | None = None


class AggTrade(msgspec.Struct, gc=False):
    """``<symbol>@aggTrade``."""

    event_time: int = msgspec.field(name="E")
    symbol: str = msgspec.field(name="s")
    agg_id: int = msgspec.field(name="a")
    price: Decimal = msgspec.field(name="p")
    qty: Decimal = msgspec.field(name="q")
    trade_time: int = msgspec.field(name="T")
    buyer_is_maker: bool = msgspec.field(name="m")


class RawTrade(msgspec.Struct, gc=False):
    """``<symbol>@trade``."""

    event_time: int = msgspec.field(name="E")
    symbol: str = msgspec.field(name="s")
    trade_id: int = msgspec.field(name="t")
    price: Decimal = msgspec.field(name="p")
    qty: Decimal = msgspec.field(name="q")
    trade_time: int = msgspec.field(name="T")
    buyer_is_maker: bool = msgspec.field(name="m")


class BookTicker(msgspec.Struct, gc=False):
    """``<symbol>@bookTicker`` (spot carries no event time)."""

    update_id: int = msgspec.field(name="u")
    symbol: str = msgspec.field(name="s")
    bid_price: Decimal = msgspec.field(name="b")
    bid_qty: Decimal = msgspec.field(name="B")
    ask_price: Decimal = msgspec.field(name="a")
    ask_qty: Decimal = msgspec.field(name="A")


class DepthUpdate(msgspec.Struct, gc=False):
    """``<symbol>@depth[@100ms]``: absolute quantities for update ids ``first..last``."""

    event_time: int = msgspec.field(name="E")
    symbol: str = msgspec.field(name="s")
    first_update_id: int = msgspec.field(name="U")
    last_update_id: int = msgspec.field(name="u")
    bids: list[RawLevel] = msgspec.field(name="b")
    asks: list[RawLevel] = msgspec.field(name="a")


class DepthSnapshot(msgspec.Struct, gc=False):
    """``GET /api/v3/depth`` answer."""

    last_update_id: int = msgspec.field(name="lastUpdateId")
    bids: list[Level]
    asks: list[Level]


class Kline(msgspec.Struct, gc=False):
    start: int = msgspec.field(name="t")
    end: int = msgspec.field(name="T")
    interval: str = msgspec.field(name="i")
    open: Decimal = msgspec.field(name="o")
    close: Decimal = msgspec.field(name="c")
    high: Decimal = msgspec.field(name="h")
    low: Decimal = msgspec.field(name="l")
    volume: Decimal = msgspec.field(name="v")
    trades: int = msgspec.field(name="n")
    closed: bool = msgspec.field(name="x")


class KlineEvent(msgspec.Struct, gc=False):
    """``<symbol>@kline_<interval>``."""

    event_time: int = msgspec.field(name="E")
    symbol: str = msgspec.field(name="s")
    kline: Kline = msgspec.field(name="k")


class Ticker24h(msgspec.Struct, gc=False):
    """``<symbol>@ticker``."""

    event_time: int = msgspec.field(name="E")
    symbol: str = msgspec.field(name="s")
    last: Decimal = msgspec.field(name="c")
    bid: Decimal = msgspec.field(name="b")
    ask: Decimal = msgspec.field(name="a")
    open: Decimal = msgspec.field(name="o")
    high: Decimal = msgspec.field(name="h")
    low: Decimal = msgspec.field(name="l")
    volume: Decimal = msgspec.field(name="v")
    quote_volume: Decimal = msgspec.field(name="q")


class ServerShutdown(msgspec.Struct, gc=False):
    event: str = msgspec.field(name="e")
    event_time: int = msgspec.field(name="E")


# The same payloads tagged on their "e" field, for the one-pass decoder of a connection whose
# channels all carry one (CombinedStreamProtocol.tagged_payloads). bookTicker has no "e".
class AggTradeEvent(AggTrade, tag_field="e", tag="aggTrade", gc=False):
    pass


class DepthUpdateEvent(DepthUpdate, tag_field="e", tag="depthUpdate", gc=False):
    pass


class Ticker24hEvent(Ticker24h, tag_field="e", tag="24hrTicker", gc=False):
    pass


class KlineEventTagged(KlineEvent, tag_field="e", tag="kline", gc=False):
    pass


# Decoders are built once: building one compiles the type's decoding plan.
envelope_decoder = msgspec.json.Decoder(Envelope)
agg_trade_decoder = msgspec.json.Decoder(AggTrade)
raw_trade_decoder = msgspec.json.Decoder(RawTrade)
book_ticker_decoder = msgspec.json.Decoder(BookTicker)
depth_update_decoder = msgspec.json.Decoder(DepthUpdate)
depth_snapshot_decoder = msgspec.json.Decoder(DepthSnapshot)
kline_decoder = msgspec.json.Decoder(KlineEvent)
ticker_decoder = msgspec.json.Decoder(Ticker24h)
