"""Top-N book snapshots at a fixed interval, per (exchange, symbol), from the verified
``book`` stream.

:class:`SnapshotBooks` is the sans-I/O core: it maintains one
:class:`~streamkit.book.OrderBook` per (exchange, symbol) from snapshot + delta records and
returns :class:`~streamkit.model.BookSnapshot` records on demand; :class:`BookSnapshotStream`
runs it on the bus and publishes every ``interval`` seconds.

A book is published only while it is known to be whole. It becomes whole with a snapshot
record; a ``gap``, ``checksum_mismatch`` or ``resync`` status for its symbol, or a
``disconnected``/``reconnecting``/``stale``/``error`` status of its connection (symbol null:
every book of that exchange) means deltas were or will be missed, so the book is discarded
and nothing is published for it until the venue's next snapshot record. A delta for a book
that is not whole is ignored.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from streamkit.book import OrderBook
from streamkit.channel import Bus, Policy, Subscription, SubscriptionClosed
from streamkit.config import BookSnapshotsConfig
from streamkit.derived.base import DerivedStream
from streamkit.model import Book, BookSnapshot, Record, Status, StatusEvent

BREAKING_EVENTS = frozenset(
    {
        StatusEvent.GAP,
        StatusEvent.CHECKSUM_MISMATCH,
        StatusEvent.RESYNC,
        StatusEvent.DISCONNECTED,
        StatusEvent.RECONNECTING,
        StatusEvent.STALE,
        StatusEvent.ERROR,
    }
)
"""Status events after which a local copy of the book may have missed an update."""

_Key = tuple[str, str]  # (exchange, symbol)


class SnapshotBooks:
    """Whole books per (exchange, symbol), and their top ``depth`` levels.

    ``symbols``/``exchanges`` empty means all. ``clock`` gives the ``recv_ts`` of the
    snapshots (wall-clock ns)."""

    def __init__(
        self,
        depth: int,
        *,
        symbols: Iterable[str] = (),
        exchanges: Iterable[str] = (),
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.depth = depth
        self.symbols = frozenset(symbols)
        self.exchanges = frozenset(exchanges)
        self.clock = clock
        self.books: dict[_Key, OrderBook] = {}  # whole books only
        self.last_ts: dict[_Key, int | None] = {}
        self.ignored_deltas = 0

    def wants(self, exchange: str, symbol: str | None) -> bool:
        if self.exchanges and exchange not in self.exchanges:
            return False
        return symbol is None or not self.symbols or symbol in self.symbols

    def on_record(self, record: Record) -> None:
        if isinstance(record, Book):
            self.on_book(record)
        elif isinstance(record, Status):
            self.on_status(record)

    def on_book(self, record: Book) -> None:
        if record.symbol is None or not self.wants(record.exchange, record.symbol):
            return
        key = (record.exchange, record.symbol)
        if record.snapshot:
            book = self.books.get(key) or OrderBook()
            book.apply_snapshot(record.bids, record.asks, record.seq)
            self.books[key] = book
        else:
            book_or_none = self.books.get(key)
            if book_or_none is None:
                self.ignored_deltas += 1
                return
            book_or_none.apply_delta(record.bids, record.asks, record.seq)
        self.last_ts[key] = record.ts

    def on_status(self, status: Status) -> None:
        if status.event not in BREAKING_EVENTS or not self.wants(status.exchange, status.symbol):
            return
        for key in [k for k in self.books if k[0] == status.exchange]:
            if status.symbol is None or status.symbol == key[1]:
                del self.books[key]

    def snapshots(self) -> list[BookSnapshot]:
        """The top ``depth`` levels of every whole book, ordered by (exchange, symbol)."""
        now = self.clock()
        out = []
        for key in sorted(self.books):
            book = self.books[key]
            bids, asks = book.top(self.depth)
            out.append(
                BookSnapshot(
                    exchange=key[0],
                    symbol=key[1],
                    ts=self.last_ts.get(key),
                    recv_ts=now,
                    depth=self.depth,
                    bids=bids,
                    asks=asks,
                    seq=book.seq,
                )
            )
        return out


class BookSnapshotStream(DerivedStream):
    """Runs :class:`SnapshotBooks` on the bus: reads book and status records on a ``block``
    queue (a book that misses a delta is wrong, so this consumer is lossless and, like any
    ``block`` subscriber, makes the feed wait when it falls a whole queue behind) and
    publishes ``book_snapshot`` records every ``interval`` seconds."""

    def __init__(
        self,
        bus: Bus,
        config: BookSnapshotsConfig,
        *,
        name: str = "derived:book_snapshots",
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        super().__init__(name, bus)
        self.config = config
        self.clock = clock
        self.books = self._new_books()

    def _new_books(self) -> SnapshotBooks:
        cfg = self.config
        return SnapshotBooks(
            cfg.depth, symbols=cfg.symbols, exchanges=cfg.exchanges, clock=self.clock
        )

    def subscribe(self) -> Subscription:
        return self.bus.subscribe(
            (Book, Status),
            maxsize=self.config.queue_size,
            policy=Policy.BLOCK,
            name=self.name,
        )

    async def run(self, subscription: Subscription) -> None:
        # After a restart the books are rebuilt from the next snapshots: deltas seen by the
        # crashed run cannot be trusted to be complete.
        self.books = books = self._new_books()
        interval = self.config.interval
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + interval
        while True:
            try:
                async with asyncio.timeout_at(next_tick):
                    batch = await subscription.get_batch()
            except TimeoutError:
                batch = []
            except SubscriptionClosed:
                return  # the bus closed and the queue is drained: shutdown
            for record in batch:
                books.on_record(record)
            now = loop.time()
            if now >= next_tick:
                # Fixed cadence; a tick missed because the loop was busy is skipped, not
                # bunched up.
                next_tick += interval * max(1, int((now - next_tick) // interval) + 1)
                if not await self.publish(books.snapshots()):
                    return
