"""One accepted WebSocket connection: Binance's per-connection rules, its outbound queue, faults.

Each connection owns three tasks besides aiohttp's handler task (which runs the read loop):

* the **writer** drains this connection's own queue, so a slow client backs up only itself
  (the producers never await a socket); beyond ``max_pending`` queued frames the connection
  is closed (1008 "Slow consumer"), a simulator policy, since Binance does not document one;
* the **heartbeat** sends a WS PING (payload: the time in ms, as Binance does) every
  ``ping_interval`` and closes with 1008 "Pong timeout" when a ping stays unanswered for
  ``pong_timeout``. Only a pong echoing an outstanding ping's payload counts (Binance:
  unsolicited pongs do not prevent disconnection);
* the **lifetime** timer closes the connection (1001) after ``max_lifetime`` seconds.

Rate limit: more than ``max_incoming_per_second`` counted frames within any 1 s window closes
the connection with 1008. Text, binary and client PING frames count, as do pongs that answer
nothing. Pongs that answer the server's own pings do not count (a deviation: Binance counts
them, but at its 20 s cadence they can never reach the limit, and exempting them lets tests
run the heartbeat at millisecond intervals).

The read loop, the rate limit, closing and the fault kinds are shared with the venue
simulators (:class:`~streamkit.simulator.core.BaseConnection`); this module adds Binance's
control messages, the single outbound queue, the heartbeat and the lifetime timer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from aiohttp import WSMsgType, web

from streamkit.simulator.binance import (
    CLOSE_GOING_AWAY,
    CLOSE_POLICY_VIOLATION,
    LIFETIME_REASON,
    PONG_TIMEOUT_REASON,
    SERVER_SHUTDOWN_STREAM,
    ControlError,
    ControlRequest,
    encode_result,
    parse_control,
    server_shutdown_payload,
    too_many_subscriptions,
    wrap_combined,
)
from streamkit.simulator.core import SLOW_CONSUMER_REASON, BaseConnection, now_ms
from streamkit.simulator.faults import Fault


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    """Per-connection limits (see :class:`~streamkit.simulator.server.BinanceSimulator`)."""

    ping_interval: float
    pong_timeout: float
    max_lifetime: float
    max_streams: int
    max_incoming_per_second: int
    max_pending: int


class StreamRegistry(Protocol):
    """Where a connection's subscriptions are published (the simulator's fan-out index)."""

    def subscribe(self, conn: ClientConnection, streams: Sequence[str]) -> None: ...

    def unsubscribe(self, conn: ClientConnection, streams: Sequence[str]) -> None: ...


class ClientConnection(BaseConnection):
    """A prepared WebSocket plus everything the Binance spot simulator tracks about it.

    The owner calls :meth:`run` from the aiohttp handler and returns when it does; producers
    call :meth:`deliver`; the simulator applies faults with :meth:`apply_fault`.
    """

    def __init__(
        self,
        conn_id: int,
        ws: web.WebSocketResponse,
        request: web.Request,
        *,
        combined: bool,
        streams: Sequence[str],
        registry: StreamRegistry,
        settings: ConnectionSettings,
    ) -> None:
        super().__init__(
            conn_id,
            ws,
            request,
            combined=combined,
            max_incoming_per_second=settings.max_incoming_per_second,
        )
        self.combined = combined
        self.subscriptions: dict[str, None] = {}  # insertion-ordered set
        self._registry = registry
        self._settings = settings
        self._initial_streams = list(dict.fromkeys(streams))
        self._queue: collections.deque[bytes] = collections.deque()
        self._gaps: list[str | None] = []  # pending "withhold next depth diff" faults
        self._last_ping_ms = 0

    # ----------------------------------------------------------------- lifecycle

    def _open(self) -> None:
        self._add_streams(self._initial_streams)
        self._spawn(self._write_loop())
        self._spawn(self._heartbeat_loop())
        if math.isfinite(self._settings.max_lifetime):
            self._spawn(self._expire())

    def _release(self) -> None:
        self._registry.unsubscribe(self, list(self.subscriptions))
        self.subscriptions.clear()

    def _drop_queued(self) -> None:
        self._queue.clear()

    # ----------------------------------------------------------------- inbound

    def _on_text(self, text: str) -> None:
        """A live control message (``SUBSCRIBE``, ...): answer it."""
        request = parse_control(text)
        if isinstance(request, ControlError):
            self._reply(request.encode())
            return
        handler = {
            "SUBSCRIBE": self._subscribe,
            "UNSUBSCRIBE": self._unsubscribe,
            "LIST_SUBSCRIPTIONS": self._list_subscriptions,
            "SET_PROPERTY": self._set_property,
            "GET_PROPERTY": self._get_property,
        }[request.method]
        handler(request)

    def _subscribe(self, request: ControlRequest) -> None:
        names = [p for p in dict.fromkeys(request.params) if isinstance(p, str)]
        new = [n for n in names if n not in self.subscriptions]
        if len(self.subscriptions) + len(new) > self._settings.max_streams:
            self._reply(too_many_subscriptions(request.id).encode())
            return
        # The ack goes out before the first event of the new streams: both are queued
        # synchronously, the ack first.
        self._reply(encode_result(None, request.id))
        self._add_streams(new)

    def _unsubscribe(self, request: ControlRequest) -> None:
        gone = [p for p in dict.fromkeys(request.params) if isinstance(p, str)]
        gone = [n for n in gone if n in self.subscriptions]
        for name in gone:
            del self.subscriptions[name]
        self.stats.subscriptions = len(self.subscriptions)
        self._registry.unsubscribe(self, gone)
        self._reply(encode_result(None, request.id))

    def _list_subscriptions(self, request: ControlRequest) -> None:
        self._reply(encode_result(list(self.subscriptions), request.id))

    def _set_property(self, request: ControlRequest) -> None:
        self.combined = bool(request.params[1])
        self.stats.combined = self.combined
        self._reply(encode_result(None, request.id))

    def _get_property(self, request: ControlRequest) -> None:
        self._reply(encode_result(self.combined, request.id))

    def _add_streams(self, names: Sequence[str]) -> None:
        for name in names:
            self.subscriptions[name] = None
        self.stats.subscriptions = len(self.subscriptions)
        self._registry.subscribe(self, names)

    # ----------------------------------------------------------------- outbound

    def deliver(self, frame: bytes, depth_symbol: str | None = None) -> None:
        """Queue one data frame (never blocks). ``depth_symbol`` marks a depth diff, which a
        pending ``gap`` fault may withhold."""
        if self.closing:
            return
        if depth_symbol is not None and self._gaps and self._take_gap(depth_symbol):
            return
        self._queue.append(frame)
        if len(self._queue) > self._settings.max_pending:
            self.close(CLOSE_POLICY_VIOLATION, SLOW_CONSUMER_REASON)
            return
        self._wake.set()

    def _reply(self, frame: bytes) -> None:
        self.deliver(frame)

    async def _write_loop(self) -> None:
        queue = self._queue
        try:
            while True:
                if not queue:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                if self._stall_until > self._loop.time():
                    await self._wait_while_stalled()
                    continue
                await self._ws.send_frame(queue.popleft(), WSMsgType.TEXT)
                self.stats.messages_sent += 1
        except ConnectionError:
            return  # the peer went away; the read loop notices and finishes

    async def _send_now(self, frame: bytes) -> None:
        """Write one frame ahead of the queue (used by injected faults)."""
        if self.closing:
            return
        with contextlib.suppress(ConnectionError):
            await self._ws.send_frame(frame, WSMsgType.TEXT)
            self.stats.messages_sent += 1

    # ----------------------------------------------------------------- heartbeat and lifetime

    async def _heartbeat_loop(self) -> None:
        interval, timeout = self._settings.ping_interval, self._settings.pong_timeout
        next_ping = self._loop.time() + interval
        while True:
            deadline = next_ping
            oldest = next(iter(self._unanswered_pings.values()), None)
            if oldest is not None:
                deadline = min(deadline, oldest + timeout)
            await asyncio.sleep(max(0.0, deadline - self._loop.time()))
            now = self._loop.time()
            oldest = next(iter(self._unanswered_pings.values()), None)
            if oldest is not None and now >= oldest + timeout:
                self.close(CLOSE_POLICY_VIOLATION, PONG_TIMEOUT_REASON)
                return
            if now >= next_ping:
                self._last_ping_ms = max(now_ms(), self._last_ping_ms + 1)  # unique payloads
                payload = str(self._last_ping_ms).encode()
                self._unanswered_pings[payload] = now
                try:
                    await self._ws.ping(payload)
                except ConnectionError:
                    return
                self.stats.pings_sent += 1
                next_ping += interval
                if next_ping <= now:  # fell behind (blocked loop): don't burst missed pings
                    next_ping = now + interval

    async def _expire(self) -> None:
        await asyncio.sleep(self._settings.max_lifetime)
        self.close(CLOSE_GOING_AWAY, LIFETIME_REASON)

    # ----------------------------------------------------------------- faults

    # (the fault kinds themselves are applied by BaseConnection.apply_fault)

    def _inject_frame(self, frame: bytes) -> None:
        self._spawn(self._send_now(frame))

    def _add_book_fault(self, fault: Fault) -> None:
        if fault.kind != "gap":  # the server refuses the others before they get here
            raise ValueError(f"not a connection fault: {fault.kind}")
        self._gaps.append(None if fault.symbol is None else fault.symbol.upper())

    def clear_book_faults(self) -> None:
        self._gaps.clear()

    async def _wait_while_stalled(self) -> None:
        remaining = self._stall_until - self._loop.time()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(None if math.isinf(remaining) else remaining):
                await self._resumed.wait()

    def _take_gap(self, symbol: str) -> bool:
        for index, wanted in enumerate(self._gaps):
            if wanted is None or wanted == symbol:
                del self._gaps[index]
                return True
        return False

    async def _shutdown(self, delay: float) -> None:
        payload = server_shutdown_payload(now_ms()).encode()
        frame = wrap_combined(SERVER_SHUTDOWN_STREAM, payload) if self.combined else payload
        await self._send_now(frame)
        await asyncio.sleep(delay)
        self.close(CLOSE_GOING_AWAY)
