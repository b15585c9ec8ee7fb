"""OKX v5 public wire formats as msgspec Structs mirroring the exchange's JSON.

Every frame but the text ``pong`` is one JSON object:

- events: ``{"event": "subscribe"|"unsubscribe", "arg": {...}}`` (one per subscribed arg),
  ``{"event": "error", "code": "60018", "msg": "..."}``, ``{"event": "notice", ...}``;
- data: ``{"arg": {"channel": c, "instId": i}, ["action": "snapshot"|"update",] "data": [...]}``.

``data`` is kept raw by the envelope and decoded by the channel's own Decoder, so each frame
is parsed once. OKX sends numbers (times, ids) as strings: the data Decoders are non-strict,
which lets msgspec turn ``"1652459225464"`` into an int. Prices and sizes decode straight into
Decimal, except in the low-rate channels (tickers, funding) where OKX may send ``""`` for an
absent value: those stay strings and are converted field by field. ``books`` level prices also
stay strings: the plugin interns them (:class:`~streamkit.book.PriceInterner`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec


class Arg(msgspec.Struct, gc=False):
    """A subscription as OKX names it: ``instId`` for most channels, ``instType`` for
    ``liquidation-orders``."""

    channel: str
    inst_id: str | None = msgspec.field(default=None, name="instId")
    inst_type: str | None = msgspec.field(default=None, name="instType")


class Envelope(msgspec.Struct, gc=False):
    """Every JSON frame; which fields are set tells events from data."""

    event: str | None = None
    arg: Arg | None = None
    action: str | None = None
    data: msgspec.Raw = msgspec.Raw()  # empty when absent (Raw cannot be Optional)
    code: str | None = None
    msg: str | None = None
    id: str | None = None
    conn_id: str | None = msgspec.field(default=None, name="connId")


BookLevel = tuple[str, Decimal, str, str]
"""A ``books`` level: ``[price, size, deprecated liquidated-orders "0", number of orders]``.
The price stays OKX's string: the plugin maps it through the instrument's
:class:`~streamkit.book.PriceInterner` to a shared Decimal (the book hashes every level's price
on every update, and hashing a fresh Decimal is slow)."""

BboLevel = tuple[Decimal, Decimal, str, str]
"""A ``bbo-tbt`` level, same fields as :data:`BookLevel`; one per side, published as is."""


class BookData(msgspec.Struct, gc=False):
    """``books`` (400 levels): ``action`` ``snapshot`` then ``update`` s with absolute sizes;
    size ``"0"`` deletes. ``checksum`` covers the top 25 levels after applying; ``seqId`` /
    ``prevSeqId`` chain updates (absent in 2022-era payloads, ``prevSeqId == -1`` on a
    snapshot)."""

    asks: list[BookLevel]
    bids: list[BookLevel]
    ts: int
    checksum: int | None = None
    seq_id: int | None = msgspec.field(default=None, name="seqId")
    prev_seq_id: int | None = msgspec.field(default=None, name="prevSeqId")


class BboData(msgspec.Struct, gc=False):
    """``bbo-tbt``: the best level of each side, tick by tick."""

    asks: list[BboLevel]
    bids: list[BboLevel]
    ts: int
    seq_id: int | None = msgspec.field(default=None, name="seqId")


class TradeData(msgspec.Struct, gc=False):
    """``trades``: ``side`` is the taker's side."""

    inst_id: str = msgspec.field(name="instId")
    trade_id: str = msgspec.field(name="tradeId")
    px: Decimal
    sz: Decimal
    side: Literal["buy", "sell"]
    ts: int


class TickerData(msgspec.Struct, gc=False):
    """``tickers``. For SPOT ``vol24h`` is in base currency and ``volCcy24h`` in quote; for
    derivatives ``vol24h`` counts contracts and ``volCcy24h`` is in base currency."""

    inst_id: str = msgspec.field(name="instId")
    ts: int
    inst_type: str = msgspec.field(default="", name="instType")
    last: str = ""
    last_sz: str = msgspec.field(default="", name="lastSz")
    ask_px: str = msgspec.field(default="", name="askPx")
    ask_sz: str = msgspec.field(default="", name="askSz")
    bid_px: str = msgspec.field(default="", name="bidPx")
    bid_sz: str = msgspec.field(default="", name="bidSz")
    open24h: str = ""
    high24h: str = ""
    low24h: str = ""
    vol_ccy24h: str = msgspec.field(default="", name="volCcy24h")
    vol24h: str = ""


class FundingData(msgspec.Struct, gc=False):
    """``funding-rate`` (swaps): ``fundingRate`` settles at ``fundingTime``;
    ``nextFundingRate`` (may be ``""``) is the forecast for ``nextFundingTime``."""

    inst_id: str = msgspec.field(name="instId")
    funding_rate: str = msgspec.field(name="fundingRate")
    funding_time: str = msgspec.field(default="", name="fundingTime")
    next_funding_rate: str = msgspec.field(default="", name="nextFundingRate")
    next_funding_time: str = msgspec.field(default="", name="nextFundingTime")
    ts: str = ""


class OpenInterestData(msgspec.Struct, gc=False):
    """``open-interest``: ``oi`` in contracts, ``oiCcy`` in base currency."""

    inst_id: str = msgspec.field(name="instId")
    oi: Decimal
    ts: int
    oi_ccy: str = msgspec.field(default="", name="oiCcy")


class LiquidationDetail(msgspec.Struct, gc=False):
    """One forced order: ``side`` is the liquidation order's side, ``bkPx`` its bankruptcy
    price, ``sz`` contracts."""

    side: Literal["buy", "sell"]
    bk_px: Decimal = msgspec.field(name="bkPx")
    sz: Decimal
    ts: int
    pos_side: str = msgspec.field(default="", name="posSide")


class LiquidationData(msgspec.Struct, gc=False):
    """``liquidation-orders`` (subscribed by ``instType``, one entry per instrument)."""

    inst_id: str = msgspec.field(name="instId")
    details: list[LiquidationDetail]
    inst_type: str = msgspec.field(default="", name="instType")


# Decoders are built once: building one compiles the type's decoding plan.
envelope_decoder = msgspec.json.Decoder(Envelope)
book_decoder = msgspec.json.Decoder(list[BookData], strict=False)
bbo_decoder = msgspec.json.Decoder(list[BboData], strict=False)
trades_decoder = msgspec.json.Decoder(list[TradeData], strict=False)
ticker_decoder = msgspec.json.Decoder(list[TickerData], strict=False)
funding_decoder = msgspec.json.Decoder(list[FundingData], strict=False)
open_interest_decoder = msgspec.json.Decoder(list[OpenInterestData], strict=False)
liquidation_decoder = msgspec.json.Decoder(list[LiquidationData], strict=False)
