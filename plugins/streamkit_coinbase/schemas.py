"""Coinbase Exchange feed wire formats as msgspec Structs mirroring the exchange's JSON.

Every frame is a JSON object tagged by ``type``; :data:`message_decoder` decodes a frame in one
pass into the Struct of its type. Prices and sizes are strings and decode into Decimal, except
level-2 prices, which stay strings for the plugin to intern (see :data:`Level`).
``sequence`` is the product's sequence number in the full order stream: the channels used here
see only some of those messages, so consecutive frames normally skip numbers (see
:mod:`streamkit_coinbase.feed` for how gaps are detected instead).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Literal, TypeAlias

import msgspec

AwareTime = Annotated[datetime, msgspec.Meta(tz=True)]
"""An RFC 3339 time with its zone (Coinbase writes ``Z``); a naive one is a malformed frame."""

Side = Literal["buy", "sell"]
Level = tuple[str, Decimal]
"""A ``snapshot`` level ``[price, size]``. Level-2 prices (here and in ``l2update`` changes) stay
Coinbase's strings: the plugin maps them through the product's
:class:`~streamkit.book.PriceInterner` to shared Decimals (the book hashes every level's price
on every update, and hashing a fresh Decimal is slow)."""


class _Message(msgspec.Struct, gc=False, tag_field="type"):
    pass


class Subscriptions(_Message, tag="subscriptions"):
    """The answer to every subscribe/unsubscribe: ALL current subscriptions of the
    connection, not just the ones the request added."""

    channels: list[ChannelSubscription]


class ChannelSubscription(msgspec.Struct, gc=False):
    name: str
    product_ids: list[str] = []


class Error(_Message, tag="error"):
    """``{"type":"error","message":"Failed to subscribe","reason":"..."}``."""

    message: str
    reason: str = ""


class HeartbeatMessage(_Message, tag="heartbeat"):
    """``heartbeat`` channel: once a second per product."""

    product_id: str
    sequence: int
    last_trade_id: int
    time: AwareTime


class Match(_Message, tag="match"):
    """``matches`` channel: one execution. ``side`` is the MAKER order's side."""

    product_id: str
    trade_id: int
    sequence: int
    side: Side
    size: Decimal
    price: Decimal
    time: AwareTime
    maker_order_id: str = ""
    taker_order_id: str = ""


class LastMatch(Match, tag="last_match"):
    """Sent once per product right after subscribing to ``matches``: the latest trade before
    the subscription (a replay, not a new trade)."""


class TickerMessage(_Message, tag="ticker"):
    """``ticker`` channel: sent on trades (batched in bursts). ``best_bid_size`` /
    ``best_ask_size`` were added in 2022; older frames lack them."""

    product_id: str
    sequence: int
    price: Decimal
    best_bid: Decimal
    best_ask: Decimal
    open_24h: Decimal | None = None
    volume_24h: Decimal | None = None
    low_24h: Decimal | None = None
    high_24h: Decimal | None = None
    volume_30d: Decimal | None = None
    best_bid_size: Decimal | None = None
    best_ask_size: Decimal | None = None
    side: Side | None = None
    time: AwareTime | None = None
    trade_id: int | None = None
    last_size: Decimal | None = None


class Snapshot(_Message, tag="snapshot"):
    """``level2``/``level2_batch``: the full book, once after subscribing."""

    product_id: str
    bids: list[Level]
    asks: list[Level]


class L2Update(_Message, tag="l2update"):
    """``level2``/``level2_batch``: ``[side, price, new_size]`` changes, absolute sizes; size 0
    removes the level. No sequence number and no checksum."""

    product_id: str
    changes: list[tuple[Side, str, Decimal]]
    time: AwareTime | None = None


class TypeOnly(msgspec.Struct, gc=False):
    """Just the ``type`` of a frame: used to tell an unknown message type (ignored, as Coinbase
    asks of clients) from a malformed known one."""

    type: str


Message: TypeAlias = (
    Subscriptions
    | Error
    | HeartbeatMessage
    | Match
    | LastMatch
    | TickerMessage
    | Snapshot
    | L2Update
)

KNOWN_TYPES = frozenset(
    {"subscriptions", "error", "heartbeat", "match", "last_match", "ticker", "snapshot", "l2update"}
)

# Decoders are built once: building one compiles the type's decoding plan.
message_decoder: msgspec.json.Decoder[Message] = msgspec.json.Decoder(Message)
type_decoder = msgspec.json.Decoder(TypeOnly)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_ns(moment: datetime) -> int:
    """RFC 3339 time (microsecond resolution on Coinbase) -> int ns since the epoch, exactly."""
    return (moment - _EPOCH) // _MICROSECOND * 1000
