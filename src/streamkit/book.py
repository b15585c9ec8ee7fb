"""The order-book engine shared by every plugin.

:class:`OrderBook` holds L2 levels as exact decimals (sizes are absolute; 0 deletes a level).
:class:`BookSync` drives one symbol's book: it applies snapshots and deltas, verifies each
resulting state against the venue's sequence chain, checksum (a plugin-supplied function over
the levels' original strings) and a crossed-book check, publishes only verified states, and
on any failure reports ``gap``/``checksum_mismatch`` + ``resync`` and asks for a resync.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Callable, Iterable
from decimal import Decimal

from streamkit.feed import Output, ResyncBook
from streamkit.model import Book, PriceLevel, Status, StatusEvent

_ZERO = Decimal(0)


class OrderBook:
    """Bids and asks as ``{price: size}``; best levels are computed on demand.

    Not thread-safe; owned by one connection's protocol object.
    """

    __slots__ = ("asks", "bids", "seq")

    def __init__(self) -> None:
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}
        self.seq: int | None = None

    def apply_snapshot(
        self, bids: Iterable[PriceLevel], asks: Iterable[PriceLevel], seq: int | None = None
    ) -> None:
        """Replace the whole book. Zero-size levels in a snapshot are ignored."""
        self.bids = {p: s for p, s in bids if s != _ZERO}
        self.asks = {p: s for p, s in asks if s != _ZERO}
        self.seq = seq

    def apply_delta(
        self, bids: Iterable[PriceLevel], asks: Iterable[PriceLevel], seq: int | None = None
    ) -> None:
        """Set each level's absolute size; size 0 deletes the level (deleting an absent level
        is allowed: venues send those after a level was already removed by a snapshot)."""
        _apply(self.bids, bids)
        _apply(self.asks, asks)
        if seq is not None:
            self.seq = seq

    def best_bid(self) -> PriceLevel | None:
        if not self.bids:
            return None
        price = max(self.bids)
        return price, self.bids[price]

    def best_ask(self) -> PriceLevel | None:
        if not self.asks:
            return None
        price = min(self.asks)
        return price, self.asks[price]

    def is_crossed(self) -> bool:
        """True when the best bid is at or above the best ask: a state no venue publishes, so a
        local book in that state has missed or misapplied an update."""
        if not self.bids or not self.asks:
            return False
        return max(self.bids) >= min(self.asks)

    def top(self, depth: int) -> tuple[list[PriceLevel], list[PriceLevel]]:
        """The best ``depth`` levels: bids high to low, asks low to high."""
        bids = heapq.nlargest(depth, self.bids.items())
        asks = heapq.nsmallest(depth, self.asks.items())
        return bids, asks

    def __len__(self) -> int:
        return len(self.bids) + len(self.asks)


def _apply(side: dict[Decimal, Decimal], levels: Iterable[PriceLevel]) -> None:
    for price, size in levels:
        if size == _ZERO:
            side.pop(price, None)
        else:
            side[price] = size


ChecksumFn = Callable[[OrderBook], int]
"""Computes a venue's checksum of a local book (on the levels' original decimal strings:
``str(Decimal("0.35210000")) == "0.35210000"``, so Decimal keeps what the venue sent)."""


class SyncState(enum.Enum):
    WAITING = "waiting"  # no verified snapshot yet (or a resync is under way)
    LIVE = "live"


class BookSync:
    """The verified book of one symbol, shared by every plugin.

    Plugins decode their wire format and call :meth:`snapshot` / :meth:`delta` with absolute
    levels and whatever the venue provides to verify them: a sequence chain (``seq`` and
    ``prev_seq``: the delta must continue exactly where the book is), a checksum of the book
    after the update, or both. The book state is checked *before* anything is published:

    - a delta whose ``seq`` the book already covers is a duplicate or a replay: dropped,
      counted in ``duplicates``, not a gap;
    - a broken chain publishes ``gap``, a wrong checksum ``checksum_mismatch``, a crossed
      book ``resync``-worthy ``gap``; each is followed by a ``resync`` status record, the
      book goes back to WAITING (deltas are dropped until the next snapshot), and a
      :class:`~streamkit.feed.ResyncBook` action asks the plugin to resynchronise that
      symbol (resubscribe it, fetch a snapshot, or reconnect).
    """

    def __init__(
        self,
        exchange: str,
        symbol: str,
        connection: str,
        *,
        checksum: ChecksumFn | None = None,
        check_crossed: bool = True,
    ) -> None:
        self.exchange = exchange
        self.symbol = symbol
        self.connection = connection
        self.checksum = checksum
        self.check_crossed = check_crossed
        self.book = OrderBook()
        self.state = SyncState.WAITING
        self.gaps = 0
        self.checksum_failures = 0
        self.duplicates = 0
        self.dropped_while_waiting = 0

    @property
    def live(self) -> bool:
        return self.state is SyncState.LIVE

    def snapshot(
        self,
        bids: list[PriceLevel],
        asks: list[PriceLevel],
        *,
        recv_ts: int,
        out: Output,
        seq: int | None = None,
        ts: int | None = None,
        checksum: int | None = None,
    ) -> bool:
        """Replace the book; publish it if it verifies. Returns True when published."""
        self.book.apply_snapshot(bids, asks, seq)
        self.state = SyncState.LIVE
        if not self._verify(checksum, recv_ts, out, f"snapshot {seq}"):
            return False
        out.records.append(
            Book(
                exchange=self.exchange,
                symbol=self.symbol,
                ts=ts,
                recv_ts=recv_ts,
                snapshot=True,
                bids=bids,
                asks=asks,
                seq=seq,
            )
        )
        return True

    def delta(
        self,
        bids: list[PriceLevel],
        asks: list[PriceLevel],
        *,
        recv_ts: int,
        out: Output,
        seq: int | None = None,
        prev_seq: int | None = None,
        ts: int | None = None,
        checksum: int | None = None,
    ) -> bool:
        """Apply an update; publish it if the result verifies. Returns True when published."""
        if self.state is not SyncState.LIVE:
            self.dropped_while_waiting += 1
            return False
        current = self.book.seq
        if seq is not None and current is not None and seq <= current:
            self.duplicates += 1
            return False
        if prev_seq is not None and current is not None and prev_seq != current:
            self.fail(
                StatusEvent.GAP,
                f"expected an update after {current}, got one after {prev_seq}",
                recv_ts,
                out,
            )
            return False
        self.book.apply_delta(bids, asks, seq)
        if not self._verify(checksum, recv_ts, out, f"update {seq}"):
            return False
        out.records.append(
            Book(
                exchange=self.exchange,
                symbol=self.symbol,
                ts=ts,
                recv_ts=recv_ts,
                snapshot=False,
                bids=bids,
                asks=asks,
                seq=seq,
            )
        )
        return True

    def fail(self, event: StatusEvent, detail: str, recv_ts: int, out: Output) -> None:
        """Report a verification failure and ask the plugin to resynchronise this symbol."""
        if event is StatusEvent.CHECKSUM_MISMATCH:
            self.checksum_failures += 1
        else:
            self.gaps += 1
        self.state = SyncState.WAITING
        out.records.append(self._status(event, detail, recv_ts))
        out.records.append(
            self._status(StatusEvent.RESYNC, f"resynchronising {self.symbol}", recv_ts)
        )
        out.actions.append(ResyncBook(self.symbol, f"{event}: {detail}"))

    def _verify(self, checksum: int | None, recv_ts: int, out: Output, what: str) -> bool:
        if checksum is not None and self.checksum is not None:
            local = self.checksum(self.book)
            if local != checksum:
                self.fail(
                    StatusEvent.CHECKSUM_MISMATCH,
                    f"{what}: venue checksum {checksum}, local book {local}",
                    recv_ts,
                    out,
                )
                return False
        if self.check_crossed and self.book.is_crossed():
            self.fail(StatusEvent.GAP, f"{what}: book crossed", recv_ts, out)
            return False
        return True

    def _status(self, event: StatusEvent, detail: str, recv_ts: int) -> Status:
        return Status(
            exchange=self.exchange,
            symbol=self.symbol,
            ts=None,
            recv_ts=recv_ts,
            event=event,
            detail=detail,
            connection=self.connection,
        )
