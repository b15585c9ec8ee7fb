"""What every simulator shares, whatever protocol it speaks.

The Binance spot simulator (:mod:`.server`, :mod:`.connection`) and the venue simulators
(:mod:`.venue_server`) differ in their protocols, their outbound queues and how they produce
frames; this module holds the parts that are the same for both:

* :class:`BaseSimulator`, the aiohttp server: lifecycle, URLs, connection bookkeeping and
  stats, fault injection and handshake rejection, and the ``POST /_sim/fault`` and
  ``GET /_sim/stats`` endpoints;
* :class:`BaseConnection`, one accepted WebSocket: closing, its helper tasks, the read loop with
  the inbound rate limit and ping/pong matching, and the connection faults;
* :class:`Pacer`, ``rate`` steps per second; close codes, JSON responses and the wall clock.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import math
import time
from collections.abc import Coroutine, Mapping
from types import TracebackType
from typing import Any, ClassVar, Final, Generic, Self, TypeVar

import msgspec
import structlog
from aiohttp import WSMsgType, web

from streamkit.simulator.faults import (
    BOOK_FAULTS,
    CONNECTION_FAULTS,
    Fault,
    FaultError,
    decode_fault,
    oversize_frame,
)
from streamkit.simulator.stats import ConnectionStats, SimulatorStats

log = structlog.get_logger("streamkit.simulator")

CLOSE_GOING_AWAY: Final = 1001
CLOSE_POLICY_VIOLATION: Final = 1008
SLOW_CONSUMER_REASON: Final = "Slow consumer"
RATE_LIMIT_REASON: Final = "Too many requests"

# Pacers wake at most every 5 ms and emit the steps due since the last wake-up, so high rates
# cost a few wake-ups per second rather than one per step.
MIN_TICK: Final = 0.005
_CLOSED_STATS_KEPT: Final = 1000


class Pacer:
    """Spreads ``rate`` steps per second (on average) over wake-ups ``tick`` seconds apart.

    Usage: ``while ...: run pacer.due() steps; await asyncio.sleep(pacer.tick)``. The first
    call is due one step; after the event loop was blocked, at most one second of steps is
    due at once (the rest of the backlog is skipped rather than flooded out).
    """

    __slots__ = ("_done", "_loop", "_max_burst", "_rate", "_started", "tick")

    def __init__(self, rate: float, loop: asyncio.AbstractEventLoop) -> None:
        self.tick = max(1.0 / rate, MIN_TICK)
        self._rate = rate
        self._max_burst = max(1, math.ceil(rate))
        self._loop = loop
        self._started = loop.time()
        self._done = 0

    def due(self) -> int:
        """How many steps to run now (>= 0); they count as done from here on."""
        due = int((self._loop.time() - self._started) * self._rate) + 1 - self._done
        if due > self._max_burst:  # the event loop was blocked: skip the backlog
            self._done += due - self._max_burst
            due = self._max_burst
        due = max(due, 0)
        self._done += due
        return due


def json_response(body: bytes, status: int = 200) -> web.Response:
    """An ``application/json`` response with an already encoded ``body``."""
    return web.Response(body=body, status=status, content_type="application/json")


def now_ms() -> int:
    """Wall-clock epoch milliseconds."""
    return time.time_ns() // 1_000_000


class BaseConnection(abc.ABC):
    """One accepted WebSocket and what every simulator tracks about it.

    The owner calls :meth:`run` from the aiohttp handler and returns when it does; faults
    arrive through :meth:`apply_fault`. Subclasses own the outbound queues and the writer, the
    protocol (:meth:`_on_text`) and the helper tasks they start in :meth:`_open`.

    Args:
        conn_id: the connection's id (accept order).
        ws: the prepared WebSocket.
        request: the upgrade request (its ``path_qs`` goes into the stats).
        combined: the initial ``combined`` flag of :attr:`stats`.
        max_incoming_per_second: counted client frames per 1 s window before the connection
            is closed (1008 "Too many requests"); None: no limit.
    """

    #: Whether a pong that answers none of our pings counts against the inbound rate limit
    #: (pongs answering our pings never do).
    counts_unsolicited_pongs: ClassVar[bool] = True

    def __init__(
        self,
        conn_id: int,
        ws: web.WebSocketResponse,
        request: web.Request,
        *,
        combined: bool,
        max_incoming_per_second: int | None,
    ) -> None:
        self.stats = ConnectionStats(id=conn_id, path=request.path_qs, combined=combined)
        self._ws = ws
        self._transport = request.transport
        self._max_incoming = max_incoming_per_second
        self._wake = asyncio.Event()  # set when the writer has something to do
        self._stall_until = 0.0  # event-loop time; math.inf = until resumed
        self._resumed = asyncio.Event()
        self._incoming: collections.deque[float] = collections.deque()
        self._unanswered_pings: dict[bytes, float] = {}  # payload -> loop time sent, in order
        self._tasks: set[asyncio.Task[None]] = set()
        self._close_task: asyncio.Task[bool] | None = None
        self._loop = asyncio.get_running_loop()
        self._last_in = self._loop.time()

    @property
    def id(self) -> int:
        return self.stats.id

    # ----------------------------------------------------------------- lifecycle

    async def run(self) -> None:
        """Serve the connection until it closes (either side) or is aborted."""
        self._open()
        try:
            await self._read_loop()
        finally:
            await self._finish()

    @abc.abstractmethod
    def _open(self) -> None:
        """Start serving: subscriptions requested in the handshake, the writer and other
        helper tasks (through :meth:`_spawn`, so :meth:`_finish` cancels them)."""

    @abc.abstractmethod
    def _release(self) -> None:
        """Drop every subscription once the connection has closed."""

    @abc.abstractmethod
    def _drop_queued(self) -> None:
        """Forget every frame not yet written (the connection is closing)."""

    async def _finish(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._close_task is not None:
            with contextlib.suppress(Exception):
                await self._close_task
        elif not self._ws.closed:
            with contextlib.suppress(Exception):
                await self._ws.close(code=CLOSE_GOING_AWAY)
        self._release()
        self.stats.subscriptions = 0
        self.stats.open = False
        if self.stats.close_code is None:
            self.stats.close_code = self._ws.close_code

    def close(self, code: int, reason: str = "") -> None:
        """Start a closing handshake with ``code``/``reason`` (idempotent, returns at once);
        frames still queued are dropped."""
        if self.closing:
            return
        self.stats.close_code, self.stats.close_reason = code, reason
        self._drop_queued()
        self._close_task = asyncio.create_task(self._ws.close(code=code, message=reason.encode()))

    @property
    def closing(self) -> bool:
        return self._close_task is not None or self._ws.closed

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ----------------------------------------------------------------- inbound

    @abc.abstractmethod
    def _on_text(self, text: str) -> None:
        """Handle one (counted) text frame from the client."""

    async def _read_loop(self) -> None:
        async for msg in self._ws:  # ends on CLOSE / CLOSING / CLOSED
            if msg.type is WSMsgType.ERROR:
                return
            self._last_in = self._loop.time()
            if msg.type is WSMsgType.PONG and (
                self._answer_pong(bytes(msg.data)) or not self.counts_unsolicited_pongs
            ):
                continue  # exempt from the rate limit
            if not self._count_incoming():
                return
            if msg.type is WSMsgType.TEXT:
                self._on_text(msg.data)
            elif msg.type is WSMsgType.PING:
                with contextlib.suppress(ConnectionError):
                    await self._ws.pong(msg.data)
            # Binary frames and counted pongs are otherwise ignored.

    def _count_incoming(self) -> bool:
        """Record one counted frame; False (and closing) when it breaks the rate limit."""
        self.stats.messages_received += 1
        limit = self._max_incoming
        if limit is None:
            return True
        now = self._loop.time()
        window = self._incoming
        window.append(now)
        while window[0] <= now - 1.0:
            window.popleft()
        if len(window) > limit:
            self.close(CLOSE_POLICY_VIOLATION, RATE_LIMIT_REASON)
            return False
        return True

    def _answer_pong(self, payload: bytes) -> bool:
        """True when ``payload`` echoes an outstanding ping (which, and every earlier one, is
        then answered)."""
        if payload not in self._unanswered_pings:
            return False
        for sent in list(self._unanswered_pings):
            del self._unanswered_pings[sent]
            if sent == payload:
                break
        self.stats.pongs_received += 1
        return True

    # ----------------------------------------------------------------- faults

    def apply_fault(self, fault: Fault) -> None:
        """Apply a connection or book fault (any kind but ``reject``); see :mod:`.faults`."""
        kind = fault.kind
        if kind == "drop":
            # Abort: no close frame, no flush; the client sees the TCP connection vanish.
            if self._transport is not None:
                self._transport.abort()
        elif kind == "stall":
            seconds = fault.seconds
            self._stall_until = math.inf if seconds is None else self._loop.time() + seconds
            self._resumed.clear()
        elif kind == "resume":
            self.resume()
        elif kind == "garbage":
            self._inject_frame(fault.text.encode())
        elif kind == "oversize":
            self._inject_frame(oversize_frame(fault.size))
        elif kind in BOOK_FAULTS:
            self._add_book_fault(fault)
        elif kind == "close":
            self.close(fault.code, fault.reason)
        elif kind == "shutdown":
            self._spawn(self._shutdown(fault.seconds or 0.0))
        else:
            raise ValueError(f"not a connection fault: {kind}")

    def resume(self) -> None:
        """End a stall now (queued data then flows again)."""
        self._stall_until = 0.0
        self._resumed.set()

    @abc.abstractmethod
    def clear_book_faults(self) -> None:
        """Forget the pending book faults (``gap`` and, where supported, the others)."""

    @abc.abstractmethod
    def _inject_frame(self, frame: bytes) -> None:
        """Send an injected frame (``garbage``, ``oversize``) ahead of queued data, even
        during a stall."""

    @abc.abstractmethod
    def _add_book_fault(self, fault: Fault) -> None:
        """Arm a fault on the next book update (``fault.kind`` in ``BOOK_FAULTS``); raise
        ValueError for a kind this connection cannot apply."""

    @abc.abstractmethod
    async def _shutdown(self, delay: float) -> None:
        """The ``shutdown`` fault: announce it as the venue does, wait ``delay``, close."""


ConnT = TypeVar("ConnT", bound=BaseConnection)


class BaseSimulator(abc.ABC, Generic[ConnT]):
    """A local market-data server: an aiohttp app serving WebSockets of connection type
    ``ConnT``, plus the ``/_sim/*`` control endpoints.

    Subclasses add their routes (:meth:`_add_routes`), what runs while serving
    (:meth:`_on_started` / :meth:`_on_stopping`), the handshake checks
    (:meth:`_refuse_handshake`), the connection type (:meth:`_new_connection`), the faults they
    cannot express (:meth:`_check_fault`) and their rejection body (:meth:`_reject_body`).
    Use ``async with sim:`` or :meth:`start` / :meth:`stop`.

    Args:
        host, port: where to bind (port 0 picks a free one; read it back from :attr:`port`).
        rate: steps per second (the subclass says of what), validated by the subclass.
        replay_once: send captured frames once instead of looping.
        close_timeout: seconds :meth:`stop` waits for connections to close.
    """

    def __init__(
        self, *, host: str, port: int, rate: float, replay_once: bool, close_timeout: float
    ) -> None:
        self._host = host
        self._requested_port = port
        self._rate = float(rate)
        self._replay_once = replay_once
        self._close_timeout = close_timeout
        self._connections: dict[int, ConnT] = {}
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

    @property
    def _log_context(self) -> Mapping[str, str]:
        """Fields leading every lifecycle and fault log line (e.g. the exchange id)."""
        return {}

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Bind and start serving, then run :meth:`_on_started`."""
        if self._runner is not None:
            raise RuntimeError("simulator already started")
        app = web.Application()
        self._add_routes(app)
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
        await self._on_started()
        log.info(
            "simulator.started",
            **self._log_context,
            ws_url=self.ws_url,
            rest_url=self.rest_url,
            rate=self._rate,
        )

    async def stop(self) -> None:
        """Run :meth:`_on_stopping`, close every connection (1001) and release the port.
        Idempotent."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        await self._on_stopping()
        for conn in list(self._connections.values()):
            conn.close(CLOSE_GOING_AWAY, "Server stopping")
        handlers = list(self._handlers.values())
        if handlers:
            _, still_open = await asyncio.wait(handlers, timeout=self._close_timeout)
            for handler in still_open:
                handler.cancel()
        await runner.cleanup()
        log.info("simulator.stopped", **self._log_context)

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

    @abc.abstractmethod
    def _add_routes(self, app: web.Application) -> None:
        """Add the WebSocket route(s) (to :meth:`_handle_ws`) and the venue's REST routes."""

    async def _on_started(self) -> None:
        """Called once the port is bound (start producers, the adapter, ...)."""

    async def _on_stopping(self) -> None:
        """Called first in :meth:`stop`, before the connections are closed."""

    # ----------------------------------------------------------------- public API

    @property
    def port(self) -> int:
        """The bound TCP port (only after :meth:`start`)."""
        if self._port is None:
            raise RuntimeError("simulator not started")
        return self._port

    @property
    def _authority(self) -> str:
        host = "127.0.0.1" if self._host in ("", "0.0.0.0") else self._host
        host = "[::1]" if host == "::" else (f"[{host}]" if ":" in host else host)
        return f"{host}:{self.port}"

    @property
    @abc.abstractmethod
    def ws_url(self) -> str:
        """The WebSocket URL a feed connects to."""

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
        ``reject``: how many future handshakes will be refused). A ``conn`` that is not open
        matches nothing. Raises :class:`FaultError` for a fault this simulator cannot express
        (Binance spot: ``duplicate`` and ``bad_checksum``; venues: ``bad_checksum`` without
        book checksums, ``shutdown`` without a shutdown message)."""
        self._check_fault(fault)
        self._faults[fault.kind] += 1
        log.info("simulator.fault", **self._log_context, kind=fault.kind, conn=fault.conn)
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
        """End every stall, forget pending book faults (gaps, ...) and armed rejections."""
        self._reject_remaining, self._reject_fault = 0, None
        for conn in self._connections.values():
            conn.resume()
            conn.clear_book_faults()

    @abc.abstractmethod
    def _check_fault(self, fault: Fault) -> None:
        """Raise :class:`FaultError` when this simulator cannot express ``fault``."""

    # ----------------------------------------------------------------- HTTP handlers

    async def _handle_ws(self, request: web.Request) -> web.StreamResponse:
        if self._reject_remaining > 0 and self._reject_fault is not None:
            return self._reject(self._reject_fault)
        refused = self._refuse_handshake(request)
        if refused is not None:
            return refused
        # autoping off: the connection answers client pings and checks pongs itself.
        ws = web.WebSocketResponse(autoping=False, compress=False, timeout=self._close_timeout)
        await ws.prepare(request)
        conn_id = self._accepted
        self._accepted += 1
        conn = self._new_connection(conn_id, ws, request)
        self._connections[conn_id] = conn
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers[conn_id] = handler
        log.debug("simulator.connected", **self._log_context, conn=conn_id, path=request.path_qs)
        try:
            await conn.run()
        finally:
            del self._connections[conn_id]
            self._handlers.pop(conn_id, None)
            self._closed_stats.append(conn.stats)
            log.debug("simulator.disconnected", conn=conn_id, code=conn.stats.close_code)
        return ws

    def _refuse_handshake(self, request: web.Request) -> web.Response | None:
        """The error response for a handshake the venue refuses (bad streams, ...), or None
        to accept it."""
        return None

    @abc.abstractmethod
    def _new_connection(
        self, conn_id: int, ws: web.WebSocketResponse, request: web.Request
    ) -> ConnT:
        """The connection object serving an accepted (prepared) WebSocket."""

    def _reject(self, fault: Fault) -> web.Response:
        self._reject_remaining -= 1
        self._rejected += 1
        headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
        body, content_type = self._reject_body(fault.status)
        return web.Response(
            status=fault.status, body=body, headers=headers, content_type=content_type
        )

    @abc.abstractmethod
    def _reject_body(self, status: int) -> tuple[bytes, str]:
        """``(body, content type)`` of a handshake refused by a ``reject`` fault."""

    async def _handle_fault(self, request: web.Request) -> web.Response:
        try:
            fault = decode_fault(await request.read())
            affected = self.inject(fault)
        except FaultError as exc:
            return json_response(msgspec.json.encode({"error": str(exc)}), status=400)
        return json_response(msgspec.json.encode({"affected": affected}))

    async def _handle_stats(self, request: web.Request) -> web.Response:
        return json_response(msgspec.json.encode(self.stats))
