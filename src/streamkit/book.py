"""The order-book engine shared by every plugin.

:class:`OrderBook` holds L2 levels as exact decimals (sizes are absolute; 0 deletes a level).
:class:`BookSync` drives one symbol's book: it applies snapshots and deltas, verifies each
resulting state against the venue's sequence chain, checksum (a plugin-supplied function over
the levels' original strings) and a crossed-book check, publishes only verified states, and
on any failure reports ``gap``/``checksum_mismatch`` + ``resync`` and asks for a resync.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from decimal import Decimal
from itertools import islice

from sortedcontainers import SortedDict

from streamkit.feed import Output, ResyncBook
from streamkit.model import Book, PriceLevel, Status, StatusEvent

_ZERO = Decimal(0)


def _descending(price: Decimal) -> Decimal:
    return -price


class OrderBook:
    """Bids and asks as sorted ``{price: size}`` mappings, best level first: ``bids`` high
    to low, ``asks`` low to high (``sortedcontainers.SortedDict``, a dict subclass).

    Keeping the sides sorted makes the best level, the crossed-book check and the top-N a
    checksum needs O(1) / O(N) instead of a scan of the whole book on every update; changing
    an existing level's size stays a plain dict assignment. Not thread-safe; owned by one
    connection's protocol object.
    """

    __slots__ = ("asks", "bids", "seq")

    def __init__(self) -> None:
        self.bids: SortedDict[Decimal, Decimal] = SortedDict(_descending)
        self.asks: SortedDict[Decimal, Decimal] = SortedDict()
        self.seq: int | None = None

    def apply_snapshot(
        self, bids: Iterable[PriceLevel], asks: Iterable[PriceLevel], seq: int | None = None
    ) -> None:
        """Replace the whole book. Zero-size levels in a snapshot are ignored."""
        self.bids = SortedDict(_descending, ((p, s) for p, s in bids if s != _ZERO))
        self.asks = SortedDict((p, s) for p, s in asks if s != _ZERO)
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
        return self.bids.peekitem(0) if self.bids else None

    def best_ask(self) -> PriceLevel | None:
        return self.asks.peekitem(0) if self.asks else None

    def is_crossed(self) -> bool:
        """True when the best bid is at or above the best ask: a state no venue publishes, so a
        local book in that state has missed or misapplied an update."""
        if not self.bids or not self.asks:
            return False
        return bool(self.bids.peekitem(0)[0] >= self.asks.peekitem(0)[0])

    def top(self, depth: int) -> tuple[list[PriceLevel], list[PriceLevel]]:
        """The best ``depth`` levels: bids high to low, asks low to high."""
        return list(islice(self.bids.items(), depth)), list(islice(self.asks.items(), depth))

    def __len__(self) -> int:
        return len(self.bids) + len(self.asks)


def _apply(side: SortedDict[Decimal, Decimal], levels: Iterable[PriceLevel]) -> None:
    # The hot path of every book update. SortedDict's own __setitem__/pop cost ~1.5 us each
    # in Python; a level whose price is already present only needs the dict assignment, and
    # the sorted key list changes only on inserts and deletes, so those two operations are
    # done directly (sortedcontainers' documented internals: _list_add / _list_remove).
    list_add, list_remove = side._list_add, side._list_remove
    set_level, del_level = dict.__setitem__, dict.__delitem__
    for price, size in levels:
        if size:
            if price not in side:
                list_add(price)
            set_level(side, price, size)
        elif price in side:
            list_remove(price)
            del_level(side, price)


ChecksumFn = Callable[[OrderBook], int]
"""Computes a venue's checksum of a local book. A Decimal built from the venue's string keeps
its digits and exponent, so ``format(d, "f")`` gives back exactly what the venue sent
(``"0.35210000"``, ``"0.00000062"``); beware ``str(d)``, which switches to scientific notation
for small values (``str(Decimal("0.00000062")) == "6.2E-7"``)."""


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
