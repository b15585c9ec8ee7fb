"""The venue-independent simulator: an aiohttp WebSocket server driven by a venue adapter.

:class:`VenueSimulator` owns pacing of captured frames, the outbound queues and book faults;
the protocol lives in a :class:`~streamkit.simulator.venues.base.VenueAdapter` (see
:mod:`streamkit.simulator.venues`). The server lifecycle, connection bookkeeping, the
connection faults, stats and the HTTP control endpoints are shared with the Binance spot
simulator (:mod:`streamkit.simulator.core`).

Endpoints (``rest_url`` is the base):

* the adapter's WebSocket path(s), e.g. ``/ws/v5/public`` (OKX), ``/v2`` (Kraken);
* the adapter's REST endpoints (e.g. Binance USD-M ``/fapi/v1/depth``);
* ``POST /_sim/fault`` (JSON :class:`~streamkit.simulator.faults.Fault`) -> ``{"affected": n}``;
* ``GET /_sim/stats`` -> :class:`~streamkit.simulator.stats.SimulatorStats` as JSON.

Pacing: each connection has one pacer task that advances every one of its subscriptions'
cursors ``rate`` times per second (so ``rate`` is frames per second *per subscription*).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

from aiohttp import WSMsgType, web

from streamkit.simulator.core import (
    CLOSE_GOING_AWAY,
    CLOSE_POLICY_VIOLATION,
    SLOW_CONSUMER_REASON,
    BaseConnection,
    BaseSimulator,
    Pacer,
)

# Re-exported: these names were defined here before core.py existed.
from streamkit.simulator.core import RATE_LIMIT_REASON as RATE_LIMIT_REASON
from streamkit.simulator.core import now_ms as now_ms
from streamkit.simulator.faults import Fault, FaultError
from streamkit.simulator.venues.base import BookKind, Relabel, ReplaySource, VenueAdapter

DEFAULT_VENUE_RATE: Final = 10.0
"""Frames per second on each subscription."""


def _as_bytes(frame: str | bytes) -> bytes:
    return frame.encode() if isinstance(frame, str) else frame


class _Cursor:
    """One subscription's position in its replay source."""

    __slots__ = ("relabel", "source", "step")

    def __init__(self, source: ReplaySource, relabel: Relabel | None) -> None:
        self.source = source
        self.relabel = relabel
        self.step = 0


