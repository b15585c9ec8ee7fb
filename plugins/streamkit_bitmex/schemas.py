"""BitMEX realtime API wire formats as msgspec Structs mirroring the venue's JSON.

Every frame is one JSON object (except the text heartbeats ``ping``/``pong``):

- table data: ``{"table": t, "action": "partial"|"insert"|"update"|"delete", "data": [...]}``
  (a ``partial`` also carries ``keys``, ``types``, ``filter`` ...; only ``filter`` is read);
- the welcome: ``{"info": "Welcome to the BitMEX Realtime API.", "version": ..., ...}``;
- acks, one per subscribed topic: ``{"success": true, "subscribe": "trade:XBTUSD",
  "request": {...the whole request...}}`` (``unsubscribe`` for unsubscriptions);
- errors: ``{"status": 400, "error": "Unknown table: ...", "meta": {}, "request": {...}}``.

Prices arrive as JSON numbers; msgspec decodes a number into Decimal from its text, so
``0.00001814`` stays exact. Sizes are contracts. Times are ISO 8601 strings (UTC).
Rows of ``update`` messages carry only the fields that changed, so optional fields default
to ``UNSET`` (absent) which is distinct from ``None`` (sent as null). Attributes are the
snake_case of BitMEX's camelCase keys (``rename="camel"``; the ``...ID`` and ``...24h`` keys
are named explicitly: msgspec would write ``...Id`` and ``...24H``).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Literal

import msgspec
from msgspec import UNSET, UnsetType

WireSide = Literal["Buy", "Sell"]
Action = Literal["partial", "insert", "update", "delete"]


class Request(msgspec.Struct, gc=False, rename="camel"):
    """The client request BitMEX echoes in acks and errors."""

    op: str = ""
    args: list[str] = []


class Filter(msgspec.Struct, gc=False, rename="camel"):
    symbol: str | None = None


class Envelope(msgspec.Struct, gc=False, rename="camel"):
    """Any JSON frame; which fields are set tells what it is."""

    table: str | None = None
    action: Action | None = None
    data: msgspec.Raw = msgspec.Raw()  # empty when absent (Raw cannot be Optional)
    filter: Filter | None = None
    info: str | None = None
    success: bool | None = None
    subscribe: str | None = None
    unsubscribe: str | None = None
    request: Request | None = None
    status: int | None = None
    error: str | None = None


class TradeRow(msgspec.Struct, gc=False, rename="camel"):
    """``trade``. ``side`` is the taker's; settlement prints (``trdType: "Settlement"``)
    have no side."""

    timestamp: dt.datetime
    symbol: str
    price: Decimal
    size: Decimal
    match_id: str = msgspec.field(name="trdMatchID")
    side: WireSide | None = None
    trd_type: str = "Regular"


class QuoteRow(msgspec.Struct, gc=False, rename="camel"):
    """``quote``: top of book. A side is null while that side of the book is empty."""

    timestamp: dt.datetime
    symbol: str
    bid_price: Decimal | None = None
    bid_size: Decimal | None = None
    ask_price: Decimal | None = None
    ask_size: Decimal | None = None


class L2Row(msgspec.Struct, gc=False, rename="camel"):
    """``orderBookL2`` level, keyed by (``symbol``, ``id``, ``side``). ``insert`` carries
    price and size, ``update`` the new size (newer API versions add the price), ``delete``
    only the key."""

    symbol: str
    id: int
    side: WireSide
    size: Decimal | None = None
    price: Decimal | None = None
    timestamp: dt.datetime | None = None


class FundingRow(msgspec.Struct, gc=False, rename="camel"):
    """``funding``: one row per applied funding (every 8 h per perpetual)."""

    timestamp: dt.datetime
    symbol: str
    funding_rate: Decimal
    funding_rate_daily: Decimal | None = None


class LiquidationRow(msgspec.Struct, gc=False, rename="camel"):
    """``liquidation``: a liquidation order entering the book (``insert``); ``update`` and
    ``delete`` rows follow as it fills and leaves, carrying only changed fields."""

    order_id: str = msgspec.field(name="orderID")
    symbol: str | UnsetType = UNSET
    side: WireSide | UnsetType = UNSET
    price: Decimal | UnsetType | None = UNSET
    leaves_qty: Decimal | UnsetType | None = UNSET


class InstrumentRow(msgspec.Struct, gc=False, rename="camel"):
    """``instrument``: the partial carries every field, updates only those that changed."""

    symbol: str
    timestamp: dt.datetime | UnsetType = UNSET
    last_price: Decimal | UnsetType | None = UNSET
    bid_price: Decimal | UnsetType | None = UNSET
    ask_price: Decimal | UnsetType | None = UNSET
    prev_price24h: Decimal | UnsetType | None = msgspec.field(default=UNSET, name="prevPrice24h")
    high_price: Decimal | UnsetType | None = UNSET
    low_price: Decimal | UnsetType | None = UNSET
    volume24h: Decimal | UnsetType | None = UNSET
    foreign_notional24h: Decimal | UnsetType | None = msgspec.field(
        default=UNSET, name="foreignNotional24h"
    )
    open_interest: Decimal | UnsetType | None = UNSET
    funding_rate: Decimal | UnsetType | None = UNSET
    indicative_funding_rate: Decimal | UnsetType | None = UNSET
    funding_timestamp: dt.datetime | UnsetType | None = UNSET
    mark_price: Decimal | UnsetType | None = UNSET
    indicative_settle_price: Decimal | UnsetType | None = UNSET


# Decoders are built once: building one compiles the type's decoding plan.
envelope_decoder = msgspec.json.Decoder(Envelope)
trade_rows = msgspec.json.Decoder(list[TradeRow])
quote_rows = msgspec.json.Decoder(list[QuoteRow])
l2_rows = msgspec.json.Decoder(list[L2Row])
funding_rows = msgspec.json.Decoder(list[FundingRow])
liquidation_rows = msgspec.json.Decoder(list[LiquidationRow])
instrument_rows = msgspec.json.Decoder(list[InstrumentRow])
request_encoder = msgspec.json.Encoder()
