"""The ``jsonl`` sink: one JSON object per record per line, exactly the DESIGN.md contract.

With ``rotate_bytes``/``rotate_interval`` it writes a sequence of files, with
``compression: zstd`` compressed ones (naming in :mod:`streamkit.sinks.files`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from streamkit.channel import Subscription
from streamkit.config import JsonlSinkConfig
from streamkit.model import Record, encode_json_lines
from streamkit.sinks.base import Sink
from streamkit.sinks.files import RotatingWriter

log = structlog.get_logger(__name__)

FLUSH_BYTES = 256 * 1024


class JsonlSink(Sink):
    """Appends records to ``path`` (created with its parent directories). Buffered in memory
    and flushed every ``flush_interval`` seconds, when the buffer passes 256 KiB, and on
    exit, so that a clean shutdown never loses a record the sink took off its queue."""

    def __init__(self, name: str, config: JsonlSinkConfig) -> None:
        super().__init__(name)
        self.config = config
        self.path = Path(config.path)
        self.writer = RotatingWriter(
            self.path,
            rotate_bytes=config.rotate_bytes,
            rotate_interval=config.rotate_interval,
            compression=config.compression,
        )
        self._buffer = bytearray()
        self._pending: list[Record] = []

    async def run(self, subscription: Subscription) -> None:
        """Raises the first write error (disk full, permissions) so that the supervisor
        restarts the sink and, if it keeps failing, escalates: a sink must never keep
        taking records it cannot write."""
        fh = self.writer
        try:
            async with asyncio.TaskGroup() as tasks:
                flusher = tasks.create_task(self._flush_periodically(fh))
                await self._consume(subscription, fh)
                flusher.cancel()
        except BaseExceptionGroup as group:
            raise group.exceptions[0] from None
        finally:
            try:
                self._encode()
                self._flush(fh)
            except OSError as exc:
                log.error(
                    "jsonl sink could not write its last records",
                    path=str(self.path),
                    error=str(exc),
                )
            fh.close()

    async def _consume(self, subscription: Subscription, fh: RotatingWriter) -> None:
        async for record in subscription:
            self._pending.append(record)
            self.written += 1
            if len(self._pending) >= 512:
                self._encode()
                if len(self._buffer) >= FLUSH_BYTES:
                    self._flush(fh)

    def _encode(self) -> None:
        if self._pending:
            encode_json_lines(self._pending, self._buffer)
            self._pending.clear()

    def _flush(self, fh: RotatingWriter) -> None:
        if self._buffer:
            fh.write(self._buffer)
            fh.flush()
            self._buffer.clear()

    async def _flush_periodically(self, fh: RotatingWriter) -> None:
        while True:
            await asyncio.sleep(self.config.flush_interval)
            self._encode()
            self._flush(fh)
