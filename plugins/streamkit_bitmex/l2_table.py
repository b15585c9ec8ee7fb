"""BitMEX ``orderBookL2`` synchronisation: id-keyed levels -> absolute price levels.

BitMEX keys each price level by an ``id`` (one id per price and side). After subscribing, a
``partial`` gives the whole table; then ``insert`` adds new ids (with price and size),
``update`` changes the size of an existing id (in the 2021 API without repeating its price)
and ``delete`` removes an id. There is no sequence number and no checksum: the one
consistency check the venue allows is that every update/delete names a known id and every
insert a new one. :class:`L2Table` keeps the id -> (side, price) map, turns each action into
absolute (price, size) changes and hands them to the shared :class:`~streamkit.book.BookSync`
(which adds the crossed-book check and publishes only verified states).

A broken id rule, or table data before the ``partial``, is a gap: BookSync reports
``gap`` + ``resync`` and asks for a resync, which the feed performs by unsubscribing and
resubscribing ``orderBookL2:<symbol>`` (BitMEX answers a subscription with a fresh
``partial``). Until that partial arrives, further data for the symbol is dropped silently
(it belongs to the broken subscription and would only repeat the same gap).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from streamkit.book import BookSync, OrderBook
from streamkit.feed import DecodeError, Output
from streamkit.model import PriceLevel, StatusEvent
from streamkit_bitmex.schemas import Action, L2Row, WireSide

_ZERO = Decimal(0)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


def to_ns(when: dt.datetime) -> int:
    """An aware datetime -> int ns since the epoch, exactly (no float on the way)."""
    return (when - _EPOCH) // _MICROSECOND * 1000


class _Gap(Exception):
    """An action broke the id rules (internal: turned into a BookSync gap)."""


class L2Table:
    """The ``orderBookL2`` table of one symbol on one connection."""

    def __init__(self, exchange: str, symbol: str, connection: str) -> None:
        self.symbol = symbol
        self.sync = BookSync(exchange, symbol, connection)
        self.levels: dict[int, tuple[WireSide, Decimal]] = {}
        """Level id -> (side, price) of every level in the book."""
        self.resync_requested = False
        """A resync is under way: data is dropped until the next ``partial``."""
        self.dropped = 0

    @property
    def book(self) -> OrderBook:
        return self.sync.book

    @property
    def gaps(self) -> int:
        return self.sync.gaps

    def reset(self) -> None:
        """Forget every level (the feed is resubscribing; a fresh ``partial`` follows)."""
        self.levels = {}
        self.resync_requested = True

    def on_message(self, action: Action, rows: list[L2Row], recv_ts: int, out: Output) -> None:
        """Apply one ``orderBookL2`` message for this symbol. Raises DecodeError for rows that
        lack a field their action requires (a malformed frame, not a gap)."""
        if action == "partial":
            self._partial(rows, recv_ts, out)
            return
        if not self.sync.live:
            if self.resync_requested:
                self.dropped += 1
            else:
                self._fail(f"{action} before the partial", recv_ts, out)
            return
        _check_fields(action, rows)
        try:
            bids, asks = self._apply(action, rows)
        except _Gap as gap:
            self._fail(str(gap), recv_ts, out)
            return
        self.sync.delta(bids, asks, ts=_latest(rows), recv_ts=recv_ts, out=out)
        if not self.sync.live:
            self.resync_requested = True  # BookSync refused the state (crossed book)

    def _partial(self, rows: list[L2Row], recv_ts: int, out: Output) -> None:
        levels: dict[int, tuple[WireSide, Decimal]] = {}
        bids: list[PriceLevel] = []
        asks: list[PriceLevel] = []
        for row in rows:
            price, size = _required(row, "partial")
            levels[row.id] = (row.side, price)
            (bids if row.side == "Buy" else asks).append((price, size))
        self.levels = levels
        self.resync_requested = False
        self.sync.snapshot(bids, asks, ts=_latest(rows), recv_ts=recv_ts, out=out)
        if not self.sync.live:
            self.resync_requested = True

    def _apply(
        self, action: Action, rows: list[L2Row]
    ) -> tuple[list[PriceLevel], list[PriceLevel]]:
        """Update the id map and return the message's absolute level changes. On a gap the
        map is left half-updated, which is harmless: the resync replaces it."""
        levels = self.levels
        bids: dict[Decimal, Decimal] = {}
        asks: dict[Decimal, Decimal] = {}
        for row in rows:
            known = levels.get(row.id)
            if action == "insert":
                if known is not None:
                    raise _Gap(f"insert of existing level id {row.id}")
                price, size = _required(row, action)
                levels[row.id] = (row.side, price)
            elif known is None or known[0] != row.side:
                raise _Gap(f"{action} of unknown level id {row.id} ({row.side})")
            elif action == "update":
                price, size = known[1], _required_size(row)
            else:  # delete
                price, size = known[1], _ZERO
                del levels[row.id]
            (bids if row.side == "Buy" else asks)[price] = size
        return list(bids.items()), list(asks.items())

    def _fail(self, detail: str, recv_ts: int, out: Output) -> None:
        self.resync_requested = True
        self.sync.fail(StatusEvent.GAP, detail, recv_ts, out)


def _check_fields(action: Action, rows: list[L2Row]) -> None:
    """Reject a malformed message before any of it is applied (DecodeError, not a gap)."""
    for row in rows:
        if action == "insert":
            _required(row, action)
        elif action == "update":
            _required_size(row)


def _required(row: L2Row, action: str) -> tuple[Decimal, Decimal]:
    if row.price is None or row.size is None:
        raise DecodeError(f"orderBookL2 {action} without price and size: id {row.id}")
    return row.price, row.size


def _required_size(row: L2Row) -> Decimal:
    if row.size is None:
        raise DecodeError(f"orderBookL2 update without a size: id {row.id}")
    return row.size


def _latest(rows: list[L2Row]) -> int | None:
    """The newest row time (BitMEX added per-row timestamps in 2022; 2021 rows have none)."""
    stamps = [r.timestamp for r in rows if r.timestamp is not None]
    return to_ns(max(stamps)) if stamps else None
