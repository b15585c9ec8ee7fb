"""Normalized market-data records: the contract between feeds, channels, consumers and sinks.

Every record is a frozen msgspec Struct tagged by ``type``. Serialized (jsonl, NATS, Redis) each
record is one JSON object whose fields are the ones in DESIGN.md's record table:

- all records: ``type``, ``exchange``, ``symbol`` (normalized, or null for connection-wide
  status), ``ts`` (exchange event time, int ns since epoch, or null) and ``recv_ts`` (local
  receive time, int ns);
- prices and sizes are :class:`decimal.Decimal` holding the exchange's exact value; they
  serialize as JSON strings so that no consumer ever sees a rounded float.

``encode_json`` / ``decode_json`` are the one JSON encoding every sink uses.
"""

from __future__ import annotations

import enum
from decimal import Decimal
from typing import Literal, TypeAlias

import msgspec

Side: TypeAlias = Literal["buy", "sell"]
"""Taker side of a trade (or the side of the liquidated position's closing order)."""

PriceLevel: TypeAlias = tuple[Decimal, Decimal]
"""``(price, size)``; in a book delta a size of 0 deletes the level."""


class StatusEvent(enum.StrEnum):
    """What a ``status`` record reports. Consumers should treat every event other than
    ``connected``/``subscribed`` as "data for this scope may be missing or stale"."""

    CONNECTED = "connected"
    SUBSCRIBED = "subscribed"
    DISCONNECTED = "disconnected"
    RECONNECTING = "reconnecting"
    GAP = "gap"
    RESYNC = "resync"
    CHECKSUM_MISMATCH = "checksum_mismatch"
    STALE = "stale"
    DECODE_ERROR = "decode_error"
    ERROR = "error"


class Record(msgspec.Struct, frozen=True, gc=False, tag_field="type"):
    """Fields every normalized record carries."""

    exchange: str
    symbol: str | None
    ts: int | None
    recv_ts: int


class Trade(Record, frozen=True, gc=False, tag="trade"):
    """One execution. ``side`` is the taker's side; ``id`` is the venue's trade id."""

    price: Decimal
    size: Decimal
    side: Side
    id: str


class BBO(Record, frozen=True, gc=False, tag="bbo"):
    """Best bid and offer."""

    bid_price: Decimal
    bid_size: Decimal
    ask_price: Decimal
    ask_size: Decimal


class Book(Record, frozen=True, gc=False, tag="book"):
    """An L2 book message after verification.

    ``snapshot=True`` replaces the whole book; otherwise ``bids``/``asks`` are absolute sizes
    at the given prices and size 0 deletes the level. ``seq`` is the venue's update id (the
    last one this record covers) where it has one. A state that failed a sequence or checksum
    check is never published: a ``status`` record (gap/checksum_mismatch/resync) is, instead.
    """

    snapshot: bool
    bids: list[PriceLevel]
    asks: list[PriceLevel]
    seq: int | None = None


class Ticker(Record, frozen=True, gc=False, tag="ticker"):
    """Rolling 24 h statistics; any field a venue does not send is null."""

    last: Decimal | None = None
    bid: Decimal | None = None
    ask: Decimal | None = None
    open_24h: Decimal | None = None
    high_24h: Decimal | None = None
    low_24h: Decimal | None = None
    volume_24h: Decimal | None = None
    quote_volume_24h: Decimal | None = None


class Funding(Record, frozen=True, gc=False, tag="funding"):
    """Perpetual funding: current ``rate``, and where the venue gives them the mark and index
    prices, the predicted next rate and the time (ns) the next funding applies."""

    rate: Decimal
    mark_price: Decimal | None = None
    index_price: Decimal | None = None
    predicted_rate: Decimal | None = None
    next_funding_ts: int | None = None


class OpenInterest(Record, frozen=True, gc=False, tag="open_interest"):
    """Open interest in contracts (or base units where the venue reports those)."""

    open_interest: Decimal


