"""The ``console`` sink: one readable line per record on stdout (or JSON with
``format: json``)."""

from __future__ import annotations

import sys
from typing import TextIO

import structlog

from streamkit.channel import Subscription
from streamkit.config import ConsoleSinkConfig
from streamkit.model import BBO, Book, Record, Status, Trade, encode_json
from streamkit.sinks.base import Sink

log = structlog.get_logger(__name__)


class ConsoleSink(Sink):
    def __init__(self, name: str, config: ConsoleSinkConfig, stream: TextIO | None = None):
        super().__init__(name)
        self.config = config
        # None: resolve sys.stdout at each write (the live view redirects it).
        self.stream = stream

    async def run(self, subscription: Subscription) -> None:
        out = self.stream or sys.stdout
        write = out.write
        as_json = self.config.format == "json"
        try:
            async for record in subscription:
                write((encode_json(record).decode() if as_json else format_record(record)) + "\n")
                self.written += 1
            out.flush()
        except BrokenPipeError:
            # stdout went away (``streamkit run ... | head``): this sink is done; the feeds
            # and the other sinks carry on. Restarting it would only fail again.
            log.warning("console output closed; console sink stopped", sink=self.name)


def format_record(record: Record) -> str:
    """A compact human-readable line for a record."""
    head = f"{record.exchange:<8} {record.symbol or '-':<10}"
    if isinstance(record, Trade):
        return f"{head} trade  {record.side:<4} {record.size} @ {record.price}  id={record.id}"
    if isinstance(record, BBO):
        return (
            f"{head} bbo    {record.bid_size} @ {record.bid_price}  |  "
            f"{record.ask_price} x {record.ask_size}"
        )
    if isinstance(record, Book):
        kind = "snapshot" if record.snapshot else "delta"
        return (
            f"{head} book   {kind:<8} seq={record.seq} "
            f"bids={len(record.bids)} asks={len(record.asks)}"
        )
    if isinstance(record, Status):
        conn = f" [{record.connection}]" if record.connection else ""
        return f"{head} status {record.event}{conn} {record.detail}"
    return f"{head} {encode_json(record).decode()}"
