"""The connection actor: one asyncio task that owns one WebSocket connection.

It is the only code that touches its transport. Per connection attempt it: connects (with a
timeout, inside the exchange's connection-rate limit), sends the subscriptions paced to the
venue's message limit and tracks their acks in a ledger, reads frames in batches, hands them
to the feed's sans-I/O protocol, publishes the records, answers the protocol's requests (REST
snapshots, sends, reconnects), sends heartbeats and checks their answers, and watches for
staleness (data frames only: heartbeats do not prove the stream is alive). When anything
fails it publishes ``disconnected`` then ``reconnecting`` status records, waits a capped,
fully jittered backoff, and starts over with a fresh protocol object, replaying every
subscription. It never gives up on transport or protocol trouble: only cancellation stops
it, or an exception from plugin code outside ``on_message`` (a bug: ``run`` publishes
``disconnected`` naming it, then raises it for the supervisor to restart the actor).

User code never runs on this task: records go to the bus, whose subscribers are other tasks.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import operator
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import structlog

from streamkit.channel import Bus
from streamkit.errors import ConnectError, ConnectionClosed, TransportError
from streamkit.feed import (
    Action,
    ConnectionPlan,
    Feed,
    FeedProtocol,
    HttpGet,
    Output,
    Reconnect,
    ResyncBook,
    Send,
    SubscribeRequest,
)
from streamkit.model import Book, Liquidation, Record, Status, StatusEvent, Trade
from streamkit.pacing import Backoff, ConnectLimiter, Pacer
from streamkit.stats import Histogram
from streamkit.transport.base import Frame, PushTransport, Transport
from streamkit.transport.curl_common import redact
from streamkit.transport.options import TransportOptions

log = structlog.get_logger(__name__)

TransportFactory = Callable[[str, TransportOptions], Transport]
HttpFetch = Callable[[str], Awaitable[tuple[int, bytes]]]
"""GET a URL; returns ``(status, body)``, status 0 when the request itself failed."""
FrameTap = Callable[[str, bytes, int], None]
"""``(connection name, frame, recv_ts ns)``: sees every frame a connection reads."""

PLANNED_RECONNECT_MARGIN = 60.0
"""Reconnect this long before a venue's documented connection lifetime runs out."""


MIN_HEALTHY_SESSION = 5.0
"""A session shorter than this that ends in a requested reconnect is treated as a failure."""


class ActorState(enum.StrEnum):
    CONNECTING = "connecting"
    SUBSCRIBING = "subscribing"
    STREAMING = "streaming"
    BACKING_OFF = "backing_off"
    STOPPED = "stopped"


class SubState(enum.StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"


@dataclass
class Ledger:
    """Subscriptions of one connection and whether the venue confirmed them. Built from the
    feed's plan once; every reconnect marks all of them pending and replays them."""

    requests: dict[str, SubscribeRequest] = field(default_factory=dict)
    states: dict[str, SubState] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)

    def reset(self, requests: list[SubscribeRequest]) -> None:
        self.requests = {r.key: r for r in requests}
        self.states = dict.fromkeys(self.requests, SubState.PENDING)
        self.reasons = {}

    def confirm(self, key: str) -> bool:
        if self.states.get(key) is SubState.PENDING:
            self.states[key] = SubState.CONFIRMED
            return True
        return False

    def reject(self, key: str, reason: str) -> bool:
        if key in self.states:
            self.states[key] = SubState.REJECTED
            self.reasons[key] = reason
            return True
        return False

    @property
    def pending(self) -> int:
        return sum(1 for s in self.states.values() if s is SubState.PENDING)

    def stream_count(self, state: SubState) -> int:
        return sum(len(self.requests[k].streams) for k, s in self.states.items() if s is state)


@dataclass
class ActorCounters:
    connects: int = 0
    reconnects: int = 0
    messages: int = 0
    bytes: int = 0
    records: int = 0
    decode_errors: int = 0
    stale: int = 0
    pong_timeouts: int = 0
    last_data_ns: int = 0