class Liquidation(Record, frozen=True, gc=False, tag="liquidation"):
    """A forced order. ``side`` is the side of the liquidation order (a long being liquidated
    sells)."""

    side: Side
    price: Decimal
    size: Decimal
    id: str | None = None


class Candle(Record, frozen=True, gc=False, tag="candle"):
    """OHLCV bar. ``start``/``end`` are ns; ``closed`` is true once the bar is final."""

    interval: str
    start: int
    end: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    closed: bool
    trades: int | None = None


class Status(Record, frozen=True, gc=False, tag="status"):
    """A lifecycle or data-quality event. ``symbol`` is null when the event concerns a whole
    connection; ``connection`` names the connection (``<feed>/<n>``) that raised it."""

    event: StatusEvent
    detail: str = ""
    connection: str | None = None


class NBBO(Record, frozen=True, gc=False, tag="nbbo"):
    """Cross-venue best bid and offer of one normalized symbol (a derived stream, see
    :mod:`streamkit.derived.nbbo`). ``exchange`` is ``"nbbo"``.

    Each side names the venue holding it (``bid_exchange``/``ask_exchange``) and that venue's
    size at the price; a side is null when no live venue quotes it. ``venues`` lists the
    venues whose quotes were live when this record was computed. The two sides may cross or
    lock: venues are independent markets.
    """

    bid_price: Decimal | None
    bid_size: Decimal | None
    bid_exchange: str | None
    ask_price: Decimal | None
    ask_size: Decimal | None
    ask_exchange: str | None
    venues: list[str] = []


class BookSnapshot(Record, frozen=True, gc=False, tag="book_snapshot"):
    """Top ``depth`` levels of a verified book, taken at a fixed interval (a derived stream,
    see :mod:`streamkit.derived.book_snapshots`). Bids high to low, asks low to high; ``seq``
    is the venue's update id of the last delta applied, where it has one; ``ts`` is the
    exchange time of that update."""

    depth: int
    bids: list[PriceLevel]
    asks: list[PriceLevel]
    seq: int | None = None


AnyRecord: TypeAlias = (
    Trade
    | BBO
    | Book
    | Ticker
    | Funding
    | OpenInterest
    | Liquidation
    | Candle
    | Status
    | NBBO
    | BookSnapshot
)

RECORD_TYPES: dict[str, type[Record]] = {
    "trade": Trade,
    "bbo": BBO,
    "book": Book,
    "ticker": Ticker,
    "funding": Funding,
    "open_interest": OpenInterest,
    "liquidation": Liquidation,
    "candle": Candle,
    "status": Status,
    "nbbo": NBBO,
    "book_snapshot": BookSnapshot,
}
"""Record type name (the ``type`` tag) -> Struct class."""

SCHEMA_VERSION = 1
"""Bumped whenever a field is removed or changes meaning (adding optional fields does not)."""


def type_name(cls: type[Record]) -> str:
    """The ``type`` tag of a record class (``Trade`` -> ``"trade"``)."""
    tag = cls.__struct_config__.tag
    assert isinstance(tag, str), f"{cls.__name__} is not a tagged record type"
    return tag


_encoder = msgspec.json.Encoder(decimal_format="string")
_decoder: msgspec.json.Decoder[AnyRecord] = msgspec.json.Decoder(AnyRecord)


def encode_json(record: Record) -> bytes:
    """Serialize one record to the JSON object every sink writes (no trailing newline)."""
    return _encoder.encode(record)


def encode_json_lines(records: list[Record], buffer: bytearray) -> None:
    """Append records to ``buffer`` as JSON Lines (each followed by ``\\n``)."""
    for record in records:
        _encoder.encode_into(record, buffer, -1)
        buffer.extend(b"\n")


def decode_json(data: bytes | str) -> AnyRecord:
    """Parse one serialized record back into its Struct; raises ``msgspec.ValidationError``."""
    return _decoder.decode(data)
