"""Typed remote streams: consume, in another process or on another machine, the records a
``nats`` (or ``redis``) sink publishes, as the same msgspec Structs::

    from streamkit import remote
    from streamkit.model import Trade

    async with remote.stream("nats://host:4222", Trade, exchange="binance",
                             symbol="BTC-*", durable="book-builder") as trades:
        async for trade in trades:
            ...

Filters work like :meth:`streamkit.app.App.stream`: ``types`` is a record class, a type tag
or several (None: every type, status records included), ``exchange``/``symbol`` are fnmatch
patterns, and a status record with a null symbol matches every symbol pattern (so a consumer
rebuilding a book sees the connection-wide gaps and resyncs). The broker narrows by subject
where a filter is exact; patterns are applied here.

Delivery (NATS): a JetStream pull consumer on the sink's stream. Each record is acknowledged
when the consumer asks for the next one, or when the ``async with`` block exits normally: a
record is acknowledged only after your code had it. With ``durable="name"`` the consumer
lives on the server, so a restarted process resumes after the last acknowledged record;
records fetched but not handed out are returned (``nak``) on close so they come back at once.
Exiting the block with an exception leaves the current record unacknowledged: it is
delivered again (at-least-once). Without ``durable`` the consumer is ephemeral and starts at
``deliver`` (``all``: the whole stream; ``new``: from now on).

Delivery (Redis): :func:`stream_redis` reads the sink's streams with ``XREAD`` (from now, or
from the start), or with ``group=`` through a consumer group (``XREADGROUP``, ``XACK`` after
each record, pending records re-read first after a restart). Order is per key.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterable
from fnmatch import fnmatchcase
from types import TracebackType
from typing import Any, Literal

import structlog

from streamkit.model import RECORD_TYPES, AnyRecord, Record, Status, type_name
from streamkit.sinks.wire import HEADER_ENCODING, HEADER_TYPE, KeyTemplate, decode

log = structlog.get_logger(__name__)

Types = type[Record] | str | Iterable[type[Record] | str] | None

_GLOB = frozenset("*?[")


def _type_tags(types: Types) -> frozenset[str] | None:
    if types is None:
        return None
    items: Iterable[type[Record] | str] = (types,) if isinstance(types, str | type) else types
    tags = {t if isinstance(t, str) else type_name(t) for t in items}
    unknown = tags - RECORD_TYPES.keys()
    if unknown or not tags:
        raise ValueError(f"unknown or empty record types: {sorted(unknown) or '[]'}")
    return frozenset(tags)


class _Filter:
    """The client-side half of a subscription filter (the broker does the exact part)."""

    def __init__(self, types: Types, exchange: str, symbol: str) -> None:
        self.tags = _type_tags(types)
        self.exchange = exchange
        self.symbol = symbol

    def token(self, kind: Literal["type", "exchange", "symbol"]) -> str | None:
        """The exact value the broker can filter on, or None for "anything"."""
        if kind == "type":
            return next(iter(self.tags)) if self.tags and len(self.tags) == 1 else None
        value = self.exchange if kind == "exchange" else self.symbol
        if _GLOB & set(value):
            return None
        if kind == "symbol" and (self.tags is None or "status" in self.tags):
            return None  # connection-wide status records (null symbol) must get through
        return value

    def __call__(self, record: Record) -> bool:
        if self.tags is not None and type_name(type(record)) not in self.tags:
            return False
        if not fnmatchcase(record.exchange, self.exchange):
            return False
        if record.symbol is None:
            return isinstance(record, Status) or self.symbol == "*"
        return fnmatchcase(record.symbol, self.symbol)


def filter_subject(template: str, flt: _Filter) -> str:
    """The NATS subject filter for a sink subject template: exact tokens where the filter
    has exact values, ``*`` elsewhere."""
    values = {k: flt.token(k) for k in ("type", "exchange", "symbol")}
    sentinel = "\x00"
    rendered = KeyTemplate(template, subject_safe=True).render_values(
        values["type"] or sentinel, values["exchange"] or sentinel, values["symbol"] or sentinel
    )
    return ".".join("*" if sentinel in tok else tok for tok in rendered.split("."))


def _cancel_requests() -> int:
    task = asyncio.current_task()
    return task.cancelling() if task is not None else 0


def _raise_if_cancel_was_swallowed(before: int) -> None:
    """Raise CancelledError if this task was cancelled since ``before`` (a
    :func:`_cancel_requests` count) but the cancel never reached it.

    nats-py's ``fetch`` waits through ``asyncio.wait_for``, which on CPython 3.11 returns the
    result (or raises its own timeout) when a cancel lands as a message arrives: the cancel
    is lost, and an ``asyncio.timeout`` around the read never fires. Measured here under a
    live stream: about 3% of cancelled fetches, and 11% of cancelled redis-py ``XREAD``
    calls. Raising it here keeps timeouts and shutdown working; ``asyncio.timeout`` turns it
    into TimeoutError as usual.
    """
    if _cancel_requests() > before:
        raise asyncio.CancelledError


async def _nak_applied(nc: Any, msg: Any) -> None:
    """NAK ``msg`` and wait until the server has applied it (it answers a NAK sent as a
    request once it has). A server that does not answer leaves it a plain NAK."""
    import nats.errors

    with contextlib.suppress(nats.errors.TimeoutError):
        await nc.request(msg.reply, b"-NAK", timeout=2)


class RemoteStream:
    """An async iterator of records from a JetStream stream; see the module docstring."""

    def __init__(
        self,
        url: str,
        types: Types = None,
        exchange: str = "*",
        symbol: str = "*",
        *,
        durable: str | None = None,
        stream: str = "STREAMKIT",
        subject: str = "md.{type}.{exchange}.{symbol}",
        deliver: Literal["all", "new"] = "all",
        batch: int = 256,
        ack_wait: float = 30.0,
    ) -> None:
        self.url = url
        self.filter = _Filter(types, exchange, symbol)
        self.subject = filter_subject(subject, self.filter)
        self.durable = durable
        self.stream_name = stream
        self.deliver = deliver
        self.batch = batch
        self.ack_wait = ack_wait
        self.received = 0
        self.skipped = 0
        self.undecodable = 0
        self._nc: Any = None
        self._psub: Any = None
        self._buffer: deque[Any] = deque()
        self._last: Any = None

    async def open(self) -> None:
        """Connect and attach the consumer (done by ``async with`` or the first read)."""
        if self._nc is not None:
            return
        import nats
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        self._nc = await nats.connect(self.url, max_reconnect_attempts=-1, reconnect_time_wait=0.25)
        js = self._nc.jetstream()
        config = ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL if self.deliver == "all" else DeliverPolicy.NEW,
            ack_wait=self.ack_wait,
            max_ack_pending=max(1000, self.batch * 4),
        )
        self._psub = await js.pull_subscribe(
            self.subject, durable=self.durable, stream=self.stream_name, config=config
        )

    async def close(self, *, ack_last: bool = True) -> None:
        """Acknowledge the last record handed out (``ack_last``; else return it for
        redelivery), return the fetched but unread ones, and disconnect. Idempotent."""
        nc, self._nc = self._nc, None
        if nc is None:
            return
        try:
            unread = list(self._buffer)
            self._buffer.clear()
            if self._last is not None:
                # Not acknowledged means "give it to the next reader now", not after ack_wait.
                if ack_last:
                    await self._last.ack()
                else:
                    unread.insert(0, self._last)
            self._last = None
            # Each NAK as a request: the server answers once it has applied it. A plain NAK
            # is applied later, so a reader opening this durable consumer right after us
            # could be served newer records first (seen in CI: 174 before 110).
            await asyncio.gather(*(_nak_applied(nc, m) for m in unread))
            await nc.flush(timeout=5)
            with contextlib.suppress(Exception):
                await self._psub.unsubscribe()
        finally:
            await nc.close()

    async def __aenter__(self) -> RemoteStream:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close(ack_last=exc_type is None)

    def __aiter__(self) -> RemoteStream:
        return self

    async def __anext__(self) -> AnyRecord:
        import nats.errors

        await self.open()
        if self._last is not None:
            await self._last.ack()
            self._last = None
        while True:
            while not self._buffer:
                cancels = _cancel_requests()
                with contextlib.suppress(nats.errors.TimeoutError):  # nothing new: wait on
                    self._buffer.extend(await self._psub.fetch(self.batch, timeout=1.0))
                # Fetched records are in the buffer, so close() returns them (nak).
                _raise_if_cancel_was_swallowed(cancels)
            msg = self._buffer.popleft()
            headers = msg.headers or {}
            try:
                record = decode(msg.data, headers.get(HEADER_TYPE), headers.get(HEADER_ENCODING))
            except Exception as exc:
                # A poison message must not block the stream: count it, log it, drop it.
                self.undecodable += 1
                log.warning("undecodable remote record", subject=msg.subject, error=str(exc))
                await msg.term()
                continue
            if not self.filter(record):
                self.skipped += 1
                await msg.ack()
                continue
            self.received += 1
            self._last = msg
            return record


def stream(
    url: str,
    types: Types = None,
    exchange: str = "*",
    symbol: str = "*",
    *,
    durable: str | None = None,
    stream: str = "STREAMKIT",
    subject: str = "md.{type}.{exchange}.{symbol}",
    deliver: Literal["all", "new"] = "all",
    batch: int = 256,
    ack_wait: float = 30.0,
) -> RemoteStream:
    """Records a ``nats`` sink published: see the module docstring. ``stream``/``subject``
    must match the sink's ``stream.name``/``subject``."""
    return RemoteStream(
        url,
        types,
        exchange,
        symbol,
        durable=durable,
        stream=stream,
        subject=subject,
        deliver=deliver,
        batch=batch,
        ack_wait=ack_wait,
    )