class VenueConnection(BaseConnection):
    """One accepted WebSocket: outbound queues, subscriptions and their cursors, book faults.

    Implements :class:`~streamkit.simulator.venues.base.Session` for the adapter. Tasks besides
    the aiohttp handler (which runs the read loop): the writer (drains the control queue,
    then the data queue unless stalled), the pacer (advances cursors), the adapter's
    keepalive, and an optional WebSocket ping loop when the venue uses control-frame pings.
    Every pong is exempt from the adapter's inbound rate limit.
    """

    counts_unsolicited_pongs = False

    def __init__(
        self,
        conn_id: int,
        ws: web.WebSocketResponse,
        request: web.Request,
        *,
        sim: VenueSimulator,
    ) -> None:
        super().__init__(
            conn_id,
            ws,
            request,
            combined=False,
            max_incoming_per_second=sim.adapter.max_incoming_per_second,
        )
        self._request = request
        self._sim = sim
        self._adapter = sim.adapter
        self._state: dict[str, Any] = {}
        self._cursors: dict[str, _Cursor | None] = {}  # insertion-ordered
        self._data: collections.deque[bytes] = collections.deque()
        self._control: collections.deque[bytes] = collections.deque()
        self._book_faults: list[tuple[str, str | None]] = []  # (kind, symbol or None)
        self._last_out = self._last_in

    # ----------------------------------------------------------------- Session protocol

    @property
    def path(self) -> str:
        return self._request.path

    @property
    def query(self) -> Mapping[str, str]:
        return self._request.query

    @property
    def state(self) -> dict[str, Any]:
        return self._state

    def send(self, frame: str | bytes) -> None:
        self._enqueue(self._data, _as_bytes(frame))

    def send_control(self, frame: str | bytes) -> None:
        self._enqueue(self._control, _as_bytes(frame))

    def deliver(self, frame: str | bytes, book: BookKind | None, symbol: str) -> None:
        text = frame if isinstance(frame, str) else frame.decode()
        for out in self._through_faults(text, book, symbol):
            self._enqueue(self._data, out.encode())

    def subscribe(self, key: str, relabel: Relabel | None = None) -> bool:
        if key in self._cursors:
            return False
        source = self._adapter.sources.get(key)
        self._cursors[key] = None if source is None else _Cursor(source, relabel)
        self.stats.subscriptions = len(self._cursors)
        return True

    def unsubscribe(self, key: str) -> bool:
        if self._cursors.pop(key, False) is False:
            return False
        self.stats.subscriptions = len(self._cursors)
        return True

    def is_subscribed(self, key: str) -> bool:
        return key in self._cursors

    @property
    def subscriptions(self) -> Sequence[str]:
        return tuple(self._cursors)

    async def ws_ping(self, payload: bytes) -> None:
        with contextlib.suppress(ConnectionError):
            await self._ws.ping(payload)
            self.stats.pings_sent += 1

    def seconds_since_outbound(self) -> float:
        return self._loop.time() - self._last_out

    def seconds_since_inbound(self) -> float:
        return self._loop.time() - self._last_in

    # ----------------------------------------------------------------- lifecycle

    def _open(self) -> None:
        self._spawn(self._write_loop())
        self._spawn(self._pace_loop())
        self._spawn(self._adapter.keepalive(self))
        if self._sim.ws_ping_interval is not None:
            self._spawn(self._ws_ping_loop(self._sim.ws_ping_interval))
        self._adapter.on_open(self)

    def _release(self) -> None:
        self._adapter.on_close(self)
        self._cursors.clear()

    def _drop_queued(self) -> None:
        self._data.clear()
        self._control.clear()

    def _on_text(self, text: str) -> None:
        self._adapter.on_text(self, text)

    # ----------------------------------------------------------------- outbound

    def _enqueue(self, queue: collections.deque[bytes], frame: bytes) -> None:
        if self.closing:
            return
        queue.append(frame)
        if len(self._data) + len(self._control) > self._sim.max_pending:
            self.close(CLOSE_POLICY_VIOLATION, SLOW_CONSUMER_REASON)
            return
        self._wake.set()

    async def _write_loop(self) -> None:
        try:
            while True:
                if self._control:
                    await self._write(self._control.popleft())
                    continue
                if not self._data:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                if self._stall_until > self._loop.time():
                    await self._wait_while_stalled()
                    continue
                await self._write(self._data.popleft())
        except ConnectionError:
            return

    async def _write(self, frame: bytes) -> None:
        await self._ws.send_frame(frame, WSMsgType.TEXT)
        self.stats.messages_sent += 1
        self._last_out = self._loop.time()

    async def _wait_while_stalled(self) -> None:
        remaining = self._stall_until - self._loop.time()
        self._wake.clear()
        wake = asyncio.ensure_future(self._wake.wait())
        resumed = asyncio.ensure_future(self._resumed.wait())
        try:
            # Wake for control frames too: heartbeats keep flowing during a stall.
            await asyncio.wait(
                (wake, resumed),
                timeout=None if math.isinf(remaining) else remaining,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            wake.cancel()
            resumed.cancel()

    async def _pace_loop(self) -> None:
        pacer = Pacer(self._sim.rate, self._loop)
        while True:
            for _ in range(pacer.due()):
                self._step_cursors()
            await asyncio.sleep(pacer.tick)

    def _step_cursors(self) -> None:
        once = self._sim.replay_once
        for cursor in tuple(self._cursors.values()):
            if cursor is None or (once and cursor.step >= len(cursor.source)):
                continue
            text, book = cursor.source.frame(cursor.step)
            cursor.step += 1
            if cursor.relabel is not None:
                text = text.replace(cursor.relabel.old, cursor.relabel.new, 1)
            if self._adapter.observes_data:
                self._adapter.on_data(self, cursor.source.symbol, text)
            for out in self._through_faults(text, book, cursor.source.symbol):
                self._enqueue(self._data, out.encode())

    def _through_faults(self, text: str, book: BookKind | None, symbol: str) -> list[str]:
        """The frames to send for ``text`` after the pending book faults (one consumed)."""
        if book != "update" or not self._book_faults:
            return [text]
        for index, (kind, wanted) in enumerate(self._book_faults):
            if wanted is not None and wanted != symbol:
                continue
            if kind == "bad_checksum":
                corrupted = self._adapter.corrupt_checksum(text)
                if corrupted is None:
                    continue  # an update without a checksum: wait for one that has it
                del self._book_faults[index]
                return [corrupted]
            del self._book_faults[index]
            return [] if kind == "gap" else [text, text]
        return [text]

    # ----------------------------------------------------------------- WS pings

    async def _ws_ping_loop(self, interval: float) -> None:
        timeout = self._sim.ws_pong_timeout or math.inf
        sent = 0
        while not self.closing:
            await asyncio.sleep(interval)
            oldest = next(iter(self._unanswered_pings.values()), None)
            if oldest is not None and self._loop.time() - oldest >= timeout:
                self.close(CLOSE_POLICY_VIOLATION, "Pong timeout")
                return
            sent += 1
            payload = str(sent).encode()
            self._unanswered_pings[payload] = self._loop.time()
            await self.ws_ping(payload)

    # ----------------------------------------------------------------- faults

    # (the fault kinds themselves are applied by BaseConnection.apply_fault)

    def _inject_frame(self, frame: bytes) -> None:
        self.send_control(frame)

    def _add_book_fault(self, fault: Fault) -> None:
        self._book_faults.append((fault.kind, fault.symbol))

    def clear_book_faults(self) -> None:
        self._book_faults.clear()

    async def _shutdown(self, delay: float) -> None:
        frame = self._adapter.shutdown_frame()
        if frame is not None:
            self.send_control(frame)
        await asyncio.sleep(delay)
        self.close(CLOSE_GOING_AWAY)


class VenueSimulator(BaseSimulator[VenueConnection]):
    """A local, offline market-data server for one venue, replaying its captured frames.

    Args:
        adapter: the venue protocol (see :func:`streamkit.simulator.make_simulator`).
        host, port: where to bind (loopback and a free port by default).
        rate: frames per second on each subscription.
        replay_once: send each subscription's captured frames once, byte-exact, then stay
            silent (heartbeats go on) instead of looping.
        max_pending: frames queued for one client before it is closed (1008) as slow.
        ws_ping_interval, ws_pong_timeout: WebSocket control-frame pings (venues that use
            them set defaults through the factory; None disables).
        close_timeout: seconds :meth:`stop` waits for connections to close.

    Lifecycle, stats, fault injection and the ``/_sim/*`` endpoints come from
    :class:`~streamkit.simulator.core.BaseSimulator`.
    """

    def __init__(
        self,
        adapter: VenueAdapter,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rate: float = DEFAULT_VENUE_RATE,
        replay_once: bool = False,
        max_pending: int = 100_000,
        ws_ping_interval: float | None = None,
        ws_pong_timeout: float | None = None,
        close_timeout: float = 5.0,
    ) -> None:
        if not rate > 0 or not math.isfinite(rate):
            raise ValueError("rate must be a positive number of frames per second")
        if max_pending < 1:
            raise ValueError("max_pending must be >= 1")
        super().__init__(
            host=host,
            port=port,
            rate=rate,
            replay_once=replay_once,
            close_timeout=close_timeout,
        )
        self.adapter = adapter
        self.max_pending = max_pending
        self.ws_ping_interval = ws_ping_interval
        self.ws_pong_timeout = ws_pong_timeout

    @property
    def _log_context(self) -> Mapping[str, str]:
        return {"exchange": self.adapter.exchange}

    # ----------------------------------------------------------------- lifecycle

    def _add_routes(self, app: web.Application) -> None:
        for path in dict.fromkeys((self.adapter.ws_path, *self.adapter.ws_paths)):
            app.router.add_get(path, self._handle_ws)
        self.adapter.add_routes(app)

    async def _on_started(self) -> None:
        await self.adapter.start(self)

    async def _on_stopping(self) -> None:
        await self.adapter.stop()

    # ----------------------------------------------------------------- public API

    @property
    def exchange(self) -> str:
        return self.adapter.exchange

    @property
    def ws_url(self) -> str:
        """The full URL a feed connects to, e.g. ``ws://127.0.0.1:PORT/ws/v5/public``."""
        return f"ws://{self._authority}{self.adapter.ws_path}"

    def ws_url_for(self, path: str) -> str:
        """The URL of another served WebSocket path (e.g. Bybit ``/v5/public/linear``)."""
        return f"ws://{self._authority}{path}"

    @property
    def time_scale(self) -> float:
        return self.adapter.time_scale

    # ----------------------------------------------------------------- faults and handshakes

    def _check_fault(self, fault: Fault) -> None:
        """Refuse ``bad_checksum`` without book checksums and ``shutdown`` without a
        server-shutdown message."""
        if fault.kind == "bad_checksum" and not self.adapter.has_checksum:
            raise FaultError(f"{self.exchange} books carry no checksum")
        if fault.kind == "shutdown" and self.adapter.shutdown_frame() is None:
            raise FaultError(f"{self.exchange} has no server-shutdown message")

    def _new_connection(
        self, conn_id: int, ws: web.WebSocketResponse, request: web.Request
    ) -> VenueConnection:
        return VenueConnection(conn_id, ws, request, sim=self)

    def _reject_body(self, status: int) -> tuple[bytes, str]:
        return self.adapter.reject_body(status)
