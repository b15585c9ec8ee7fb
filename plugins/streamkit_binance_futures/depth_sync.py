"""Binance USD-M order-book synchronisation, exactly as Binance documents it for futures
("How to manage a local order book correctly", USD-M):

1. Open ``<sym>@depth@100ms`` and buffer the events.
2. Fetch ``/fapi/v1/depth?symbol=X&limit=1000``.
3. Drop every event with ``u < lastUpdateId``.
4. The first event processed must have ``U <= lastUpdateId AND u >= lastUpdateId``.
5. From then on each event's ``pu`` must equal the previous event's ``u``; otherwise start
   again from step 2.

The futures rules differ from spot's (``pu`` chain instead of ``U == previous u + 1``, and
the snapshot id is inclusive), so this is its own small state machine; applying, verifying
(``prev_seq=pu`` against the book's last ``u``, plus the crossed-book check) and publishing
are the shared :class:`~streamkit.book.BookSync`. A failure resynchronises this symbol only,
with a new snapshot: the diff stream itself is intact.
"""

from __future__ import annotations

import enum

from streamkit.book import BookSync, OrderBook, PriceInterner
from streamkit.feed import HttpGet, Output
from streamkit.model import Status, StatusEvent
from streamkit_binance import depth_sync
from streamkit_binance_futures.schemas import DepthSnapshot, FuturesDepthUpdate

MAX_BUFFERED = 10_000
"""Diffs buffered while a snapshot is in flight; past this the sync restarts."""

_MS = 1_000_000


Diff = depth_sync.Diff[FuturesDepthUpdate]  # the spot sync's interned diff, holding a USD-M event


class Phase(enum.Enum):
    WAITING = "waiting"  # no diff seen yet: the snapshot is requested on the first one
    SYNCING = "syncing"  # snapshot requested, diffs buffered
    BRIDGING = "bridging"  # snapshot applied; waiting for the event that straddles it
    LIVE = "live"  # every event must continue the pu chain


class FuturesDepthSync:
    """The book of one symbol on one connection.

    Counters: ``dropped_stale`` (events older than the snapshot, step 3), ``applied``
    (events published as book deltas), ``gaps`` (chain breaks, from the shared BookSync).
    """

    def __init__(self, exchange: str, symbol: str, connection: str, snapshot_url: str) -> None:
        self.symbol = symbol
        self.snapshot_url = snapshot_url
        self.sync = BookSync(exchange, symbol, connection)
        self.phase = Phase.WAITING
        self.buffer: list[Diff] = []
        self.prices = PriceInterner()
        self.snapshot_id = 0
        self.snapshot_attempts = 0
        self.dropped_stale = 0
        self.applied = 0

    @property
    def book(self) -> OrderBook:
        return self.sync.book

    @property
    def gaps(self) -> int:
        return self.sync.gaps

    # --- diff stream -----------------------------------------------------------------------

    def on_diff(self, event: FuturesDepthUpdate, recv_ts: int, out: Output) -> None:
        """Raises ``decimal.InvalidOperation`` for a price that is not a number (on_message's
        caller counts it as a decode error)."""
        self._on_diff(depth_sync.interned(event, self.prices), recv_ts, out)

    def _on_diff(self, diff: Diff, recv_ts: int, out: Output) -> None:
        if self.phase is Phase.LIVE:
            self._apply_chained(diff, recv_ts, out)
        elif self.phase is Phase.BRIDGING:
            self._bridge(diff, recv_ts, out)
        elif self.phase is Phase.WAITING:
            self._start_sync(diff, out)
        elif len(self.buffer) >= MAX_BUFFERED:
            self.sync.fail(StatusEvent.GAP, "snapshot took too long; buffer full", recv_ts, out)
            self._start_sync(diff, out)
        else:
            self.buffer.append(diff)

    def _start_sync(self, first: Diff, out: Output) -> None:
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
            # The snapshot predates every buffered event: no event can straddle it, and a
            # later snapshot will. Not a gap in the data, so no status record.
            self._request_snapshot(out)
            return
        buffered, self.buffer = self.buffer, []
        self.snapshot_id = snap.last_update_id
        if not self.sync.snapshot(
            snap.bids, snap.asks, seq=snap.last_update_id, recv_ts=recv_ts, out=out
        ):
            self.phase = Phase.WAITING
            return
        self.phase = Phase.BRIDGING
        for i, diff in enumerate(buffered):
            self._on_diff(diff, recv_ts, out)
            if self.phase is Phase.SYNCING:
                # The chain broke inside the buffer: the event that broke it started a new
                # sync; the rest belong to that sync's buffer.
                self.buffer.extend(buffered[i + 1 :])
                return

    # --- applying --------------------------------------------------------------------------

    def _bridge(self, diff: Diff, recv_ts: int, out: Output) -> None:
        """Steps 3 and 4: skip events the snapshot covers; the first kept one must straddle
        the snapshot id, and is applied without a chain check (nothing precedes it)."""
        event = diff.event
        last_id = self.snapshot_id
        if event.last_update_id < last_id:
            self.dropped_stale += 1
            return
        if event.first_update_id > last_id:
            self.sync.fail(
                StatusEvent.GAP,
                f"first diff after snapshot {last_id} spans "
                f"{event.first_update_id}..{event.last_update_id}",
                recv_ts,
                out,
            )
            self._start_sync(diff, out)
            return
        self.phase = Phase.LIVE
        self._publish(diff, recv_ts, out, prev_seq=None)

    def _apply_chained(self, diff: Diff, recv_ts: int, out: Output) -> None:
        """Step 5: ``pu`` must be the book's last ``u`` (BookSync checks it as prev_seq)."""
        self._publish(diff, recv_ts, out, prev_seq=diff.event.prev_last_update_id)

    def _publish(self, diff: Diff, recv_ts: int, out: Output, *, prev_seq: int | None) -> bool:
        event = diff.event
        published = self.sync.delta(
            diff.bids,
            diff.asks,
            seq=event.last_update_id,
            prev_seq=prev_seq,
            ts=event.transaction_time * _MS,
            recv_ts=recv_ts,
            out=out,
        )
        if published:
            self.applied += 1
        elif not self.sync.live:
            # Verification failed (broken chain or crossed book): BookSync reported it; this
            # event starts the next sync. Not published and still live means the book
            # already covers this event (a replay): dropped, not a gap.
            self._start_sync(diff, out)
        return published
