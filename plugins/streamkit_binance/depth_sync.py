"""Binance spot order-book synchronisation, exactly as Binance documents it
("How to manage a local order book correctly"):

1. Buffer diff events, noting the first one's ``U``; fetch a REST snapshot.
2. If the snapshot's ``lastUpdateId`` is older than the first buffered ``U``, fetch again.
3. Drop buffered events with ``u <= lastUpdateId``. The first event kept must satisfy
   ``U <= lastUpdateId + 1 <= u``.
4. From then on every event's ``U`` must be the previous event's ``u + 1``.

Steps 1-3 (the REST bootstrap) live here; applying, verifying (the update-id chain of step 4
and the crossed-book check) and publishing are the shared :class:`~streamkit.book.BookSync`.
Any failure resynchronises this symbol only: the diff stream itself is intact, so a new
snapshot is all that is needed.
"""

from __future__ import annotations

import enum
from typing import Generic, NamedTuple, TypeVar

from streamkit.book import BookSync, OrderBook, PriceInterner
from streamkit.feed import DecodeError, HttpGet, Output
from streamkit.model import Book, PriceLevel, Status, StatusEvent
from streamkit_binance.schemas import DepthSnapshot, DepthUpdate

MAX_BUFFERED = 10_000
"""Diffs buffered while a snapshot is in flight; past this the sync restarts (a snapshot that
slow would be stale anyway)."""

_MS = 1_000_000


E = TypeVar("E", bound=DepthUpdate)


class Diff(NamedTuple, Generic[E]):
    """One decoded diff (spot's or USD-M's) with its levels' prices interned (Decimal,
    shared per price)."""

    event: E
    bids: list[PriceLevel]
    asks: list[PriceLevel]


def interned(event: E, prices: PriceInterner) -> Diff[E]:
    """``event`` with its prices interned through ``prices``. Raises
    ``decimal.InvalidOperation`` for a price that is not a number (on_message's caller
    counts it as a decode error)."""
    return Diff(event, prices(event.bids), prices(event.asks))


def delta_record(exchange: str, symbol: str, diff: Diff[DepthUpdate], recv_ts: int) -> Book:
    """The ``Book`` delta record one decoded diff becomes, without the book engine.

    The same fields :meth:`BookSync.delta <streamkit.book.BookSync.delta>` publishes once it
    has applied and verified the diff (:meth:`DepthSync._apply` passes them): ``snapshot``
    false, the diff's Decimal levels, ``seq`` its last update id, ``ts`` its event time in
    ns. Nothing here checks the update-id chain or the book: it exists to measure decode +
    normalize apart from apply + verify (``bench/clients.py``, ``streamkit-decode``); a feed
    publishes through :class:`DepthSync`.
    """
    event = diff.event
    return Book(
        exchange=exchange,
        symbol=symbol,
        ts=event.event_time * _MS,
        recv_ts=recv_ts,
        snapshot=False,
        bids=diff.bids,
        asks=diff.asks,
        seq=event.last_update_id,
    )


class Phase(enum.Enum):
    WAITING = "waiting"  # no diff seen yet: the snapshot is requested on the first one
    SYNCING = "syncing"  # snapshot requested, diffs buffered
    LIVE = "live"


