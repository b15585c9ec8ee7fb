"""Binance USD-M futures wire formats as msgspec Structs.

The envelope, ``aggTrade``, kline and depth snapshot are the spot formats (imported from
:mod:`streamkit_binance.schemas`; futures adds fields the spot Structs simply ignore). The
futures-only forms live here: ``bookTicker`` with event/transaction times, ``depthUpdate``
with ``pu`` (the previous event's ``u``), ``markPriceUpdate``, ``forceOrder``, the 24 h
ticker (no best bid/ask, unlike spot) and the REST open-interest answer.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from streamkit_binance.schemas import (
    AggTrade,
    AggTradeEvent,
    DepthSnapshot,
    DepthUpdate,
    KlineEventTagged,
    Level,
    agg_trade_decoder,
    depth_snapshot_decoder,
    envelope_decoder,
    kline_decoder,
)

__all__ = [
    "AggTrade",
    "AggTradeEvent",
    "DepthSnapshot",
    "ForceOrder",
    "ForceOrderEvent",
    "FuturesBookTicker",
    "FuturesBookTickerEvent",
    "FuturesDepthUpdate",
    "FuturesDepthUpdateEvent",
    "FuturesTicker",
    "FuturesTickerEvent",
    "KlineEventTagged",
    "Level",
    "MarkPrice",
    "MarkPriceEvent",
    "OpenInterestAnswer",
    "agg_trade_decoder",
    "book_ticker_decoder",
    "depth_snapshot_decoder",
    "depth_update_decoder",
    "envelope_decoder",
    "force_order_decoder",
    "kline_decoder",
    "mark_price_decoder",
    "open_interest_decoder",
    "ticker_decoder",
]


class FuturesBookTicker(msgspec.Struct, gc=False):
    """``<symbol>@bookTicker`` (futures form: has ``e``, ``E`` and ``T``)."""

    update_id: int = msgspec.field(name="u")
    symbol: str = msgspec.field(name="s")
    bid_price: Decimal = msgspec.field(name="b")
    bid_qty: Decimal = msgspec.field(name="B")
    ask_price: Decimal = msgspec.field(name="a")
    ask_qty: Decimal = msgspec.field(name="A")
    transaction_time: int = msgspec.field(name="T")
    event_time: int = msgspec.field(name="E")


class FuturesDepthUpdate(DepthUpdate, gc=False):
    """``<symbol>@depth@100ms``: the spot diff plus the transaction time and ``pu``, the
    ``u`` of the previous event on this stream (the futures sequence chain)."""

    transaction_time: int = msgspec.field(name="T")
    prev_last_update_id: int = msgspec.field(name="pu")


class MarkPrice(msgspec.Struct, gc=False):
    """``<symbol>@markPrice@1s``. ``r`` (funding rate) is ``""`` and ``T`` is 0 for dated
    contracts, which pay no funding."""

    event_time: int = msgspec.field(name="E")
    symbol: str = msgspec.field(name="s")
    mark_price: Decimal = msgspec.field(name="p")
    index_price: Decimal = msgspec.field(name="i")
    funding_rate: str = msgspec.field(name="r")
    next_funding_time: int = msgspec.field(name="T")


class ForceOrderBody(msgspec.Struct, gc=False):
    symbol: str = msgspec.field(name="s")
    side: str = msgspec.field(name="S")
    price: Decimal = msgspec.field(name="p")
    average_price: Decimal = msgspec.field(name="ap")
    orig_qty: Decimal = msgspec.field(name="q")
    filled_qty: Decimal = msgspec.field(name="z")
    trade_time: int = msgspec.field(name="T")


class ForceOrder(msgspec.Struct, gc=False):
    """``<symbol>@forceOrder``: the latest liquidation order of the symbol (Binance pushes at
    most one per symbol per second)."""

    event_time: int = msgspec.field(name="E")
    order: ForceOrderBody = msgspec.field(name="o")


class FuturesTicker(msgspec.Struct, gc=False):
    """``<symbol>@ticker`` (futures: no best bid/ask fields)."""

    event_time: int = msgspec.field(name="E")
    symbol: str = msgspec.field(name="s")
    last: Decimal = msgspec.field(name="c")
    open: Decimal = msgspec.field(name="o")
    high: Decimal = msgspec.field(name="h")
    low: Decimal = msgspec.field(name="l")
    volume: Decimal = msgspec.field(name="v")
    quote_volume: Decimal = msgspec.field(name="q")


class OpenInterestAnswer(msgspec.Struct, gc=False):
    """``GET /fapi/v1/openInterest?symbol=X`` answer."""

    open_interest: Decimal = msgspec.field(name="openInterest")
    symbol: str
    time: int


# The same payloads tagged on their "e" field, for the one-pass decoder
# (CombinedStreamProtocol.tagged_payloads): every USD-M market stream payload carries one,
# bookTicker included (spot's does not).
class FuturesBookTickerEvent(FuturesBookTicker, tag_field="e", tag="bookTicker", gc=False):
    pass


class FuturesDepthUpdateEvent(FuturesDepthUpdate, tag_field="e", tag="depthUpdate", gc=False):
    pass


class MarkPriceEvent(MarkPrice, tag_field="e", tag="markPriceUpdate", gc=False):
    pass


class ForceOrderEvent(ForceOrder, tag_field="e", tag="forceOrder", gc=False):
    pass


class FuturesTickerEvent(FuturesTicker, tag_field="e", tag="24hrTicker", gc=False):
    pass


book_ticker_decoder = msgspec.json.Decoder(FuturesBookTicker)
depth_update_decoder = msgspec.json.Decoder(FuturesDepthUpdate)
mark_price_decoder = msgspec.json.Decoder(MarkPrice)
force_order_decoder = msgspec.json.Decoder(ForceOrder)
ticker_decoder = msgspec.json.Decoder(FuturesTicker)
open_interest_decoder = msgspec.json.Decoder(OpenInterestAnswer)
