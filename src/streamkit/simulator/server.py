"""The simulator itself: an aiohttp server speaking Binance spot's market-stream protocol.

Endpoints (``BinanceSimulator.rest_url`` is the base):

* ``GET /stream?streams=a/b`` - WebSocket, combined streams (``{"stream":..,"data":..}``);
* ``GET /ws`` and ``GET /ws/<a>/<b>`` - WebSocket, raw payloads;
* ``GET /api/v3/depth?symbol=NKNUSDT&limit=N`` - the simulator's current book, Binance REST JSON;
* ``GET /api/v3/ping``, ``GET /api/v3/time`` - as Binance;
* ``POST /_sim/fault`` (JSON :class:`~streamkit.simulator.faults.Fault`) -> ``{"affected": n}``;
* ``GET /_sim/stats`` -> :class:`~streamkit.simulator.stats.SimulatorStats` as JSON;
* ``GET /_sim/book?symbol=NKNUSDT`` -> the authoritative book as
  ``{"last_update_id":..,"bids":{price:qty},"asks":{..}}``.

Data flow: one producer task per symbol steps its :class:`~.replay.SymbolFeed` ``rate`` times a
second and fans each event out to the subscribed connections' own queues, so no producer
ever waits for a socket. Frames are encoded once per event (and wrapped once per stream
name for combined-stream subscribers), not once per connection.

The server shell (lifecycle, connection bookkeeping, stats, fault injection, the ``/_sim/fault``
and ``/_sim/stats`` endpoints) is :class:`~streamkit.simulator.core.BaseSimulator`, shared with
the venue simulators; this module adds what is Binance spot's own.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from typing import Final, TypedDict, Unpack

import msgspec
from aiohttp import web

from streamkit.simulator.binance import (
    DEFAULT_MAX_LIFETIME,
    DEFAULT_PING_INTERVAL,
    DEFAULT_PONG_TIMEOUT,
    MAX_INCOMING_MESSAGES_PER_SECOND,
    MAX_STREAMS_PER_CONNECTION,
    Channel,
    is_valid_stream_name,
    parse_depth_limit,
    parse_stream_name,
    rest_error,
    split_streams,
    stream_names,
    wrap_combined,
)
from streamkit.simulator.book import BookState
from streamkit.simulator.capture import load_capture
from streamkit.simulator.connection import ClientConnection, ConnectionSettings
from streamkit.simulator.core import BaseSimulator, Pacer, json_response, now_ms
from streamkit.simulator.faults import CONNECTION_FAULTS, Fault, FaultError
from streamkit.simulator.replay import SymbolFeed

DEFAULT_RATE: Final = 10.0
"""Events per second on each stream of each symbol."""

# Binance REST error messages.
_TOO_MANY_REQUESTS: Final = "Too many requests; please use the websocket for live updates."
_MISSING_SYMBOL: Final = "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
_BAD_LIMIT: Final = "Illegal characters found in parameter 'limit'; legal range is '1-5000'."


_VENUE_OPTIONS: Final = frozenset({"replay_once", "max_pending", "close_timeout"})


class SimulatorOptions(TypedDict, total=False):
    """Keyword options of :class:`BinanceSimulator` besides host, port and rate."""

    ping_interval: float
    pong_timeout: float
    max_lifetime: float
    max_streams: int
    max_incoming_per_second: int
    max_pending: int
    replay_once: bool
    aliases: Mapping[str, str]
    close_timeout: float


class BinanceSimulator(BaseSimulator[ClientConnection]):
    """A local, offline Binance spot market-data server replaying captured frames.

    Args:
        host: interface to bind (default loopback only).
        port: TCP port; 0 picks a free one (read it back from :attr:`port` after start).
        rate: events per second on *each stream of each symbol* (a connection subscribed to
            ``nknusdt@depth@100ms`` and ``nknusdt@bookTicker`` at ``rate=100`` receives about
            200 messages/s).
        ping_interval: seconds between WS PINGs (Binance: 20).
        pong_timeout: close (1008) when a ping stays unanswered this long (Binance: 60).
        max_lifetime: seconds after which a connection is closed (1001); Binance: 24 h.
        max_streams: streams per connection (Binance: 1024); beyond, SUBSCRIBE is refused.
        max_incoming_per_second: counted client frames per second before the connection is
            closed (Binance: 5; see :mod:`.connection` for what counts).
        max_pending: frames queued for one client before it is closed as a slow consumer.
        replay_once: send each captured sequence once, byte-exact, in file order (a symbol's
            replay starts when its first stream is subscribed), instead of looping forever.
        aliases: extra symbols served from another symbol's capture,
            e.g. ``{"BTCUSDT": "NKNUSDT"}``; each gets its own book and ids.
        close_timeout: seconds :meth:`stop` waits for connections to close.

    Use ``async with BinanceSimulator(...) as sim:`` or :meth:`start` / :meth:`stop`.
    Lifecycle, stats, fault injection and the ``/_sim/fault`` and ``/_sim/stats`` endpoints
    come from :class:`~streamkit.simulator.core.BaseSimulator`.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rate: float = DEFAULT_RATE,
        ping_interval: float = DEFAULT_PING_INTERVAL,
        pong_timeout: float = DEFAULT_PONG_TIMEOUT,
        max_lifetime: float = DEFAULT_MAX_LIFETIME,
        max_streams: int = MAX_STREAMS_PER_CONNECTION,
        max_incoming_per_second: int = MAX_INCOMING_MESSAGES_PER_SECOND,
        max_pending: int = 100_000,
        replay_once: bool = False,
        aliases: Mapping[str, str] | None = None,
        close_timeout: float = 5.0,
    ) -> None:
        if not rate > 0 or not math.isfinite(rate):
            raise ValueError("rate must be a positive number of events per second")
        if not (ping_interval > 0 and pong_timeout > 0 and max_lifetime > 0):
            raise ValueError("ping_interval, pong_timeout and max_lifetime must be > 0")
        if max_streams < 1 or max_incoming_per_second < 1 or max_pending < 1:
            raise ValueError("max_streams, max_incoming_per_second and max_pending must be >= 1")
        super().__init__(
            host=host,
            port=port,
            rate=rate,
            replay_once=replay_once,
            close_timeout=close_timeout,
        )
        self._settings = ConnectionSettings(
            ping_interval=ping_interval,
            pong_timeout=pong_timeout,
            max_lifetime=max_lifetime,
            max_streams=max_streams,
            max_incoming_per_second=max_incoming_per_second,
            max_pending=max_pending,
        )

        capture = load_capture()
        self._feeds: dict[str, SymbolFeed] = {
            symbol: SymbolFeed(symbol, source, replay_once=replay_once)
            for symbol, source in capture.symbols.items()
        }
        for alias, source_symbol in (aliases or {}).items():
            source = capture.symbols.get(source_symbol.upper())
            if source is None:
                known = ", ".join(sorted(capture.symbols))
                raise ValueError(f"alias source {source_symbol!r} is not captured ({known})")
            self._feeds[alias.upper()] = SymbolFeed(alias, source, replay_once=replay_once)
        # symbol -> channel -> the stream names its events are published under
        self._stream_names: dict[str, dict[Channel, tuple[str, ...]]] = {
            symbol: {ch: stream_names(symbol, ch) for ch in feed.channels}
            for symbol, feed in self._feeds.items()
        }

        self._subscribers: dict[str, dict[int, ClientConnection]] = {}
        self._producers: dict[str, asyncio.Task[None]] = {}

    # ----------------------------------------------------------------- lifecycle

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_get("/stream", self._handle_ws)
        app.router.add_get("/ws", self._handle_ws)
        app.router.add_get("/ws/{streams:.+}", self._handle_ws)
        app.router.add_get("/api/v3/depth", self._handle_depth)
        app.router.add_get("/api/v3/ping", self._handle_ping)
        app.router.add_get("/api/v3/time", self._handle_time)
        app.router.add_get("/_sim/book", self._handle_book)

    async def _on_started(self) -> None:
        """In loop mode every symbol's producer starts now (replay-once: on subscription)."""
        if not self._replay_once:
            for feed in self._feeds.values():
                self._start_producer(feed)

    async def _on_stopping(self) -> None:
        """Stop the producers before the connections are closed."""
        producers = list(self._producers.values())
        self._producers.clear()
        for task in producers:
            task.cancel()
        await asyncio.gather(*producers, return_exceptions=True)

    # ----------------------------------------------------------------- public API

    @property
    def ws_url(self) -> str:
        """Combined-stream WebSocket URL, ``ws://127.0.0.1:PORT/stream`` (add
        ``?streams=a/b`` or SUBSCRIBE after connecting)."""
        return f"ws://{self._authority}/stream"

    @property
    def raw_ws_url(self) -> str:
        """Raw-stream WebSocket URL, ``ws://127.0.0.1:PORT/ws`` (or ``/ws/<stream>``)."""
        return f"ws://{self._authority}/ws"

    @property
    def symbols(self) -> tuple[str, ...]:
        """Served symbols (uppercase), captured ones first, then aliases."""
        return tuple(self._feeds)

    def book(self, symbol: str) -> BookState:
        """A copy of ``symbol``'s authoritative book; KeyError for a symbol without one."""
        feed = self._feeds.get(symbol.upper())
        if feed is None or feed.book is None:
            raise KeyError(f"no order book for {symbol!r}")
        return feed.book.state()

    def _check_fault(self, fault: Fault) -> None:
        """Refuse ``duplicate`` / ``bad_checksum``, which only the venue simulators
        (:func:`~streamkit.simulator.make_simulator`) do."""
        if fault.kind not in CONNECTION_FAULTS and fault.kind != "reject":
            raise FaultError(f"the Binance spot simulator does not support {fault.kind!r}")

    # ----------------------------------------------------------------- fan-out (StreamRegistry)

    def subscribe(self, conn: ClientConnection, streams: Sequence[str]) -> None:
        for name in streams:
            self._subscribers.setdefault(name, {})[conn.id] = conn
            if self._replay_once:
                parsed = parse_stream_name(name)
                feed = None if parsed is None else self._feeds.get(parsed[0])
                if feed is not None and parsed is not None and parsed[1] in feed.channels:
                    self._start_producer(feed)

    def unsubscribe(self, conn: ClientConnection, streams: Sequence[str]) -> None:
        for name in streams:
            subscribers = self._subscribers.get(name)
            if subscribers is not None:
                subscribers.pop(conn.id, None)
                if not subscribers:
                    del self._subscribers[name]

    def _start_producer(self, feed: SymbolFeed) -> None:
        if feed.symbol not in self._producers and self._runner is not None:
            self._producers[feed.symbol] = asyncio.create_task(self._produce(feed))

    async def _produce(self, feed: SymbolFeed) -> None:
        """Step ``feed`` ``rate`` times per second (on average) until it finishes."""
        pacer = Pacer(self._rate, asyncio.get_running_loop())
        while not feed.finished:
            due = pacer.due()
            if due > 0:
                wanted = self._wanted(feed)
                now = now_ms()
                for _ in range(due):
                    if feed.finished:
                        break
                    self._dispatch(feed, feed.step(now, wanted))
            await asyncio.sleep(pacer.tick)

    def _wanted(self, feed: SymbolFeed) -> set[Channel]:
        return {
            channel
            for channel, names in self._stream_names[feed.symbol].items()
            if any(name in self._subscribers for name in names)
        }

    def _dispatch(self, feed: SymbolFeed, events: list[tuple[Channel, str]]) -> None:
        names_by_channel = self._stream_names[feed.symbol]
        for channel, payload in events:
            raw = payload.encode()
            depth_symbol = feed.symbol if channel is Channel.DEPTH else None
            for name in names_by_channel[channel]:
                subscribers = self._subscribers.get(name)
                if not subscribers:
                    continue
                wrapped: bytes | None = None
                for conn in tuple(subscribers.values()):
                    if conn.combined:
                        if wrapped is None:
                            wrapped = wrap_combined(name, raw)
                        conn.deliver(wrapped, depth_symbol)
                    else:
                        conn.deliver(raw, depth_symbol)

    # ----------------------------------------------------------------- HTTP handlers

    @staticmethod
    def _requested_streams(request: web.Request) -> tuple[bool, Sequence[str]]:
        """``(combined, stream names)`` of a handshake: ``/stream?streams=a/b`` is combined,
        ``/ws/a/b`` raw."""
        if request.path == "/stream":
            return True, split_streams(request.query.get("streams", ""))
        return False, split_streams(request.match_info.get("streams", ""))

    def _refuse_handshake(self, request: web.Request) -> web.Response | None:
        _, streams = self._requested_streams(request)
        if not all(is_valid_stream_name(s) for s in streams):
            return json_response(rest_error(2, "Invalid request: invalid stream"), status=400)
        if len(set(streams)) > self._settings.max_streams:
            return json_response(rest_error(4, "Too many subscriptions"), status=400)
        return None

    def _new_connection(
        self, conn_id: int, ws: web.WebSocketResponse, request: web.Request
    ) -> ClientConnection:
        combined, streams = self._requested_streams(request)
        return ClientConnection(
            conn_id,
            ws,
            request,
            combined=combined,
            streams=streams,
            registry=self,
            settings=self._settings,
        )

    def _reject_body(self, status: int) -> tuple[bytes, str]:
        if status == 429:  # Binance's body for its request-rate limit
            return rest_error(-1003, _TOO_MANY_REQUESTS), "application/json"
        return rest_error(-1, f"HTTP {status}"), "application/json"

    async def _handle_depth(self, request: web.Request) -> web.Response:
        symbol = request.query.get("symbol")
        if not symbol:
            return json_response(
                rest_error(-1102, _MISSING_SYMBOL),
                status=400,
            )
        limit = parse_depth_limit(request.query.get("limit"))
        if limit is None:
            return json_response(
                rest_error(-1100, _BAD_LIMIT),
                status=400,
            )
        feed = self._feeds.get(symbol)
        if feed is None or feed.book is None:
            return json_response(rest_error(-1121, "Invalid symbol."), status=400)
        return json_response(feed.book.rest_body(limit))

    async def _handle_ping(self, request: web.Request) -> web.Response:
        return json_response(b"{}")

    async def _handle_time(self, request: web.Request) -> web.Response:
        return json_response(msgspec.json.encode({"serverTime": now_ms()}))

    async def _handle_book(self, request: web.Request) -> web.Response:
        try:
            state = self.book(request.query.get("symbol", ""))
        except KeyError:
            return json_response(rest_error(-1121, "Invalid symbol."), status=400)
        return json_response(msgspec.json.encode(state))