class _Stale(Exception):
    pass


class _PongTimeout(Exception):
    pass


class _SubscribeTimeout(Exception):
    pass


class _PlannedReconnect(Exception):
    def __init__(self, reason: str, *, immediate: bool = True) -> None:
        super().__init__(reason)
        self.immediate = immediate


class _WarmupAborted(Exception):
    pass


MAX_HANDOVER_BUFFER = 200_000
"""Records a warming successor may hold back before the handover is abandoned."""

_frame_data: Callable[[Frame], bytes] = operator.itemgetter(0)  # Frame.data, in C


@dataclass
class _Link:
    """A successor connection being warmed up for a make-before-break handover."""

    transport: Transport
    protocol: FeedProtocol
    ledger: Ledger
    reason: str
    buffer: list[Record] = field(default_factory=list)
    http_pending: list[HttpGet] = field(default_factory=list)
    saw_data: bool = False

    def ready(self, book_symbols: set[str]) -> bool:
        if self.ledger.pending or not self.saw_data or self.http_pending:
            return False
        snapshotted = {r.symbol for r in self.buffer if isinstance(r, Book) and r.snapshot}
        return book_symbols <= snapshotted


class _Handover(Exception):
    """A control-flow signal: the warmed-up successor takes over."""

    def __init__(self, link: _Link) -> None:
        super().__init__(link.reason)
        self.link = link
        self.reason = link.reason


