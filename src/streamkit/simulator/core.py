"""What every simulator shares, whatever protocol it speaks.

The Binance spot simulator (:mod:`.server`, :mod:`.connection`) and the venue simulators
(:mod:`.venue_server`) differ in their protocols, their outbound queues and how they produce
frames; this module holds the parts that are the same for both:

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
from collections.abc import Coroutine
from typing import Any, ClassVar, Final

from aiohttp import WSMsgType, web

from streamkit.simulator.faults import BOOK_FAULTS, Fault, oversize_frame
from streamkit.simulator.stats import ConnectionStats

CLOSE_GOING_AWAY: Final = 1001
CLOSE_POLICY_VIOLATION: Final = 1008
SLOW_CONSUMER_REASON: Final = "Slow consumer"
RATE_LIMIT_REASON: Final = "Too many requests"

# Pacers wake at most every 5 ms and emit the steps due since the last wake-up, so high rates
# cost a few wake-ups per second rather than one per step.
MIN_TICK: Final = 0.005


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
        self._id = conn_id
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
        return self._id

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
