"""The ``jsonl`` sink: one JSON object per record per line, exactly the DESIGN.md contract."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from streamkit.channel import Subscription
from streamkit.config import JsonlSinkConfig
from streamkit.model import Record, encode_json_lines
from streamkit.sinks.base import Sink

FLUSH_BYTES = 256 * 1024


class JsonlSink(Sink):
    """Appends records to ``path`` (created with its parent directories). Buffered in memory
    and flushed every ``flush_interval`` seconds, when the buffer passes 256 KiB, and on
    exit, so that a clean shutdown never loses a record the sink took off its queue."""

    def __init__(self, name: str, config: JsonlSinkConfig) -> None:
        super().__init__(name)
        self.config = config
        self.path = Path(config.path)
        self._buffer = bytearray()
        self._pending: list[Record] = []

    async def run(self, subscription: Subscription) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as fh:
            flusher = asyncio.create_task(self._flush_periodically(fh))
            try:
                async for record in subscription:
                    self._pending.append(record)
                    self.written += 1
                    if len(self._pending) >= 512:
                        self._encode()
                        if len(self._buffer) >= FLUSH_BYTES:
                            self._flush(fh)
            finally:
                flusher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await flusher
                self._encode()
                self._flush(fh)

    def _encode(self) -> None:
        if self._pending:
            encode_json_lines(self._pending, self._buffer)
            self._pending.clear()

    def _flush(self, fh: object) -> None:
        if self._buffer:
            fh.write(self._buffer)  # type: ignore[attr-defined]
            fh.flush()  # type: ignore[attr-defined]
            self._buffer.clear()

    async def _flush_periodically(self, fh: object) -> None:
        while True:
            await asyncio.sleep(self.config.flush_interval)
            self._encode()
            self._flush(fh)