class ConnectionActor:
    """Runs one connection of a feed forever (until cancelled)."""

    def __init__(
        self,
        feed: Feed,
        plan: ConnectionPlan,
        bus: Bus,
        *,
        transport_factory: TransportFactory,
        http_fetch: HttpFetch,
        connect_limiter: ConnectLimiter,
        backoff: Backoff | None = None,
        batch_size: int = 256,
    ) -> None:
        self.feed = feed
        self.plan = plan
        self.bus = bus
        self.name = f"{feed.label}/{plan.index}"
        self.config = feed.config
        self.transport_factory = transport_factory
        self.http_fetch = http_fetch
        self.connect_limiter = connect_limiter
        self.backoff = backoff or Backoff(feed.config.reconnect)
        self.batch_size = batch_size
        self.state = ActorState.CONNECTING
        self.ledger = Ledger()
        self.counters = ActorCounters()
        self.records_by_type: collections.Counter[type[Record]] = collections.Counter()
        self.latency = Histogram()
        """Exchange event time to local receive time, seconds (sampled once per batch)."""
        self._decode_error_logged = False
        self._last_pong = 0.0
        self._log = log.bind(feed=feed.label, connection=self.name)
        self._published_ids: set[tuple[str | None, str]] | None = None
        """Ids of trades/liquidations published while a successor warms up (for dedup)."""
        self._publishing = 0
        """Publishes of the current session in progress (a handover waits for them)."""
        self._successor: _Link | None = None
        """A ready successor waiting to take over; owned by the actor from then on."""
        self._push: tuple[PushTransport, FeedProtocol, Output] | None = None
        """Push mode: the session's transport, protocol and Output (see _read_pushed)."""
        self._push_wake: asyncio.Future[None] | None = None
        """Push mode: set while the reader task is idle; the receiver wakes it."""
        self._push_error: Exception | None = None
        """Push mode: an error the receiver met, raised by the reader task."""
        self._in_receiver = False
        self.frame_tap: FrameTap | None = None
        """Called with ``(connection name, frame bytes, recv_ts ns)`` for every frame read,
        before decoding (the recorder uses it). Read once per session: set it before the
        actor runs. Must be cheap and must not raise."""

    # --- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, stream, reconnect, forever. Returns only by cancellation; raises what
        plugin code raised outside ``on_message`` (see the module docstring)."""
        carry: _Link | None = None
        try:
            while True:
                outcome = await self._attempt(carry)
                if isinstance(outcome, _Link):
                    carry = outcome  # a warmed-up successor takes over: no backoff, no gap
                    continue
                carry, retry_after = None, outcome
                self.state = ActorState.BACKING_OFF
                self.counters.reconnects += 1
                if retry_after == 0.0:
                    delay = 0.0  # planned (lifetime, server shutdown): no backoff
                else:
                    delay = max(self.backoff.next_delay(), retry_after or 0.0)
                await self._status(StatusEvent.RECONNECTING, f"reconnecting in {delay:.2f}s")
                await asyncio.sleep(delay)
        finally:
            self.state = ActorState.STOPPED

    async def _attempt(self, carry: _Link | None = None) -> float | _Link | None:
        """One connection's life. Returns a minimum delay before the next attempt (the
        server's Retry-After, or 0 for a planned reconnect), None for plain backoff, or the
        warmed-up successor connection that takes over from this one (``carry`` on the next
        call)."""
        if carry is None:
            self.state = ActorState.CONNECTING
            protocol = self.feed.protocol(self.plan, self.name)
            transport = self.transport_factory(protocol.url(), self.config.transport)
        else:
            protocol, transport = carry.protocol, carry.transport
        connected_at: float | None = None
        try:
            if carry is None:
                await self.connect_limiter.acquire()
                try:
                    async with asyncio.timeout(self.config.connect_timeout):
                        await transport.connect()
                except TimeoutError:
                    raise ConnectError(
                        f"connect timed out after {self.config.connect_timeout}s"
                    ) from None
                # redacted: a venue URL's query or userinfo may carry a key or listen token
                await self._status(StatusEvent.CONNECTED, redact(protocol.url()))
            else:
                await self._take_over(carry)
            connected_at = time.monotonic()
            self.counters.connects += 1
            await self._session(transport, protocol, carry)
            return None  # pragma: no cover - _session only ends by raising
        except _Handover as handover:
            self._successor = None  # the next attempt owns it now
            self._log.info("handed over to a new connection", reason=handover.reason)
            return handover.link
        except ConnectError as exc:
            self._log.warning("connect failed", error=str(exc), status=exc.status)
            await self._status(StatusEvent.ERROR, f"connect failed: {exc}")
            if exc.status in (403, 418):
                # The venue is telling us we are banned or misbehaving: back off hard.
                self.backoff.attempt = max(self.backoff.attempt, 32)
                return self.config.reconnect.max
            return exc.retry_after
        except _PlannedReconnect as exc:
            await self._disconnected(f"planned reconnect: {exc}")
            lived = time.monotonic() - (connected_at or time.monotonic())
            # Reconnect at once after a healthy session (lifetime limit, server shutdown);
            # a connection that asks to reconnect right after connecting backs off normally,
            # so a book that never verifies cannot turn into a reconnect loop.
            return 0.0 if exc.immediate and lived >= MIN_HEALTHY_SESSION else None
        except (_Stale, _PongTimeout, _SubscribeTimeout, TransportError) as exc:
            detail = _describe(exc)
            if isinstance(exc, ConnectionClosed) and exc.code == 1013:
                detail += " (server asked to try again later)"
            self._log.warning("connection lost", reason=detail)
            await self._disconnected(detail)
            return None
        except Exception as exc:
            # Plugin code outside on_message (on_http, resync, on_connected, ...) raised: a
            # bug, left to the supervisor (restart, escalation), but consumers must still
            # learn that this connection and its data are gone, as for any other ending.
            await self._disconnected(f"plugin error: {type(exc).__name__}: {exc}")
            raise
        finally:
            if connected_at is not None and time.monotonic() - connected_at >= (
                self.config.reconnect.reset_after
            ):
                self.backoff.reset()
            with contextlib.suppress(Exception):
                await transport.close()
            # A successor that was ready when this session ended some other way.
            orphan, self._successor = self._successor, None
            if orphan is not None:
                with contextlib.suppress(Exception):
                    await orphan.transport.close()

    async def _disconnected(self, detail: str) -> None:
        await self._status(StatusEvent.DISCONNECTED, detail)

    # --- one live session --------------------------------------------------------------------

    async def _session(
        self, transport: Transport, protocol: FeedProtocol, resumed: _Link | None = None
    ) -> None:
        out = Output()
        if resumed is None:
            protocol.on_connected(time.time_ns(), out)
            self.ledger.reset(protocol.subscriptions())
            self.state = ActorState.SUBSCRIBING if self.ledger.requests else ActorState.STREAMING
        else:
            # Already subscribed and synced during the warm-up; REST requests it still had in
            # flight were cancelled with the old session's tasks, so ask again.
            self.ledger = resumed.ledger
            self.state = ActorState.STREAMING
            out.actions.extend(resumed.http_pending)
        self.counters.last_data_ns = time.monotonic_ns()
        self._last_pong = time.monotonic()
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                await self._dispatch(transport, protocol, out)
                if resumed is None:
                    tasks.create_task(self._subscribe(transport))
                tasks.create_task(self._watchdog(transport, protocol))
                await self._read(transport, protocol)
        except BaseExceptionGroup as group:
            # The first real failure of any session task ends the session; report that one.
            raise _first_failure(group) from None

    async def _subscribe(self, transport: Transport) -> None:
        pacer = Pacer(self.feed.limits.max_messages_per_second)
        for request in list(self.ledger.requests.values()):
            await pacer.wait()
            await transport.send(request.payload)
        deadline = time.monotonic() + self.config.connect_timeout
        while self.ledger.pending:
            if time.monotonic() > deadline:
                raise _SubscribeTimeout(
                    f"{self.ledger.pending} subscription request(s) not acknowledged within "
                    f"{self.config.connect_timeout}s"
                )
            await asyncio.sleep(0.05)

    async def _read(self, transport: Transport, protocol: FeedProtocol) -> None:
        """The hot path: take a batch, decode it, publish its records.

        ``recv_ts`` is read once per batch, when the batch is taken from the transport:
        every frame in it had arrived by then (a batch is what the transport read without
        waiting), so the stamp is an upper bound on each frame's arrival that costs one clock
        read per batch instead of one per frame.

        A :class:`~streamkit.transport.base.PushTransport` (the default libcurl transport) is
        read in push mode (:meth:`_read_pushed`): batches are decoded and published from the
        transport's reader callback, without waking this task, whenever that can finish
        without waiting."""
        if isinstance(transport, PushTransport):
            await self._read_pushed(transport, protocol)
            return
        out = Output()
        records = out.records
        while True:
            frames = await transport.recv_batch(self.batch_size)
            if self._successor is not None:
                # Ready to hand over: take no new batch (the successor carries these frames
                # too), so that the handover never cuts a publish short.
                raise _Handover(self._successor)
            self._decode_batch(frames, protocol, out)
            if out.actions or out.acks or out.rejects or out.pong or not records:
                await self._dispatch(transport, protocol, out)
                continue
            # Records only: what _dispatch does for them, inlined (this runs per batch).
            self._account(records)
            if not self.bus.try_publish_many(records):  # a block subscriber may be full
                self._publishing += 1
                try:
                    await self.bus.publish_many(records)
                finally:
                    self._publishing -= 1
            if self._published_ids is not None:
                self._published_ids.update(_event_ids(records))
            records.clear()

    def _decode_batch(self, frames: list[Frame], protocol: FeedProtocol, out: Output) -> None:
        """Decode one batch into ``out`` (counting frames and bytes, feeding the frame tap,
        turning decode failures into ``decode_error`` status records)."""
        recv_ts = time.time_ns()
        counters = self.counters
        tap = self.frame_tap
        if tap is not None:
            for frame in frames:
                tap(self.name, frame[0], recv_ts)
        saw_data = protocol.on_frames(frames, recv_ts, out, self._decode_error)
        counters.messages += len(frames)
        counters.bytes += sum(map(len, map(_frame_data, frames)))  # in C: no loop per frame
        if saw_data:
            counters.last_data_ns = time.monotonic_ns()

    def _account(self, records: list[Record]) -> None:
        """Count records about to be published and sample their latency (once per batch)."""
        self.counters.records += len(records)
        if len(records) == 1:
            self.records_by_type[type(records[0])] += 1
        else:
            self.records_by_type.update(map(type, records))
        last = records[-1]
        if last.ts is not None:
            self.latency.observe((last.recv_ts - last.ts) / 1e9)

    async def _read_pushed(self, transport: PushTransport, protocol: FeedProtocol) -> None:
        """Push-mode reading: the transport's reader callback runs :meth:`_on_frames`, which
        decodes and publishes a batch on the spot (saving a task switch per batch) when it
        yields only records and every ``block`` subscriber has room
        (:meth:`~streamkit.channel.Bus.try_publish_many`). Anything else (acks, actions, a
        full subscriber, a failure, a handover) wakes this task, which finishes that batch
        the ordinary way, catches up with what queued meanwhile, then goes idle again. Frames
        stay in order: the callback only works while this task is idle."""
        out = Output()
        loop = asyncio.get_running_loop()
        self._push = (transport, protocol, out)
        transport.set_receiver(self._on_frames)
        try:
            while True:
                if out.records or out.actions or out.acks or out.rejects or out.pong:
                    await self._dispatch(transport, protocol, out)
                error, self._push_error = self._push_error, None
                if error is not None:
                    raise error
                if self._successor is not None:
                    raise _Handover(self._successor)  # see _read
                frames = transport.take_batch(self.batch_size)  # raises once the link is gone
                if frames:
                    self._decode_batch(frames, protocol, out)
                    continue
                wake = self._push_wake = loop.create_future()
                try:
                    await wake
                finally:
                    self._push_wake = None
        finally:
            transport.set_receiver(None)
            self._push = None

    def _on_frames(self) -> None:
        """Push-mode receiver (see :meth:`_read_pushed`), called by the transport's reader
        callback. Never raises: what it cannot finish, the woken task does."""
        wake = self._push_wake
        if wake is None or wake.done() or self._push is None or self._in_receiver:
            # The task is busy (it takes what is queued when it is done), or a transport
            # called back from inside take_batch (the running receiver takes those frames).
            return
        transport, protocol, out = self._push
        records = out.records
        self._in_receiver = True
        try:
            while self._successor is None:
                frames = transport.take_batch(self.batch_size)
                if not frames:
                    return
                self._decode_batch(frames, protocol, out)
                if out.actions or out.acks or out.rejects or out.pong:
                    break
                if records:
                    if not self.bus.try_publish_many(records):
                        break  # a block subscriber may be full: the task waits for room
                    self._account(records)
                    if self._published_ids is not None:
                        self._published_ids.update(_event_ids(records))
                    records.clear()
        except TransportError:
            pass  # the task's take_batch raises it, after the frames before it
        except Exception as exc:
            self._push_error = exc
        finally:
            self._in_receiver = False
        wake.set_result(None)

    async def _dispatch(self, transport: Transport, protocol: FeedProtocol, out: Output) -> None:
        """Act on what decoding produced, then clear ``out`` for reuse."""
        if out.acks or out.rejects:
            await self._settle_acks(out)
        if out.pong:
            self._last_pong = time.monotonic()
        records = out.records
        if records:
            self.counters.records += len(records)
            self.records_by_type.update(map(type, records))
            last = records[-1]
            if last.ts is not None:
                # one latency sample per batch keeps the cost off the per-record path
                self.latency.observe((last.recv_ts - last.ts) / 1e9)
            # Counted so that a handover waits for it: cancelled half-way (waiting on a full
            # block subscriber, the normal state under backpressure) the rest of the batch
            # would be lost. Ids are noted once published, so a batch that began before the
            # warm-up is deduplicated against the successor's copies too.
            self._publishing += 1
            try:
                await self.bus.publish_many(records)
            finally:
                self._publishing -= 1
            if self._published_ids is not None:
                self._published_ids.update(_event_ids(records))
        actions = out.actions[:] if out.actions else None
        out.clear()
        if actions:
            for action in actions:
                await self._perform(transport, protocol, action)

    async def _perform(self, transport: Transport, protocol: FeedProtocol, action: Action) -> None:
        if isinstance(action, HttpGet):
            self._tasks.create_task(self._http(transport, protocol, action))
        elif isinstance(action, Send):
            await transport.send(action.payload)
        elif isinstance(action, Reconnect):
            raise _PlannedReconnect(action.reason, immediate=action.immediate)
        elif isinstance(action, ResyncBook):
            for follow_up in protocol.resync(action.symbol, action.reason):
                await self._perform(transport, protocol, follow_up)

    async def _settle_acks(self, out: Output) -> None:
        for key in out.acks:
            self.ledger.confirm(key)
        for key, reason in out.rejects:
            if self.ledger.reject(key, reason):
                streams = ", ".join(s.name for s in self.ledger.requests[key].streams)
                self._log.error("subscription rejected", reason=reason, streams=streams)
                await self._status(
                    StatusEvent.ERROR, f"subscription rejected ({reason}): {streams}"
                )
        if self.state is ActorState.SUBSCRIBING and not self.ledger.pending:
            self.state = ActorState.STREAMING
            confirmed = self.ledger.stream_count(SubState.CONFIRMED)
            await self._status(StatusEvent.SUBSCRIBED, f"{confirmed} streams")

    async def _http(self, transport: Transport, protocol: FeedProtocol, request: HttpGet) -> None:
        if request.delay > 0:
            await asyncio.sleep(request.delay)  # a poll; cancelled with the session's tasks
        status, body = await self.http_fetch(request.url)
        out = Output()
        protocol.on_http(request, status, body, time.time_ns(), out)
        if status != 200:
            # Failed REST calls are retried by the protocol; pace them so a broken endpoint
            # is not hammered.
            await asyncio.sleep(min(self.config.reconnect.max, 1.0))
        await self._dispatch(transport, protocol, out)

    async def _watchdog(self, transport: Transport, protocol: FeedProtocol) -> None:
        cfg = self.config
        beat = self.feed.heartbeat
        age_limit = self.feed.limits.max_connection_age
        started = time.monotonic()
        tick = min(1.0, cfg.stale_after / 4, cfg.pong_timeout / 4)
        next_beat = started + beat.interval if beat.interval else None
        ping_sent_at: float | None = None
        ws_pongs = hasattr(transport, "last_pong")
        warming = False

        def pong_seen() -> float:
            """When the last heartbeat answer arrived: an application-level pong reported by
            the protocol, or a WebSocket PONG frame reported by the transport."""
            frame_pong: float | None = getattr(transport, "last_pong", None)
            return self._last_pong if frame_pong is None else max(self._last_pong, frame_pong)

        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            if self.state is ActorState.STREAMING:
                silent = now - self.counters.last_data_ns / 1e9
                if silent > cfg.stale_after:
                    self.counters.stale += 1
                    await self._status(StatusEvent.STALE, f"no data for {silent:.1f}s")
                    raise _Stale(f"stale: no data for {silent:.1f}s")
            if next_beat is not None and now >= next_beat:
                payload = protocol.heartbeat_payload()
                if payload is None:
                    await transport.ping()
                    # A WebSocket ping is only timed when the transport reports PONG frames
                    # (LibcurlTransport.last_pong; curl_cffi's AsyncWebSocket swallows them).
                    if ws_pongs and (ping_sent_at is None or pong_seen() >= ping_sent_at):
                        ping_sent_at = now
                else:
                    await transport.send(payload)
                    if ping_sent_at is None or pong_seen() >= ping_sent_at:
                        ping_sent_at = now
                assert beat.interval is not None
                next_beat = now + beat.interval
            unanswered = ping_sent_at is not None and pong_seen() < ping_sent_at
            if unanswered and now - (ping_sent_at or now) > cfg.pong_timeout:
                self.counters.pong_timeouts += 1
                raise _PongTimeout(f"no heartbeat answer within {cfg.pong_timeout}s")
            if (
                age_limit is not None
                and not warming
                and now - started > age_limit - min(PLANNED_RECONNECT_MARGIN, age_limit / 10)
            ):
                warming = True
                self._tasks.create_task(self._warm_successor("connection lifetime limit"))

    # --- make-before-break handover ------------------------------------------------------------

    async def _warm_successor(self, reason: str) -> None:
        """Open, subscribe and sync a second connection while this one keeps publishing;
        when it is ready (subscriptions confirmed, data flowing, every book snapshotted),
        raise :class:`_Handover` so that it takes over. Its records are held back until then.
        If it cannot get ready in time, fall back to a plain planned reconnect."""
        protocol = self.feed.protocol(self.plan, self.name)
        transport = self.transport_factory(protocol.url(), self.config.transport)
        link = _Link(transport, protocol, Ledger(), reason)
        self._published_ids = set()
        books = {s.symbol for s in self.plan.streams if s.channel == "l2_book"}
        try:
            await self.connect_limiter.acquire()
            async with asyncio.timeout(2 * self.config.connect_timeout):
                await transport.connect()
                out = Output()
                protocol.on_connected(time.time_ns(), out)
                link.ledger.reset(protocol.subscriptions())
                await self._absorb(link, out)
                pacer = Pacer(self.feed.limits.max_messages_per_second)
                for request in list(link.ledger.requests.values()):
                    await pacer.wait()
                    await transport.send(request.payload)
                while not link.ready(books):
                    for frame in await transport.recv_batch(self.batch_size):
                        try:
                            if protocol.on_message(frame.data, time.time_ns(), out):
                                link.saw_data = True
                        except Exception as exc:
                            self._decode_error(frame.data, exc, out)
                    await self._absorb(link, out)
            # Ready. From here the actor owns the successor (and closes it if this session
            # ends otherwise); the reader stops taking batches. Wait for the publishes in
            # progress: cancelling one half-way would lose the rest of its records.
            self._successor = link
            # A short poll, once per handover, keeps an Event.set() off the per-batch path.
            while self._publishing:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        except (TransportError, TimeoutError, _WarmupAborted) as exc:
            self._published_ids = None
            with contextlib.suppress(Exception):
                await transport.close()
            raise _PlannedReconnect(f"{reason}; the successor was not ready: {exc!r}") from None
        except BaseException:
            if self._successor is not link:
                self._published_ids = None
                with contextlib.suppress(Exception):
                    await transport.close()
            raise
        raise _Handover(link)

    async def _absorb(self, link: _Link, out: Output) -> None:
        """What a warming successor decoded: acks into its ledger, records held back,
        REST requests run against its protocol, sends on its transport."""
        for key in out.acks:
            link.ledger.confirm(key)
        for key, reason in out.rejects:
            link.ledger.reject(key, reason)
        link.buffer.extend(out.records)
        if len(link.buffer) > MAX_HANDOVER_BUFFER:
            raise _WarmupAborted(f"more than {MAX_HANDOVER_BUFFER} records held back")
        actions = out.actions[:]
        out.clear()
        for action in actions:
            if isinstance(action, HttpGet):
                link.http_pending.append(action)
                self._tasks.create_task(self._warm_http(link, action))
            elif isinstance(action, Send):
                await link.transport.send(action.payload)
            else:  # Reconnect / ResyncBook: the successor is not healthy
                raise _WarmupAborted(f"successor asked to {action!r}")

    async def _warm_http(self, link: _Link, request: HttpGet) -> None:
        try:
            if request.delay > 0:
                await asyncio.sleep(request.delay)
            status, body = await self.http_fetch(request.url)
            link.http_pending.remove(request)
            out = Output()
            link.protocol.on_http(request, status, body, time.time_ns(), out)
            await self._absorb(link, out)
        except (TransportError, _WarmupAborted) as exc:
            # A failure of the successor must not read as a failure of the live connection.
            self._published_ids = None
            with contextlib.suppress(Exception):
                await link.transport.close()
            raise _PlannedReconnect(f"{link.reason}; the successor failed: {exc!r}") from None

    async def _take_over(self, link: _Link) -> None:
        """Publish what the successor held back, minus the trades and liquidations the old
        connection already published, then carry on from the successor."""
        published = self._published_ids or set()
        self._published_ids = None
        fresh = [r for r in link.buffer if _event_id(r) not in published]
        await self._status(
            StatusEvent.CONNECTED, f"{redact(link.protocol.url())} (took over: {link.reason})"
        )
        if fresh:
            self.counters.records += len(fresh)
            self.records_by_type.update(map(type, fresh))
            await self.bus.publish_many(fresh)

    # --- reporting -------------------------------------------------------------------------

    def _decode_error(self, data: bytes, exc: Exception, out: Output) -> None:
        self.counters.decode_errors += 1
        sample = data[:200].decode("utf-8", "replace")
        if not self._decode_error_logged:
            # Once per actor with a sample; the counter and the status records carry the rest.
            self._decode_error_logged = True
            self._log.warning("undecodable message", error=str(exc), sample=sample)
        out.records.append(self._make_status(StatusEvent.DECODE_ERROR, f"{exc}; sample: {sample}"))

    def _make_status(self, event: StatusEvent, detail: str) -> Record:
        return Status(
            exchange=self.feed.id,
            symbol=None,
            ts=None,
            recv_ts=time.time_ns(),
            event=event,
            detail=detail,
            connection=self.name,
        )

    async def _status(self, event: StatusEvent, detail: str) -> None:
        await self.bus.publish(self._make_status(event, detail))

    def stats(self) -> dict[str, object]:
        c = self.counters
        return {
            "connection": self.name,
            "state": str(self.state),
            "connects": c.connects,
            "reconnects": c.reconnects,
            "messages": c.messages,
            "bytes": c.bytes,
            "records": c.records,
            "decode_errors": c.decode_errors,
            "stale": c.stale,
            "pong_timeouts": c.pong_timeouts,
            "subscriptions_confirmed": self.ledger.stream_count(SubState.CONFIRMED),
            "subscriptions_pending": self.ledger.stream_count(SubState.PENDING),
        }


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionClosed):
        return f"closed by peer: code {exc.code} {exc.reason}".rstrip()
    return (
        f"{type(exc).__name__}: {exc}" if not isinstance(exc, _Stale | _PongTimeout) else str(exc)
    )


def _event_id(record: Record) -> tuple[str | None, str] | None:
    """The identity of a one-off event record (a trade, a liquidation with an id)."""
    if isinstance(record, Trade | Liquidation):
        return None if record.id is None else (record.symbol, record.id)
    return None


def _event_ids(records: list[Record]) -> Iterator[tuple[str | None, str]]:
    for record in records:
        key = _event_id(record)
        if key is not None:
            yield key


def _first_failure(group: BaseExceptionGroup[BaseException]) -> BaseException:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_failure(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return group.exceptions[0]
