"""Kraken v2 order-book maintenance for one symbol, on top of the shared BookSync.

Kraken's rules (book-checksum-v2 guide): apply the levels of a message in array order (one
price can repeat; quantity 0 deletes), then **truncate each side to the subscribed depth**:
Kraken sends no delete for a level pushed out of range, and a level that comes back into range
is re-sent with its current quantity. Then the checksum in the message must equal the CRC32 of
the local top 10 (:mod:`streamkit_kraken.checksum`).

Truncation is expressed as explicit deletions appended to the update handed to BookSync, so
the published ``Book`` delta carries them too: a consumer that applies the published records
rebuilds exactly the verified book. A snapshot or update that fails its checksum is never
published; BookSync reports ``checksum_mismatch`` + ``resync`` and asks for a ResyncBook, and
the feed resubscribes just this symbol's book (Kraken then sends a fresh snapshot).
"""

from __future__ import annotations

import heapq
from decimal import Decimal

from streamkit.book import BookSync, OrderBook
from streamkit.feed import Output
from streamkit.model import PriceLevel
from streamkit_kraken.checksum import CachedChecksum, Precision

_ZERO = Decimal(0)


class DepthSync:
    """The verified book of one symbol at one subscribed depth."""

    def __init__(
        self,
        exchange: str,
        symbol: str,
        connection: str,
        depth: int,
        precision: Precision | None = None,
    ) -> None:
        self.symbol = symbol
        self.depth = depth
        self.precision = precision or Precision()
        checksum = CachedChecksum()  # book_checksum, rendering only the levels that changed
        self.sync = BookSync(
            exchange, symbol, connection, checksum=lambda book: checksum(book, self.precision)
        )

    @property
    def book(self) -> OrderBook:
        return self.sync.book

    def on_snapshot(
        self,
        bids: list[PriceLevel],
        asks: list[PriceLevel],
        checksum: int,
        ts: int | None,
        recv_ts: int,
        out: Output,
    ) -> bool:
        """Replace the book. Returns True when the snapshot verified and was published."""
        self.precision.reset()
        self.precision.observe(bids)
        self.precision.observe(asks)
        # A snapshot never holds more than the subscribed depth; trim defensively anyway so
        # the book's invariant holds whatever the venue sends.
        bids = heapq.nlargest(self.depth, _last_wins(bids).items())
        asks = heapq.nsmallest(self.depth, _last_wins(asks).items())
        return self.sync.snapshot(bids, asks, checksum=checksum, ts=ts, recv_ts=recv_ts, out=out)

    def on_update(
        self,
        bids: list[PriceLevel],
        asks: list[PriceLevel],
        checksum: int,
        ts: int | None,
        recv_ts: int,
        out: Output,
    ) -> bool:
        """Apply an update (plus the deletions its truncation implies). Returns True when the
        result verified and was published; False when it failed or the book awaits a
        snapshot."""
        if not self.sync.live:
            self.sync.dropped_while_waiting += 1
            return False
        self.precision.observe(bids)
        self.precision.observe(asks)
        book = self.sync.book
        bids = bids + _pushed_out(book.bids, bids, self.depth, best_is_high=True)
        asks = asks + _pushed_out(book.asks, asks, self.depth, best_is_high=False)
        return self.sync.delta(bids, asks, checksum=checksum, ts=ts, recv_ts=recv_ts, out=out)


def _last_wins(levels: list[PriceLevel]) -> dict[Decimal, Decimal]:
    """Levels in array order as a map (a repeated price keeps its last quantity), without the
    zero-quantity ones."""
    side: dict[Decimal, Decimal] = {}
    for price, qty in levels:
        if qty == _ZERO:
            side.pop(price, None)
        else:
            side[price] = qty
    return side


def _pushed_out(
    side: dict[Decimal, Decimal], levels: list[PriceLevel], depth: int, *, best_is_high: bool
) -> list[PriceLevel]:
    """Deletions for the levels that fall beyond ``depth`` once ``levels`` are applied."""
    if len(side) + len(levels) <= depth:
        return []  # cannot overflow: skip the copy on the common path
    after = dict(side)
    for price, qty in levels:
        if qty == _ZERO:
            after.pop(price, None)
        else:
            after[price] = qty
    if len(after) <= depth:
        return []
    select = heapq.nlargest if best_is_high else heapq.nsmallest
    kept = set(select(depth, after))
    return [(price, _ZERO) for price in after if price not in kept]
