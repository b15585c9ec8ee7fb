"""Validation of the records a plugin produces, one by one, with each symbol's book state."""

from __future__ import annotations

from decimal import Decimal

import msgspec

from streamkit.feed import (
    Feed,
)
from streamkit.model import (
    BBO,
    RECORD_TYPES,
    Book,
    Candle,
    Funding,
    Liquidation,
    OpenInterest,
    Record,
    Status,
    StatusEvent,
    Ticker,
    Trade,
    decode_json,
    encode_json,
)
from streamkit.testing.report import Violation

MIN_TS = 1_230_768_000 * 10**9  # 2009-01-01: older "exchange times" are not in ns
MAX_TS = 4_102_444_800 * 10**9  # 2100-01-01: later ones are in the wrong unit

BOOK_BREAKING_EVENTS = frozenset({StatusEvent.GAP, StatusEvent.CHECKSUM_MISMATCH})


class RecordChecker:
    """Validates records one by one, keeping each symbol's book state."""

    def __init__(self, feed: Feed, v: list[Violation]) -> None:
        self.feed_id = feed.id
        self.symbols = set(feed.config.symbols)
        self.v = v
        self.count = 0
        self.book_seq: dict[str, int | None] = {}  # symbol -> last published seq
        self.broken: set[str] = set()  # symbols with a gap/mismatch and no snapshot since

    def check(self, record: object, recv_ts: int, origin: str) -> None:
        self.count += 1
        if not isinstance(record, Record) or type(record) not in RECORD_TYPES.values():
            self.fail(origin, record, f"is not a normalized record type: {type(record).__name__}")
            return
        where = f"{origin}: {type(record).__name__}({record.symbol})"
        if record.exchange != self.feed_id:
            self.v.append(Violation("record", f"{where}: exchange {record.exchange!r}"))
        if record.symbol is None:
            if not isinstance(record, Status):
                self.v.append(
                    Violation("record", f"{where}: only status records may lack a symbol")
                )
        elif record.symbol not in self.symbols:
            self.v.append(Violation("record", f"{where}: symbol is not a configured symbol"))
        if type(record.recv_ts) is not int or record.recv_ts != recv_ts:
            self.v.append(
                Violation("record", f"{where}: recv_ts {record.recv_ts!r}, expected {recv_ts}")
            )
        self._check_time(where, "ts", record.ts, optional=True)
        self._check_fields(where, record)
        if isinstance(record, Book):
            self._check_book(where, record)
        elif (
            isinstance(record, Status)
            and record.event in BOOK_BREAKING_EVENTS
            and record.symbol is not None
        ):
            self.broken.add(record.symbol)
        try:
            if decode_json(encode_json(record)) != record:
                self.v.append(Violation("record", f"{where}: changes through the JSON encoding"))
        except (msgspec.DecodeError, msgspec.EncodeError, TypeError) as exc:
            self.v.append(Violation("record", f"{where}: does not survive JSON: {exc}"))

    def fail(self, origin: str, record: object, what: str) -> None:
        self.v.append(Violation("record", f"{origin}: {record!r} {what}"))

    def _check_time(self, where: str, name: str, value: object, *, optional: bool) -> None:
        if value is None and optional:
            return
        if type(value) is not int or not MIN_TS <= value <= MAX_TS:
            self.v.append(
                Violation("record", f"{where}: {name} {value!r} is not a plausible ns time")
            )

    def _decimal(
        self, where: str, name: str, value: object, *, minimum: str = ">0", optional: bool = False
    ) -> None:
        if value is None and optional:
            return
        if type(value) is not Decimal or not value.is_finite():
            self.v.append(
                Violation("record", f"{where}: {name} must be a finite Decimal, not {value!r}")
            )
            return
        if (minimum == ">0" and not value > 0) or (minimum == ">=0" and value < 0):
            self.v.append(Violation("record", f"{where}: {name} {value} must be {minimum}"))

    def _side(self, where: str, side: object) -> None:
        if side not in ("buy", "sell"):
            self.v.append(Violation("record", f"{where}: side {side!r} is not buy/sell"))

    def _check_fields(self, where: str, r: Record) -> None:
        d = self._decimal
        if isinstance(r, Trade):
            d(where, "price", r.price)
            d(where, "size", r.size)
            self._side(where, r.side)
            if not isinstance(r.id, str) or not r.id:
                self.v.append(Violation("record", f"{where}: id must be a non-empty str"))
        elif isinstance(r, BBO):
            d(where, "bid_price", r.bid_price)
            d(where, "ask_price", r.ask_price)
            d(where, "bid_size", r.bid_size, minimum=">=0")
            d(where, "ask_size", r.ask_size, minimum=">=0")
        elif isinstance(r, Ticker):
            for name in ("last", "bid", "ask", "open_24h", "high_24h", "low_24h"):
                d(where, name, getattr(r, name), optional=True)
            for name in ("volume_24h", "quote_volume_24h"):
                d(where, name, getattr(r, name), minimum=">=0", optional=True)
        elif isinstance(r, Funding):
            d(where, "rate", r.rate, minimum="any")
            d(where, "predicted_rate", r.predicted_rate, minimum="any", optional=True)
            d(where, "mark_price", r.mark_price, optional=True)
            d(where, "index_price", r.index_price, optional=True)
            self._check_time(where, "next_funding_ts", r.next_funding_ts, optional=True)
        elif isinstance(r, OpenInterest):
            d(where, "open_interest", r.open_interest, minimum=">=0")
        elif isinstance(r, Liquidation):
            self._side(where, r.side)
            d(where, "price", r.price)
            d(where, "size", r.size)
            if r.id is not None and not isinstance(r.id, str):
                self.v.append(Violation("record", f"{where}: id must be a str or None"))
        elif isinstance(r, Candle):
            self._check_candle(where, r)
        elif isinstance(r, Status) and not isinstance(r.event, StatusEvent):
            self.v.append(Violation("record", f"{where}: event {r.event!r} is not a StatusEvent"))

    def _check_candle(self, where: str, c: Candle) -> None:
        for name in ("open", "high", "low", "close"):
            self._decimal(where, name, getattr(c, name))
        self._decimal(where, "volume", c.volume, minimum=">=0")
        self._check_time(where, "start", c.start, optional=False)
        self._check_time(where, "end", c.end, optional=False)
        prices = [c.open, c.high, c.low, c.close]
        if all(type(p) is Decimal for p in prices) and not (
            c.low <= min(c.open, c.close) and c.high >= max(c.open, c.close)
        ):
            self.v.append(Violation("record", f"{where}: OHLC values are inconsistent"))
        if isinstance(c.start, int) and isinstance(c.end, int) and c.start > c.end:
            self.v.append(Violation("record", f"{where}: start after end"))

    def _check_book(self, where: str, book: Book) -> None:
        for side_name, levels in (("bids", book.bids), ("asks", book.asks)):
            if not isinstance(levels, list):
                self.v.append(Violation("book", f"{where}: {side_name} must be a list"))
                continue
            for level in levels:
                if not (isinstance(level, tuple) and len(level) == 2):
                    self.v.append(
                        Violation("book", f"{where}: level {level!r} is not (price, size)")
                    )
                    break
                self._decimal(where, f"{side_name} price", level[0])
                self._decimal(where, f"{side_name} size", level[1], minimum=">=0")
        symbol = book.symbol
        if symbol is None:
            return
        if book.seq is not None and (type(book.seq) is not int):
            self.v.append(Violation("book", f"{where}: seq {book.seq!r} is not an int"))
            return
        if book.snapshot:
            self.broken.discard(symbol)
            self.book_seq[symbol] = book.seq
            return
        if symbol in self.broken:
            self.v.append(
                Violation(
                    "book",
                    f"{where}: delta seq={book.seq} published after a gap/checksum_mismatch, "
                    "before a new snapshot",
                )
            )
            return
        if symbol not in self.book_seq:
            self.v.append(Violation("book", f"{where}: delta published before any snapshot"))
            self.book_seq[symbol] = book.seq
            return
        last = self.book_seq[symbol]
        if book.seq is not None:
            if last is not None and book.seq <= last:
                self.v.append(Violation("book", f"{where}: seq {book.seq} does not follow {last}"))
            self.book_seq[symbol] = book.seq
