"""The ``redis`` sink: every record appended to a Redis stream with ``XADD``.

Contract:

- One stream per key (template, default ``md:{type}:{exchange}:{symbol}``; ``_`` for a null
  symbol), each entry with the fields ``type`` (record type tag), ``schema``
  (:data:`~streamkit.model.SCHEMA_VERSION`), ``encoding`` (``msgpack``/``json``) and ``data``
  (the encoded record); stream ids are assigned by Redis (``*``).
- ``MAXLEN ~ maxlen`` trims each stream approximately (whole radix-tree nodes, cheap) so
  memory stays bounded; None keeps everything.
- A batch taken off the sink's queue is sent as one non-transactional pipeline (one round
  trip). A record counts as ``sent`` once Redis answered its ``XADD`` with an id.
- **At-least-once.** When the connection fails during a batch, Redis may or may not have
  applied some of its ``XADD``\\s and the reply that would tell us is lost, so the
  unconfirmed part of the batch is sent again after a backoff: nothing Redis acknowledged is
  lost or sent twice, but a record whose reply was lost can appear twice (consecutive
  duplicates with the same content; consumers that care compare ``data``). A command Redis
  rejects (e.g. ``WRONGTYPE`` on a key used by something else) is not retried: it counts as
  ``failed`` and ``dropped`` and is logged.
- **Shutdown**: after the bus closed, unconfirmed records are retried for
  ``shutdown_timeout`` seconds; what is still unconfirmed then (or on cancellation) counts in
  ``dropped`` and is logged as lost.

Counters: ``sent``, ``failed`` (records in failed attempts), ``retried`` (records re-sent),
``dropped`` (given up on).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from streamkit.channel import Subscription, SubscriptionClosed
from streamkit.config import RedisSinkConfig
from streamkit.model import Record, type_name
from streamkit.sinks.base import Sink
from streamkit.sinks.wire import SCHEMA, KeyTemplate, encoder, retry_delay

log = structlog.get_logger(__name__)

_CONNECTION_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


class RedisSink(Sink):
    """Appends records to Redis streams; see the module docstring for the contract."""

    def __init__(self, name: str, config: RedisSinkConfig) -> None:
        super().__init__(name)
        self.config = config
        self.keys = KeyTemplate(config.key, subject_safe=False)
        self._encode = encoder(config.encoding)
        self.sent = 0
        self.failed = 0
        self.retried = 0
        self.dropped = 0
        self._unconfirmed: list[tuple[str, dict[str, bytes | str]]] = []
        self._log = log.bind(sink=name)

    def stats(self) -> dict[str, int]:
        return {
            "sent": self.sent,
            "failed": self.failed,
            "retried": self.retried,
            "dropped": self.dropped,
        }

    def connect(self) -> aioredis.Redis:
        """A client whose own retries are off: retrying is this sink's job (it knows which
        records were confirmed)."""
        return aioredis.Redis.from_url(
            self.config.url,
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=2,
            socket_timeout=10,
            client_name=f"streamkit:{self.name}",
        )

    async def run(self, subscription: Subscription) -> None:
        client = self.connect()
        try:
            while True:
                try:
                    batch = await subscription.get_batch(self.config.batch_size)
                except SubscriptionClosed:
                    break
                await self._deliver(client, [self._entry(r) for r in batch], subscription)
        finally:
            if self._unconfirmed:
                self._give_up(len(self._unconfirmed), "sink stopped (cancelled)")
                self._unconfirmed = []
            with contextlib.suppress(Exception):
                await client.aclose()

    def _entry(self, record: Record) -> tuple[str, dict[str, bytes | str]]:
        fields: dict[str, bytes | str] = {
            "type": type_name(type(record)),
            "schema": SCHEMA,
            "encoding": self.config.encoding,
            "data": self._encode(record),
        }
        return self.keys.render(record), fields

    async def _deliver(
        self,
        client: aioredis.Redis,
        batch: list[tuple[str, dict[str, bytes | str]]],
        subscription: Subscription,
    ) -> None:
        attempt = 0
        deadline: float | None = None
        self._unconfirmed = batch
        while True:
            if attempt:
                self.retried += len(batch)
            try:
                batch, error = await self._send(client, batch)
            except _CONNECTION_ERRORS as exc:
                error = f"{type(exc).__name__}: {exc}"
            self._unconfirmed = batch
            if not batch:
                return
            self.failed += len(batch)
            if subscription.closed:
                now = time.monotonic()
                deadline = deadline if deadline is not None else now + self.config.shutdown_timeout
                if now >= deadline:
                    self._unconfirmed = []
                    self._give_up(len(batch), f"shutdown_timeout={self.config.shutdown_timeout}s")
                    return
            delay = retry_delay(self.config.retry, attempt)
            attempt += 1
            self._log.warning(
                "Redis unavailable; retrying",
                unconfirmed=len(batch),
                error=error,
                retry_in=round(delay, 3),
            )
            await asyncio.sleep(delay)

    async def _send(
        self, client: aioredis.Redis, batch: list[tuple[str, dict[str, bytes | str]]]
    ) -> tuple[list[tuple[str, dict[str, bytes | str]]], str]:
        """One pipelined round trip. Returns the entries still unconfirmed (in order) and
        why; raises a connection error when the whole batch is unconfirmed. Commands Redis
        rejected are counted and dropped here: retrying them cannot succeed."""
        maxlen = self.config.maxlen
        pipe = client.pipeline(transaction=False)
        for key, fields in batch:
            pipe.xadd(key, fields, maxlen=maxlen, approximate=maxlen is not None)  # type: ignore[arg-type]
        results: list[Any] = await pipe.execute(raise_on_error=False)
        left = [e for e, r in zip(batch, results, strict=True) if isinstance(r, _CONNECTION_ERRORS)]
        lost_reply = next((r for r in results if isinstance(r, _CONNECTION_ERRORS)), None)
        rejected = [
            r for r in results if isinstance(r, Exception) and not isinstance(r, _CONNECTION_ERRORS)
        ]
        confirmed = len(results) - len(rejected) - len(left)
        self.sent += confirmed
        self.written += confirmed
        if rejected:
            self.failed += len(rejected)
            self.dropped += len(rejected)
            self._log.error(
                "Redis rejected records; they are dropped",
                rejected=len(rejected),
                error=str(rejected[0]),
            )
        return left, f"{type(lost_reply).__name__}: {lost_reply}" if lost_reply else ""

    def _give_up(self, count: int, why: str) -> None:
        self.dropped += count
        self._log.error(
            "records LOST: Redis never confirmed them",
            lost=count,
            reason=why,
            total_lost=self.dropped,
        )
