"""Deribit API v2 (JSON-RPC 2.0 over WebSocket) wire formats as msgspec Structs.

Frames are JSON-RPC objects:

- replies to the client's requests: ``{"jsonrpc": "2.0", "id": n, "result": ...}`` or
  ``{"jsonrpc": "2.0", "id": n, "error": {"code": c, "message": text}}`` (plus timing fields
  ``usIn``/``usOut``/``usDiff`` and ``testnet``, not read);
- subscription data: ``{"jsonrpc": "2.0", "method": "subscription",
  "params": {"channel": name, "data": ...}}``;
- keepalive: ``{"jsonrpc": "2.0", "method": "heartbeat", "params": {"type": t}}`` with
  ``t`` ``heartbeat`` or ``test_request`` (the latter must be answered with ``public/test``).

Prices and amounts are JSON numbers; msgspec decodes each into Decimal from its text. Times
are ms since the epoch.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec

Direction = Literal["buy", "sell"]
BookAction = Literal["new", "change", "delete"]
BookEntry = tuple[BookAction, Decimal, Decimal]
"""``[action, price, amount]`` of a ``book.<instrument>.<interval>`` message."""


class RpcError(msgspec.Struct, gc=False):
    code: int
    message: str = ""


class Params(msgspec.Struct, gc=False):
    """``params`` of a notification: ``channel`` + ``data`` for subscriptions, ``type`` for
    heartbeats."""

    channel: str | None = None
    data: msgspec.Raw = msgspec.Raw()  # empty when absent (Raw cannot be Optional)
    type: str | None = None


class Envelope(msgspec.Struct, gc=False):
    """Any frame: a reply (``id`` + ``result``/``error``) or a notification (``method``)."""

    jsonrpc: str = "2.0"
    id: int | str | None = None
    method: str | None = None
    params: Params | None = None
    result: msgspec.Raw = msgspec.Raw()
    error: RpcError | None = None


class TradeData(msgspec.Struct, gc=False):
    """One row of ``trades.<instrument>.<interval>``; ``direction`` is the taker's side."""

    trade_id: str
    trade_seq: int
    timestamp: int
    instrument_name: str
    price: Decimal
    amount: Decimal
    direction: Direction


class BookData(msgspec.Struct, gc=False):
    """``book.<instrument>.<interval>``: ``type`` ``snapshot`` first, then ``change`` with
    ``prev_change_id`` equal to the previous message's ``change_id``."""

    type: Literal["snapshot", "change"]
    timestamp: int
    instrument_name: str
    change_id: int
    bids: list[BookEntry]
    asks: list[BookEntry]
    prev_change_id: int | None = None


class QuoteData(msgspec.Struct, gc=False):
    """``quote.<instrument>``: best bid and ask (null or 0 while a side is empty)."""

    timestamp: int
    instrument_name: str
    best_bid_price: Decimal | None = None
    best_bid_amount: Decimal | None = None
    best_ask_price: Decimal | None = None
    best_ask_amount: Decimal | None = None


class TickerStats(msgspec.Struct, frozen=True, gc=False):
    """24 h statistics; every field is null for an instrument that did not trade."""

    volume: Decimal | None = None
    volume_usd: Decimal | None = None
    high: Decimal | None = None
    low: Decimal | None = None
    price_change: Decimal | None = None


class TickerData(msgspec.Struct, gc=False):
    """``ticker.<instrument>.<interval>``. ``current_funding``/``funding_8h`` are sent for
    perpetuals only; options add greeks and IVs (not read)."""

    timestamp: int
    instrument_name: str
    stats: TickerStats = TickerStats()
    last_price: Decimal | None = None
    best_bid_price: Decimal | None = None
    best_bid_amount: Decimal | None = None
    best_ask_price: Decimal | None = None
    best_ask_amount: Decimal | None = None
    mark_price: Decimal | None = None
    index_price: Decimal | None = None
    open_interest: Decimal | None = None
    current_funding: Decimal | None = None
    funding_8h: Decimal | None = None


# Decoders are built once: building one compiles the type's decoding plan.
envelope_decoder = msgspec.json.Decoder(Envelope)
trades_decoder = msgspec.json.Decoder(list[TradeData])
book_decoder = msgspec.json.Decoder(BookData)
quote_decoder = msgspec.json.Decoder(QuoteData)
ticker_decoder = msgspec.json.Decoder(TickerData)
channels_decoder = msgspec.json.Decoder(list[str])
request_encoder = msgspec.json.Encoder()
