"""Binance spot order-book synchronisation, exactly as Binance documents it
("How to manage a local order book correctly"):

1. Buffer diff events, noting the first one's ``U``; fetch a REST snapshot.
2. If the snapshot's ``lastUpdateId`` is older than the first buffered ``U``, fetch again.
3. Drop buffered events with ``u <= lastUpdateId``. The first event kept must satisfy
   ``U <= lastUpdateId + 1 <= u``.
4. From then on every event's ``U`` must be the previous event's ``u + 1``.

Any violation is a gap: publish ``gap`` and ``resync`` status records and start over at 1 for
this symbol only (the diff stream itself is fine, so no resubscription is needed). A book is
published only once the sequence checks (and the crossed-book check) pass.
"""

from __future__ import annotations

import enum

from streamkit.book import OrderBook
from streamkit.feed import HttpGet, Output
from streamkit.model import Book, Status, StatusEvent

from streamkit_binance.schemas import DepthSnapshot, DepthUpdate

MAX_BUFFERED = 10_000
"""Diffs buffered while a snapshot is in flight; past this the sync restarts (a snapshot that
slow would be stale anyway)."""


class SyncState(enum.Enum):
    WAITING = "waiting"  # no diff seen yet: the snapshot is requested on the first one
    SYNCING = "syncing"  # snapshot requested, diffs buffered
    LIVE = "live"


class DepthSync:
    """The book of one symbol on one connection."""

    def __init__(
        self, exchange: str, symbol: str, connection: str, snapshot_url: str
    ) -> None:
        self.exchange = exchange
        self.symbol = symbol
        self.connection = connection
        self.snapshot_url = snapshot_url
        self.book = OrderBook()
        self.state = SyncState.WAITING
        self.buffer: list[DepthUpdate] = []
        self.last_update_id = 0
        self.snapshot_attempts = 0
        self.gaps = 0
        self.dropped_stale = 0

    # --- diff stream -----------------------------------------------------------------------

    def on_diff(self, event: DepthUpdate, recv_ts: int, out: Output) -> None:
        if self.state is SyncState.LIVE:
            if event.last_update_id <= self.last_update_id:
                self.dropped_stale += 1  # a duplicate or a replay of what the book has
                return
            if event.first_update_id != self.last_update_id + 1:
                self._gap(
                    f"expected U={self.last_update_id + 1}, got U={event.first_update_id}",
                    recv_ts,
                    out,
                )
                self._start_sync(event, recv_ts, out)
                return
            self._apply(event, recv_ts, out)
            return
        if self.state is SyncState.WAITING:
            self._start_sync(event, recv_ts, out)
            return
        if len(self.buffer) >= MAX_BUFFERED:
            self._gap("snapshot took too long; buffer full", recv_ts, out)
            self._start_sync(event, recv_ts, out)
            return
        self.buffer.append(event)

    def _start_sync(self, first: DepthUpdate, recv_ts: int, out: Output) -> None:
        self.state = SyncState.SYNCING
        self.buffer = [first]
        self.snapshot_attempts = 0
        self._request_snapshot(out)

    def _request_snapshot(self, out: Output) -> None:
        self.snapshot_attempts += 1
        out.actions.append(HttpGet(self.snapshot_url, tag=self.symbol))

    # --- snapshot --------------------------------------------------------------------------

    def on_snapshot_failed(self, detail: str, recv_ts: int, out: Output) -> None:
        """The REST request failed: report it and ask again (the actor paces HTTP retries)."""
        out.records.append(self._status(StatusEvent.ERROR, f"depth snapshot failed: {detail}", recv_ts))
        self._request_snapshot(out)

    def on_snapshot(self, snap: DepthSnapshot, recv_ts: int, out: Output) -> None:
        if self.state is not SyncState.SYNCING:
            return  # an answer to a request a later resync superseded
        first_u = self.buffer[0].first_update_id
        if snap.last_update_id < first_u:
            # The snapshot predates the first buffered diff: a later one will cover it.
            self._request_snapshot(out)
            return
        kept = [e for e in self.buffer if e.last_update_id > snap.last_update_id]
        self.dropped_stale += len(self.buffer) - len(kept)
        self.buffer = []
        if kept and not (kept[0].first_update_id <= snap.last_update_id + 1 <= kept[0].last_update_id):
            self._gap(
                f"first diff after snapshot {snap.last_update_id} spans "
                f"{kept[0].first_update_id}..{kept[0].last_update_id}",
                recv_ts,
                out,
            )
            self._start_sync(kept[-1], recv_ts, out)
            return
        self.book.apply_snapshot(snap.bids, snap.asks, snap.last_update_id)
        if self.book.is_crossed():
            self._gap("snapshot is crossed", recv_ts, out)
            self.state = SyncState.WAITING
            return
        self.last_update_id = snap.last_update_id
        self.state = SyncState.LIVE
        out.records.append(
            Book(
                exchange=self.exchange,
                symbol=self.symbol,
                ts=None,
                recv_ts=recv_ts,
                snapshot=True,
                bids=snap.bids,
                asks=snap.asks,
                seq=snap.last_update_id,
            )
        )
        previous = snap.last_update_id
        for event in kept:
            if event is not kept[0] and event.first_update_id != previous + 1:
                self._gap(f"expected U={previous + 1}, got U={event.first_update_id}", recv_ts, out)
                self._start_sync(event, recv_ts, out)
                return
            self._apply(event, recv_ts, out)
            if self.state is not SyncState.LIVE:
                return
            previous = event.last_update_id

    # --- helpers ---------------------------------------------------------------------------

    def _apply(self, event: DepthUpdate, recv_ts: int, out: Output) -> None:
        self.book.apply_delta(event.bids, event.asks, event.last_update_id)
        if self.book.is_crossed():
            # The sequence was intact yet the book crossed: the local state cannot be trusted.
            self._gap(f"book crossed after update {event.last_update_id}", recv_ts, out)
            self.state = SyncState.WAITING
            self.buffer = []
            return
        self.last_update_id = event.last_update_id
        out.records.append(
            Book(
                exchange=self.exchange,
                symbol=self.symbol,
                ts=event.event_time * 1_000_000,
                recv_ts=recv_ts,
                snapshot=False,
                bids=event.bids,
                asks=event.asks,
                seq=event.last_update_id,
            )
        )

    def _gap(self, detail: str, recv_ts: int, out: Output) -> None:
        self.gaps += 1
        out.records.append(self._status(StatusEvent.GAP, detail, recv_ts))
        out.records.append(self._status(StatusEvent.RESYNC, "refetching the depth snapshot", recv_ts))

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
