"""The ``nats`` sink: every record into NATS JetStream, acknowledged by the server.

Contract:

- **Subjects** come from a template (default ``md.{type}.{exchange}.{symbol}``); payloads are
  msgpack (default) or JSON, with headers ``Streamkit-Type``, ``Streamkit-Schema`` and
  ``Streamkit-Encoding`` (see :mod:`streamkit.sinks.wire`), and ``Nats-Msg-Id``.
- **Stream**: created when missing (subjects, retention limits, storage), checked when it
  exists: it must capture the sink's subjects; other differences are logged, or applied
  with ``stream.update: true``.
- **Acknowledged delivery**: a batch taken off the sink's queue is published pipelined
  (``publish_async``: many publishes in flight, acks collected afterwards), and the next
  batches are published while earlier acks are outstanding, up to ``max_in_flight`` records
  (so throughput is not capped at ``batch_size`` per ack round trip; the sink waits for acks
  only when its queue is empty or the window is full). A record counts as ``sent`` only once
  JetStream acknowledged it. Whatever was not acknowledged (error reply, no ack within
  ``ack_timeout`` of its batch's publish, connection lost) stops the window: every batch in
  flight is settled, and their unacknowledged records are published again, in order, after a
  backoff, until they are acknowledged, before anything new is published. Each record keeps
  its ``Nats-Msg-Id`` across retries, so a record whose ack was lost (stored, but we never
  heard) is stored once, not twice, as long as the retry falls inside the stream's
  ``duplicate_window``.
- **Order**: records are published in queue order. While the connection holds, the stream
  holds them in that order. After a connection loss, a retried record can land after records
  published after it (they were buffered by the client and stored on reconnect while it was
  lost in flight); no record is lost or duplicated, but consumers that need strict order
  across a broker outage should order by ``recv_ts``/``seq``.
- **Shutdown**: once the bus has closed, unacknowledged records are retried for
  ``shutdown_timeout`` seconds more; what is still unacknowledged then (or when the sink is
  cancelled) is counted in ``dropped`` and logged as lost, never silently discarded.

Counters: ``sent`` (acknowledged), ``failed`` (publish attempts that were not acknowledged),
``retried`` (re-publish attempts), ``dropped`` (records given up on). Reconnecting is nats-py's
job (unlimited attempts); the sink's retries cover what was in flight meanwhile.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import time
import uuid
from typing import Any

import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import PubAck, StorageType, StreamConfig

from streamkit.channel import Subscription, SubscriptionClosed
from streamkit.config import NatsSinkConfig, NatsStreamConfig
from streamkit.errors import StreamkitError
from streamkit.model import Record, type_name
from streamkit.sinks.base import Sink
from streamkit.sinks.wire import (
    HEADER_ENCODING,
    HEADER_SCHEMA,
    HEADER_TYPE,
    SCHEMA,
    KeyTemplate,
    encoder,
    retry_delay,
)

log = structlog.get_logger(__name__)

HEADER_MSG_ID = "Nats-Msg-Id"


class SinkSetupError(StreamkitError):
    """The broker is reachable but not usable as configured (e.g. an existing stream does not
    capture the sink's subjects)."""


class _Pending:
    """One record on its way to JetStream: encoded once, published until acknowledged."""

    __slots__ = ("attempts", "headers", "payload", "subject")

    def __init__(self, subject: str, payload: bytes, headers: dict[str, str]) -> None:
        self.subject = subject
        self.payload = payload
        self.headers = headers
        self.attempts = 0


class _InFlight:
    """A published batch: its records, their ack futures (one per record published; fewer
    when publishing stopped on ``error``) and when to stop waiting for them."""

    __slots__ = ("batch", "deadline", "error", "futures")

    def __init__(
        self,
        batch: list[_Pending],
        futures: list[asyncio.Future[PubAck]],
        error: BaseException | None,
        deadline: float,
    ) -> None:
        self.batch = batch
        self.futures = futures
        self.error = error
        self.deadline = deadline


class NatsSink(Sink):
    """Publishes records to JetStream; see the module docstring for the delivery contract."""

    def __init__(self, name: str, config: NatsSinkConfig) -> None:
        super().__init__(name)
        self.config = config
        self.subjects = KeyTemplate(config.subject, subject_safe=True)
        self._encode = encoder(config.encoding)
        # Unique per sink instance: message ids must not collide with another producer's (or
        # a previous run's) inside the duplicate window, or JetStream would drop our records.
        self._id_prefix = uuid.uuid4().hex[:16]
        self._ids = itertools.count(1)
        self.sent = 0
        self.failed = 0
        self.retried = 0
        self.dropped = 0
        self._nc: NatsClient | None = None
        self._in_flight: collections.deque[_InFlight] = collections.deque()
        """Published batches whose acks are still being collected, oldest first."""
        self._retrying: list[_Pending] = []
        """Records not acknowledged by their first attempt, being published again."""
        self._next_batch: list[_Pending] = []
        """Records taken off the queue, waiting for room in the window or being published."""
        self._log = log.bind(sink=name)

    def stats(self) -> dict[str, int]:
        return {
            "sent": self.sent,
            "failed": self.failed,
            "retried": self.retried,
            "dropped": self.dropped,
        }

    # --- running -----------------------------------------------------------------------------

    async def run(self, subscription: Subscription) -> None:
        try:
            _, js = await self._connect()
            await ensure_stream(js, self.config.stream, self.subjects, self._log)
            while True:
                if self._in_flight:
                    # Acks outstanding: publish whatever is queued now, and only when the
                    # queue is empty spend the wait on the oldest batch's acks.
                    try:
                        records = subscription.drain_nowait(self.config.batch_size)
                    except SubscriptionClosed:
                        break
                    if not records:
                        await self._settle_oldest(js, subscription)
                        continue
                else:
                    try:
                        records = await subscription.get_batch(self.config.batch_size)
                    except SubscriptionClosed:
                        break
                batch = self._next_batch = [self._prepare(record) for record in records]
                # Bounded window: never more than max_in_flight records awaiting acks (nats-py's
                # own limit blocks publish_async, which would stall us without a timeout).
                while self._in_flight and self._in_flight_records + len(batch) > (
                    self.config.max_in_flight
                ):
                    await self._settle_oldest(js, subscription)
                self._in_flight.append(await self._publish(js, batch))
                self._next_batch = []
            while self._in_flight:
                await self._settle_oldest(js, subscription)
        finally:
            lost = [item for flight in self._in_flight for item in flight.batch]
            lost += self._retrying + self._next_batch
            self._in_flight.clear()
            self._retrying = self._next_batch = []
            if lost:
                self._give_up(lost, "sink stopped (cancelled)")
            await self._close()

    @property
    def _in_flight_records(self) -> int:
        return sum(len(flight.batch) for flight in self._in_flight)

    def _prepare(self, record: Record) -> _Pending:
        headers = {
            HEADER_TYPE: type_name(type(record)),
            HEADER_SCHEMA: SCHEMA,
            HEADER_ENCODING: self.config.encoding,
            HEADER_MSG_ID: f"{self._id_prefix}-{next(self._ids)}",
        }
        return _Pending(self.subjects.render(record), self._encode(record), headers)

    async def _settle_oldest(self, js: JetStreamContext, subscription: Subscription) -> None:
        """Wait for the oldest in-flight batch's acks. If any record of it is not
        acknowledged, every batch in flight is settled too and all their unacknowledged
        records are retried together, in queue order, before anything new is published."""
        # Each batch leaves the window only once collected, and what it left unacknowledged
        # joins _retrying at once: a cancel at any await reports every record exactly once.
        left = await self._collect(self._in_flight[0])
        self._in_flight.popleft()
        if not left:
            return
        self._retrying = left
        while self._in_flight:
            more = await self._collect(self._in_flight[0])
            self._in_flight.popleft()
            self._retrying = left = left + more
        await self._deliver(js, left, subscription)

    async def _deliver(
        self, js: JetStreamContext, batch: list[_Pending], subscription: Subscription
    ) -> None:
        """Publish ``batch`` (records not acknowledged yet) until every record is
        acknowledged, or shutdown gives up."""
        attempt = 0
        deadline: float | None = None
        self._retrying = batch
        while batch:
            # Check before publishing again: called with records that were just not
            # acknowledged, so the first round backs off too.
            if subscription.closed:
                # The bus is closed: we are shutting down. Keep trying, but not forever.
                now = time.monotonic()
                deadline = deadline if deadline is not None else now + self.config.shutdown_timeout
                if now >= deadline:
                    self._retrying = []
                    self._give_up(batch, f"shutdown_timeout={self.config.shutdown_timeout}s")
                    return
            delay = retry_delay(self.config.retry, attempt)
            attempt += 1
            self._log.warning(
                "records not acknowledged by JetStream; retrying",
                unacked=len(batch),
                retry_in=round(delay, 3),
            )
            await asyncio.sleep(delay)
            batch = self._retrying = await self._collect(await self._publish(js, batch))
        self._retrying = []

    async def _publish(self, js: JetStreamContext, batch: list[_Pending]) -> _InFlight:
        """Publish every record of ``batch`` pipelined (acks are collected by :meth:`_collect`)."""
        futures: list[asyncio.Future[PubAck]] = []
        error: BaseException | None = None
        for item in batch:
            if item.attempts:
                self.retried += 1
            item.attempts += 1
            try:
                fut = await js.publish_async(item.subject, item.payload, headers=item.headers)
            except (nats.errors.Error, OSError) as exc:
                # Disconnected with the reconnect buffer full, or closed: the rest of the
                # batch waits for the next attempt.
                error = exc
                break
            futures.append(fut)
        return _InFlight(batch, futures, error, time.monotonic() + self.config.ack_timeout)

    async def _collect(self, flight: _InFlight) -> list[_Pending]:
        """Wait (until the batch's ack deadline) for the acks of a published batch; count the
        acknowledged records as sent. Returns the others, in their original order."""
        futures, error = flight.futures, flight.error
        if futures:
            timeout = max(0.0, flight.deadline - time.monotonic())
            _, not_done = await asyncio.wait(futures, timeout=timeout)
            for fut in not_done:
                # Frees nats-py's in-flight slot; the record will be published again.
                fut.cancel()
        left: list[_Pending] = []
        for i, item in enumerate(flight.batch):
            ack = futures[i] if i < len(futures) else None
            if ack is not None and not ack.cancelled() and ack.exception() is None:
                self.sent += 1
                self.written += 1
                continue
            left.append(item)
            if ack is not None and not ack.cancelled():
                error = error or ack.exception()
        if left:
            self.failed += len(left)
            reason = "ack timeout" if error is None else f"{type(error).__name__}: {error}"
            self._log.debug("publish attempt incomplete", unacked=len(left), reason=reason)
        return left

    def _give_up(self, items: list[_Pending], why: str) -> None:
        self.dropped += len(items)
        self._log.error(
            "records LOST: JetStream never acknowledged them",
            lost=len(items),
            reason=why,
            total_lost=self.dropped,
        )

    # --- connection ----------------------------------------------------------------------------

    async def _connect(self) -> tuple[NatsClient, JetStreamContext]:
        """Connect, retrying with backoff until the server answers (records wait, queued,
        meanwhile: under ``block`` that is backpressure, under the other policies the
        subscription's counters show what was dropped)."""
        attempt = 0
        while True:
            try:
                nc = await nats.connect(
                    self.config.url,
                    name=f"streamkit {self.name}",
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.25,
                    connect_timeout=2,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                )
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                delay = retry_delay(self.config.retry, attempt)
                attempt += 1
                self._log.warning(
                    "cannot connect to NATS; retrying",
                    url=self.config.url,
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in=round(delay, 3),
                )
                await asyncio.sleep(delay)
                continue
            self._nc = nc
            self._log.info("connected to NATS", url=self.config.url)
            js = nc.jetstream(publish_async_max_pending=self.config.max_in_flight)
            return nc, js

    async def _close(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()

    async def _on_error(self, exc: Exception) -> None:
        self._log.warning("NATS client error", error=f"{type(exc).__name__}: {exc}")

    async def _on_disconnected(self) -> None:
        if self._nc is not None:  # None: we are closing it ourselves
            self._log.warning("disconnected from NATS; nats-py is reconnecting")

    async def _on_reconnected(self) -> None:
        self._log.info("reconnected to NATS")


# --- the stream ----------------------------------------------------------------------------------


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` matches one token, a final ``>`` one or more."""
    p_tokens, s_tokens = pattern.split("."), subject.split(".")
    for i, token in enumerate(p_tokens):
        if token == ">":
            return len(s_tokens) > i
        if i >= len(s_tokens) or (token != "*" and token != s_tokens[i]):
            return False
    return len(p_tokens) == len(s_tokens)


def stream_config(cfg: NatsStreamConfig) -> StreamConfig:
    """The JetStream StreamConfig for a sink's ``stream`` section."""
    return StreamConfig(
        name=cfg.name,
        subjects=list(cfg.subjects),
        storage=StorageType.FILE if cfg.storage == "file" else StorageType.MEMORY,
        max_age=cfg.max_age,
        max_msgs=cfg.max_msgs if cfg.max_msgs is not None else -1,
        max_bytes=cfg.max_bytes if cfg.max_bytes is not None else -1,
        duplicate_window=cfg.duplicate_window,
    )


async def ensure_stream(
    js: JetStreamContext, cfg: NatsStreamConfig, subjects: KeyTemplate, logger: Any
) -> None:
    """Create the stream, or check the existing one: it must capture the sink's subjects
    (else :class:`SinkSetupError`); other differences are logged, or applied when
    ``cfg.update`` is true."""
    wanted = stream_config(cfg)
    sample = subjects.render_values("trade", "exchange", "symbol")
    if not any(subject_matches(s, sample) for s in cfg.subjects):
        raise SinkSetupError(
            f"stream {cfg.name!r} subjects {cfg.subjects} do not capture the sink's subjects "
            f"(e.g. {sample!r})"
        )
    try:
        info = await js.stream_info(cfg.name)
    except nats.js.errors.NotFoundError:
        if not cfg.create:
            raise SinkSetupError(
                f"stream {cfg.name!r} does not exist (stream.create is false)"
            ) from None
        await js.add_stream(wanted)
        logger.info("created JetStream stream", stream=cfg.name, subjects=cfg.subjects)
        return
    existing = info.config
    if not any(subject_matches(s, sample) for s in existing.subjects or []):
        raise SinkSetupError(
            f"existing stream {cfg.name!r} captures {existing.subjects}, not the sink's "
            f"subjects (e.g. {sample!r})"
        )
    diffs = {
        key: (getattr(existing, key), getattr(wanted, key))
        for key in ("subjects", "max_age", "max_msgs", "max_bytes", "duplicate_window", "storage")
        if _differs(getattr(existing, key), getattr(wanted, key))
    }
    if not diffs:
        return
    if cfg.update and "storage" not in diffs:
        await js.update_stream(wanted)
        logger.info("updated JetStream stream", stream=cfg.name, changes=_show(diffs))
    else:
        logger.warning(
            "existing JetStream stream differs from the config; leaving it as it is",
            stream=cfg.name,
            differences=_show(diffs),
            hint="set stream.update: true to apply (storage cannot be changed)",
        )


def _differs(existing: Any, wanted: Any) -> bool:
    # The server reports "no limit" as -1 or 0 and ages as floats: compare loosely.
    def norm(v: Any) -> Any:
        if v in (None, -1, 0, 0.0):
            return None
        return float(v) if isinstance(v, int | float) else v

    return bool(norm(existing) != norm(wanted))


def _show(diffs: dict[str, tuple[Any, Any]]) -> dict[str, str]:
    return {k: f"{a!r} -> {b!r}" for k, (a, b) in diffs.items()}
