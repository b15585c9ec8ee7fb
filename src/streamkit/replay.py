"""Replay recordings (:mod:`streamkit.record`) through the same plugin code as live.

Every connection's recorded events drive a fresh :class:`~streamkit.feed.FeedProtocol` of
the recorded feed, exactly as its connection actor did: ``open`` starts a new protocol state
(``on_connected``), each ``frame`` goes to ``on_message`` with its recorded receive time, each
``http`` answer to ``on_http``; book resyncs the plugin asks for are run through
``protocol.resync`` (their REST answers are in the recording). The records that come out are
the ones the live run published, with the same ``recv_ts`` for frame-borne records; what the
actor itself adds live (``connected``/``subscribed``/``disconnected``/... status records) is
not reproduced, while ``decode_error`` statuses are, worded as the actor words them.

Pacing: ``speed=1.0`` replays at the recorded pace, ``speed=N`` N times faster, ``None`` as
fast as possible. Several files (connections, rotated segments) are merged in time order.

Use::

    async for batch in replay(["recordings/"], speed=None):
        for record in batch: ...

or :func:`run_replay` (what ``streamkit replay`` runs) to feed sinks.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import structlog

from streamkit import plugins
from streamkit.channel import Bus
from streamkit.config import FeedConfig, SinkConfig
from streamkit.feed import (
    Action,
    ConnectionPlan,
    Feed,
    FeedProtocol,
    HttpGet,
    Output,
    ResyncBook,
    Stream,
)
from streamkit.model import Record, Status, StatusEvent
from streamkit.record import FILE_SUFFIX, Event, FeedHeader, FrameEvent, HttpEvent, OpenEvent
from streamkit.sinks.base import build_sink, subscribe_sink
from streamkit.sinks.files import read_lines

log = structlog.get_logger(__name__)

_decoder: msgspec.json.Decoder[Event] = msgspec.json.Decoder(Event)


def recording_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files named by ``paths``; a directory stands for every recording file in it."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(f for f in p.iterdir() if FILE_SUFFIX in f.name))
        else:
            files.append(p)
    return files


def read_events(path: Path) -> Iterator[Event]:
    for line in read_lines(path):
        if line.strip():
            yield _decoder.decode(line)


def merged_events(paths: Iterable[str | Path]) -> Iterator[Event]:
    """Every event of every file, in receive-time order (stable within a file)."""
    streams = [
        ((e.ts, i, n, e) for n, e in enumerate(read_events(f)))
        for i, f in enumerate(recording_files(paths))
    ]
    for _, _, _, event in heapq.merge(*streams, key=lambda t: t[:3]):
        yield event


@dataclass
class _Connection:
    feed: Feed
    plan: ConnectionPlan
    name: str
    protocol: FeedProtocol | None = None
    pending_http: list[HttpGet] = field(default_factory=list)
    decode_errors: int = 0


class Replayer:
    """Turns recorded events into records; one instance per replay."""

    def __init__(self) -> None:
        self.connections: dict[str, _Connection] = {}
        self.frames = 0
        self.records = 0
        self.decode_errors = 0

    def feed_event(self, event: Event) -> list[Record]:
        """Apply one event; returns the records it produced (possibly none)."""
        out = Output()
        if isinstance(event, FeedHeader):
            if event.conn not in self.connections:
                self.connections[event.conn] = _connection_from(event)
            return []
        conn = self.connections.get(event.conn)
        if conn is None:
            raise ValueError(f"recording has events of {event.conn!r} before its feed header")
        if isinstance(event, OpenEvent):
            conn.protocol = conn.feed.protocol(conn.plan, conn.name)
            conn.pending_http.clear()
            conn.protocol.on_connected(event.ts, out)
        elif conn.protocol is None:
            return []  # a segment that starts mid-connection: wait for the next open
        elif isinstance(event, FrameEvent):
            self.frames += 1
            data = event.payload()
            try:
                conn.protocol.on_message(data, event.ts, out)
            except Exception as exc:
                self.decode_errors += 1
                out.records.append(_decode_error(conn, data, exc, event.ts))
        elif isinstance(event, HttpEvent):
            request = next((r for r in conn.pending_http if r.url == event.url), None)
            if request is None:
                request = HttpGet(event.url)
            else:
                conn.pending_http.remove(request)
            conn.protocol.on_http(request, event.status, event.payload(), event.ts, out)
        self._actions(conn, out.actions)
        self.records += len(out.records)
        return list(out.records)

    def _actions(self, conn: _Connection, actions: list[Action]) -> None:
        assert conn.protocol is not None
        for action in actions:
            if isinstance(action, HttpGet):
                conn.pending_http.append(action)
            elif isinstance(action, ResyncBook):
                self._actions(conn, conn.protocol.resync(action.symbol, action.reason))
            # Send and Reconnect went to the venue live; their effects are in the recording.


def _connection_from(header: FeedHeader) -> _Connection:
    config = msgspec.convert(header.feed, FeedConfig)
    feed = plugins.load(config.exchange)(config, url=header.url, rest_url=header.rest_url)
    plan = ConnectionPlan(header.plan_index, tuple(Stream(c, s, n) for c, s, n in header.streams))
    return _Connection(feed, plan, header.conn)


def _decode_error(conn: _Connection, data: bytes, exc: Exception, recv_ts: int) -> Status:
    sample = data[:200].decode("utf-8", "replace")
    return Status(
        exchange=conn.feed.id,
        symbol=None,
        ts=None,
        recv_ts=recv_ts,
        event=StatusEvent.DECODE_ERROR,
        detail=f"{exc}; sample: {sample}",
        connection=conn.name,
    )


async def replay(
    paths: Iterable[str | Path], *, speed: float | None = None
) -> AsyncIterator[list[Record]]:
    """Yield the records of a recording, batch by event, paced by ``speed`` (None: as fast
    as possible; 1.0: recorded pace; N: N times faster)."""
    if speed is not None and not speed > 0:
        raise ValueError(f"speed must be > 0 (or None for as fast as possible), got {speed}")
    replayer = Replayer()
    first_ts: int | None = None
    started = time.monotonic()
    for n, event in enumerate(merged_events(paths)):
        if speed is not None:
            first_ts = event.ts if first_ts is None else first_ts
            due = started + (event.ts - first_ts) / 1e9 / speed
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        elif n % 1000 == 0:
            await asyncio.sleep(0)  # as fast as possible, but let other tasks run
        records = replayer.feed_event(event)
        if records:
            yield records


async def run_replay(
    paths: Iterable[str | Path],
    sinks: list[SinkConfig],
    *,
    speed: float | None = None,
) -> dict[str, Any]:
    """Replay into sinks (what ``streamkit replay FILES`` runs, with a console sink by
    default): returns counts."""
    bus = Bus()
    built = [build_sink(f"sink[{i}]", cfg) for i, cfg in enumerate(sinks)]
    tasks = [
        asyncio.create_task(sink.run(subscribe_sink(bus, sink.name, cfg)))
        for sink, cfg in zip(built, sinks, strict=True)
    ]
    records = 0
    try:
        async for batch in replay(paths, speed=speed):
            records += len(batch)
            await bus.publish_many(batch)
    finally:
        bus.close()
        await asyncio.gather(*tasks)
    return {"records": records, "sinks": {s.name: s.written for s in built}}