class DepthSync:
    """The book of one symbol on one connection."""

    def __init__(self, exchange: str, symbol: str, connection: str, snapshot_url: str) -> None:
        self.symbol = symbol
        self.snapshot_url = snapshot_url
        self.sync = BookSync(exchange, symbol, connection)
        self.phase = Phase.WAITING
        self.buffer: list[Diff[DepthUpdate]] = []
        self.prices = PriceInterner()
        self.snapshot_attempts = 0
        self.dropped_stale = 0

    @property
    def book(self) -> OrderBook:
        return self.sync.book

    @property
    def gaps(self) -> int:
        return self.sync.gaps

    # --- diff stream -----------------------------------------------------------------------

    def diff(self, event: DepthUpdate) -> Diff[DepthUpdate]:
        """``event`` with this symbol's prices interned (see :func:`interned`)."""
        return interned(event, self.prices)

    def on_diff(self, event: DepthUpdate, recv_ts: int, out: Output) -> None:
        """Raises :class:`DecodeError` for a diff whose ids are impossible (``U > u``): kept,
        it would start a sync that no snapshot can ever satisfy (each one would be re-fetched
        as "older than the first buffered U", forever). Dropped, it is a gap like any other
        lost diff, and the next diff resynchronises the book."""
        if event.first_update_id > event.last_update_id:
            raise DecodeError(
                f"depth update for {self.symbol} with first id {event.first_update_id} > "
                f"last id {event.last_update_id}"
            )
        diff = self.diff(event)
        if self.phase is Phase.LIVE:
            if self._apply(diff, recv_ts, out, chained=True):
                return
            if self.sync.live:
                return  # a duplicate the book already covers: dropped, not a gap
            self._start_sync(diff, out)  # the chain broke: this event starts the next sync
            return
        if self.phase is Phase.WAITING:
            self._start_sync(diff, out)
            return
        if len(self.buffer) >= MAX_BUFFERED:
            self.sync.fail(StatusEvent.GAP, "snapshot took too long; buffer full", recv_ts, out)
            self._start_sync(diff, out)
            return
        self.buffer.append(diff)

    def _start_sync(self, first: Diff[DepthUpdate], out: Output) -> None:
        self.phase = Phase.SYNCING
        self.buffer = [first]
        self.snapshot_attempts = 0
        self._request_snapshot(out)

    def _request_snapshot(self, out: Output) -> None:
        self.snapshot_attempts += 1
        out.actions.append(HttpGet(self.snapshot_url, tag=self.symbol))

    # --- snapshot --------------------------------------------------------------------------

    def on_snapshot_failed(self, detail: str, recv_ts: int, out: Output) -> None:
        """The REST request failed: report it and ask again (the actor paces HTTP retries)."""
        out.records.append(
            Status(
                exchange=self.sync.exchange,
                symbol=self.symbol,
                ts=None,
                recv_ts=recv_ts,
                event=StatusEvent.ERROR,
                detail=f"depth snapshot failed: {detail}",
                connection=self.sync.connection,
            )
        )
        self._request_snapshot(out)

    def on_snapshot(self, snap: DepthSnapshot, recv_ts: int, out: Output) -> None:
        if self.phase is not Phase.SYNCING:
            return  # an answer to a request a later resync superseded
        if snap.last_update_id < self.buffer[0].event.first_update_id:
            # The snapshot predates the first buffered diff: a later one will cover it.
            self._request_snapshot(out)
            return
        kept = [d for d in self.buffer if d.event.last_update_id > snap.last_update_id]
        self.dropped_stale += len(self.buffer) - len(kept)
        self.buffer = []
        first = kept[0].event if kept else None
        if first and not first.first_update_id <= snap.last_update_id + 1 <= first.last_update_id:
            self.sync.fail(
                StatusEvent.GAP,
                f"first diff after snapshot {snap.last_update_id} spans "
                f"{first.first_update_id}..{first.last_update_id}",
                recv_ts,
                out,
            )
            self._start_sync(kept[-1], out)
            return
        if not self.sync.snapshot(
            snap.bids, snap.asks, seq=snap.last_update_id, recv_ts=recv_ts, out=out
        ):
            self.phase = Phase.WAITING
            return
        self.phase = Phase.LIVE
        for diff in kept:
            # The first kept diff straddles the snapshot id; the rest must chain exactly.
            if not self._apply(diff, recv_ts, out, chained=diff.event is not first):
                self._start_sync(diff, out)
                return

    def _apply(self, diff: Diff[DepthUpdate], recv_ts: int, out: Output, *, chained: bool) -> bool:
        event = diff.event
        published = self.sync.delta(
            diff.bids,
            diff.asks,
            seq=event.last_update_id,
            prev_seq=event.first_update_id - 1 if chained else None,
            ts=event.event_time * _MS,
            recv_ts=recv_ts,
            out=out,
        )
        if not published and not self.sync.live:
            self.phase = Phase.WAITING
        return published
