"""The venue-independent simulator: an aiohttp WebSocket server driven by a venue adapter.

:class:`VenueSimulator` owns the server lifecycle, connection bookkeeping, pacing of captured
frames, fault injection, stats and the HTTP control endpoints; the protocol lives in a
:class:`~streamkit.simulator.venues.base.VenueAdapter` (see :mod:`streamkit.simulator.venues`).

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
from types import TracebackType
from typing import Any, Final, Self

import msgspec
import structlog
from aiohttp import WSMsgType, web

from streamkit.simulator.core import (
    CLOSE_GOING_AWAY,
    CLOSE_POLICY_VIOLATION,
    SLOW_CONSUMER_REASON,
    BaseConnection,
    Pacer,
    json_response,
)
from streamkit.simulator.core import RATE_LIMIT_REASON as RATE_LIMIT_REASON
from streamkit.simulator.core import now_ms as now_ms
from streamkit.simulator.faults import (
    BOOK_FAULTS,
    CONNECTION_FAULTS,
    Fault,
    FaultError,
    decode_fault,
)
from streamkit.simulator.stats import ConnectionStats, SimulatorStats
from streamkit.simulator.venues.base import BookKind, Relabel, ReplaySource, VenueAdapter

log = structlog.get_logger("streamkit.simulator")

DEFAULT_VENUE_RATE: Final = 10.0
"""Frames per second on each subscription."""

_CLOSED_STATS_KEPT: Final = 1000


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


class VenueSimulator:
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
        self.adapter = adapter
        self._host = host
        self._requested_port = port
        self._rate = float(rate)
        self._replay_once = replay_once
        self.max_pending = max_pending
        self.ws_ping_interval = ws_ping_interval
        self.ws_pong_timeout = ws_pong_timeout
        self._close_timeout = close_timeout
        self._connections: dict[int, VenueConnection] = {}
        self._handlers: dict[int, asyncio.Task[object]] = {}
        self._closed_stats: collections.deque[ConnectionStats] = collections.deque(
            maxlen=_CLOSED_STATS_KEPT
        )
        self._accepted = 0
        self._rejected = 0
        self._faults: collections.Counter[str] = collections.Counter()
        self._reject_remaining = 0
        self._reject_fault: Fault | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Bind and start serving."""
        if self._runner is not None:
            raise RuntimeError("simulator already started")
        app = web.Application()
        for path in dict.fromkeys((self.adapter.ws_path, *self.adapter.ws_paths)):
            app.router.add_get(path, self._handle_ws)
        self.adapter.add_routes(app)
        app.router.add_post("/_sim/fault", self._handle_fault)
        app.router.add_get("/_sim/stats", self._handle_stats)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._requested_port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        await self.adapter.start(self)
        log.info(
            "simulator.started",
            exchange=self.adapter.exchange,
            ws_url=self.ws_url,
            rest_url=self.rest_url,
            rate=self._rate,
        )

    async def stop(self) -> None:
        """Close every connection (1001) and release the port. Idempotent."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        await self.adapter.stop()
        for conn in list(self._connections.values()):
            conn.close(CLOSE_GOING_AWAY, "Server stopping")
        handlers = list(self._handlers.values())
        if handlers:
            _, still_open = await asyncio.wait(handlers, timeout=self._close_timeout)
            for handler in still_open:
                handler.cancel()
        await runner.cleanup()
        log.info("simulator.stopped", exchange=self.adapter.exchange)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ----------------------------------------------------------------- public API

    @property
    def exchange(self) -> str:
        return self.adapter.exchange

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("simulator not started")
        return self._port

    @property
    def _authority(self) -> str:
        host = "127.0.0.1" if self._host in ("", "0.0.0.0") else self._host
        host = "[::1]" if host == "::" else (f"[{host}]" if ":" in host else host)
        return f"{host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """The full URL a feed connects to, e.g. ``ws://127.0.0.1:PORT/ws/v5/public``."""
        return f"ws://{self._authority}{self.adapter.ws_path}"

    def ws_url_for(self, path: str) -> str:
        """The URL of another served WebSocket path (e.g. Bybit ``/v5/public/linear``)."""
        return f"ws://{self._authority}{path}"

    @property
    def rest_url(self) -> str:
        """REST base, ``http://127.0.0.1:PORT``."""
        return f"http://{self._authority}"

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def replay_once(self) -> bool:
        return self._replay_once

    @property
    def time_scale(self) -> float:
        return self.adapter.time_scale

    @property
    def stats(self) -> SimulatorStats:
        """A snapshot of the counters."""
        live = [msgspec.structs.replace(c.stats) for c in self._connections.values()]
        closed = [msgspec.structs.replace(s) for s in self._closed_stats]
        return SimulatorStats(
            connections_accepted=self._accepted,
            connections_open=len(self._connections),
            handshakes_rejected=self._rejected,
            faults_injected=dict(self._faults),
            connections=sorted(closed + live, key=lambda s: s.id),
        )

    def inject(self, fault: Fault) -> int:
        """Inject ``fault`` now; returns how many connections it was applied to (for
        ``reject``: how many future handshakes will be refused). Raises :class:`FaultError`
        for a fault the venue cannot express (``bad_checksum`` without book checksums,
        ``shutdown`` without a shutdown message)."""
        if fault.kind == "bad_checksum" and not self.adapter.has_checksum:
            raise FaultError(f"{self.exchange} books carry no checksum")
        if fault.kind == "shutdown" and self.adapter.shutdown_frame() is None:
            raise FaultError(f"{self.exchange} has no server-shutdown message")
        self._faults[fault.kind] += 1
        log.info("simulator.fault", exchange=self.exchange, kind=fault.kind, conn=fault.conn)
        if fault.kind == "reject":
            self._reject_fault, self._reject_remaining = fault, fault.count
            return fault.count
        assert fault.kind in CONNECTION_FAULTS or fault.kind in BOOK_FAULTS
        if fault.conn is None:
            targets = list(self._connections.values())
        else:
            target = self._connections.get(fault.conn)
            targets = [] if target is None else [target]
        for conn in targets:
            conn.apply_fault(fault)
        return len(targets)

    def clear_faults(self) -> None:
        """End every stall, forget pending book faults and armed rejections."""
        self._reject_remaining, self._reject_fault = 0, None
        for conn in self._connections.values():
            conn.resume()
            conn.clear_book_faults()

    # ----------------------------------------------------------------- HTTP handlers

    async def _handle_ws(self, request: web.Request) -> web.StreamResponse:
        if self._reject_remaining > 0 and self._reject_fault is not None:
            return self._reject(self._reject_fault)
        ws = web.WebSocketResponse(autoping=False, compress=False, timeout=self._close_timeout)
        await ws.prepare(request)
        conn_id = self._accepted
        self._accepted += 1
        conn = VenueConnection(conn_id, ws, request, sim=self)
        self._connections[conn_id] = conn
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers[conn_id] = handler
        log.debug("simulator.connected", exchange=self.exchange, conn=conn_id, path=request.path)
        try:
            await conn.run()
        finally:
            del self._connections[conn_id]
            self._handlers.pop(conn_id, None)
            self._closed_stats.append(conn.stats)
            log.debug("simulator.disconnected", conn=conn_id, code=conn.stats.close_code)
        return ws

    def _reject(self, fault: Fault) -> web.Response:
        self._reject_remaining -= 1
        self._rejected += 1
        headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
        body, content_type = self.adapter.reject_body(fault.status)
        return web.Response(
            status=fault.status, body=body, headers=headers, content_type=content_type
        )

    async def _handle_fault(self, request: web.Request) -> web.Response:
        try:
            fault = decode_fault(await request.read())
            affected = self.inject(fault)
        except FaultError as exc:
            return json_response(msgspec.json.encode({"error": str(exc)}), status=400)
        return json_response(msgspec.json.encode({"affected": affected}))

    async def _handle_stats(self, request: web.Request) -> web.Response:
        return json_response(msgspec.json.encode(self.stats))