class RedisRemoteStream:
    """An async iterator of records from the Redis streams a ``redis`` sink writes."""

    def __init__(
        self,
        url: str,
        types: Types = None,
        exchange: str = "*",
        symbol: str = "*",
        *,
        key: str = "md:{type}:{exchange}:{symbol}",
        group: str | None = None,
        consumer: str = "streamkit",
        start: Literal["new", "all"] = "new",
        batch: int = 256,
        rescan: float = 5.0,
    ) -> None:
        self.url = url
        self.filter = _Filter(types, exchange, symbol)
        values = {k: self.filter.token(k) or "*" for k in ("type", "exchange", "symbol")}
        self.pattern = key.format_map(values)
        self.group = group
        self.consumer = consumer
        self.start = start
        self.batch = batch
        self.rescan = rescan
        self.received = 0
        self._client: Any = None
        self._positions: dict[bytes, bytes] = {}
        self._backlog: set[bytes] = set()
        """Keys whose pending (delivered, unacknowledged) entries are still being re-read."""
        self._buffer: deque[tuple[bytes, bytes, dict[bytes, bytes]]] = deque()
        self._last: tuple[bytes, bytes] | None = None
        self._scanned_at = 0.0

    async def open(self) -> None:
        if self._client is None:
            import redis.asyncio as aioredis

            self._client = aioredis.Redis.from_url(self.url)

    async def close(self, *, ack_last: bool = True) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            if self._last is not None and ack_last and self.group:
                await client.xack(self._last[0], self.group, self._last[1])
        finally:
            await client.aclose()

    async def __aenter__(self) -> RedisRemoteStream:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close(ack_last=exc_type is None)

    def __aiter__(self) -> RedisRemoteStream:
        return self

    async def _scan(self) -> None:
        """Find the sink's keys matching the filter; new keys join the read set."""
        import redis.exceptions

        loop = asyncio.get_running_loop()
        self._scanned_at = loop.time()
        async for key in self._client.scan_iter(match=self.pattern, _type="stream"):
            if key in self._positions:
                continue
            if self.group is None:
                self._positions[key] = b"0" if self.start == "all" else b"$"
                continue
            with contextlib.suppress(redis.exceptions.ResponseError):  # BUSYGROUP: exists
                await self._client.xgroup_create(
                    key, self.group, id="0" if self.start == "all" else "$", mkstream=False
                )
            self._positions[key] = b"0"  # our own pending entries first, then new ones
            self._backlog.add(key)

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        if not self._positions or loop.time() - self._scanned_at > self.rescan:
            await self._scan()
        if not self._positions:
            await asyncio.sleep(0.2)
            return
        cancels = _cancel_requests()
        if self.group is None:
            reply = await self._client.xread(self._positions, count=self.batch, block=1000)
        else:
            reply = await self._client.xreadgroup(
                self.group, self.consumer, self._positions, count=self.batch, block=1000
            )
        # redis-py loses cancels too. The reply is dropped before it moves a position: a later
        # read gets it again, and a group's entries stay pending for this consumer.
        _raise_if_cancel_was_swallowed(cancels)
        for key, entries in reply or []:
            if key in self._backlog and not entries:
                self._backlog.discard(key)  # our pending entries are re-read: now new ones
                self._positions[key] = b">"
            for entry_id, fields in entries:
                if self.group is None or key in self._backlog:
                    self._positions[key] = entry_id
                self._buffer.append((key, entry_id, fields))

    async def __anext__(self) -> AnyRecord:
        await self.open()
        if self._last is not None and self.group:
            await self._client.xack(self._last[0], self.group, self._last[1])
        self._last = None
        while True:
            while not self._buffer:
                await self._read()
            key, entry_id, fields = self._buffer.popleft()
            record = decode(
                fields[b"data"],
                fields.get(b"type", b"").decode(),
                fields.get(b"encoding", b"msgpack").decode(),
            )
            if not self.filter(record):
                if self.group:
                    await self._client.xack(key, self.group, entry_id)
                continue
            self.received += 1
            self._last = (key, entry_id)
            return record


def stream_redis(
    url: str,
    types: Types = None,
    exchange: str = "*",
    symbol: str = "*",
    *,
    key: str = "md:{type}:{exchange}:{symbol}",
    group: str | None = None,
    consumer: str = "streamkit",
    start: Literal["new", "all"] = "new",
    batch: int = 256,
) -> RedisRemoteStream:
    """Records a ``redis`` sink wrote: see the module docstring. ``key`` must match the
    sink's ``key`` template."""
    return RedisRemoteStream(
        url,
        types,
        exchange,
        symbol,
        key=key,
        group=group,
        consumer=consumer,
        start=start,
        batch=batch,
    )