async def run_simulator(
    host: str = "127.0.0.1",
    port: int = 0,
    rate: float = DEFAULT_RATE,
    *,
    quiet: bool = False,
    exchange: str = "binance",
    **options: Unpack[SimulatorOptions],
) -> None:
    """Run a simulator until cancelled (the ``streamkit simulate`` entry point).

    ``exchange`` picks the venue (default Binance spot; any id of
    :data:`streamkit.simulator.EXCHANGES`); other venues accept ``replay_once``,
    ``max_pending`` and ``close_timeout`` of ``options``. Logs ``simulator.started`` with the
    URLs and, unless ``quiet``, prints them with a ready to paste example; stops cleanly
    (connections closed with 1001) on cancellation.
    """
    if exchange not in ("binance", "binance_spot"):
        from streamkit.simulator.factory import make_simulator  # here: factory imports us

        venue_options = {k: v for k, v in options.items() if k in _VENUE_OPTIONS}
        venue = make_simulator(exchange, host=host, port=port, rate=rate, **venue_options)
        async with venue:
            if not quiet:
                print(
                    f"streamkit simulator ({exchange} protocol) is running\n"
                    f"  WebSocket: {venue.ws_url}\n"
                    f"  REST:      {venue.rest_url}",
                    flush=True,
                )
            await asyncio.Event().wait()
        return
    async with BinanceSimulator(host=host, port=port, rate=rate, **options) as sim:
        if not quiet:
            print(
                "streamkit simulator (Binance spot protocol) is running\n"
                f"  WebSocket: {sim.ws_url}?streams=nknusdt@depth@100ms/nknusdt@bookTicker\n"
                f"  REST:      {sim.rest_url}/api/v3/depth?symbol=NKNUSDT&limit=100\n"
                f"  symbols:   {', '.join(sim.symbols)}",
                flush=True,
            )
        await asyncio.Event().wait()  # until cancelled; leaving the block stops the server
