"""Record what a running App receives, byte-exact, so it can be replayed through the same
plugin code (:mod:`streamkit.replay`) — for debugging, regression tests and building test
fixtures for your own plugins.

One file sequence per connection, ``<dir>/<feed label>_<n>.frames.jsonl[.zst]``, rotated by
size/time (:class:`~streamkit.sinks.files.RotatingWriter`). Each line is one JSON object:

- ``{"kind": "feed", ...}``: first line of every file: the feed's config, URLs and the
  connection's streams, so that a file replays on its own, without the original config;
- ``{"kind": "open", "ts", "conn", "url"}``: a connection attempt (a fresh protocol state);
- ``{"kind": "frame", "ts", "conn", "data"}`` (or ``"b64"`` for frames that are not UTF-8):
  one received frame and its receive time (ns) as the plugin saw it;
- ``{"kind": "http", "ts", "conn", "url", "status", "data"|"b64"}``: a REST answer the
  plugin asked for (order books snapshots), at the moment it was handed to the plugin.

Use::

    recorder = FrameRecorder("recordings/")
    app = App(config)
    await app.start()
    recorder.attach(app)   # right after start(), before awaiting anything else
    ...
    await app.stop(); await recorder.close()

or simply ``await record(config, "recordings/", duration=60)`` (what ``streamkit record``
runs).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import structlog

from streamkit.actor import ConnectionActor, HttpFetch, TransportFactory
from streamkit.app import App
from streamkit.config import AppConfig
from streamkit.sinks.files import Compression, RotatingWriter
from streamkit.transport.base import Transport
from streamkit.transport.options import TransportOptions

log = structlog.get_logger(__name__)

FILE_SUFFIX = ".frames.jsonl"


class FeedHeader(msgspec.Struct, tag="feed", tag_field="kind", frozen=True):
    conn: str
    ts: int
    feed: dict[str, Any]
    url: str | None
    rest_url: str | None
    plan_index: int
    streams: list[tuple[str, str, str]]
    """(channel, symbol, exchange stream name) of this connection."""


class OpenEvent(msgspec.Struct, tag="open", tag_field="kind", frozen=True):
    conn: str
    ts: int
    url: str


class FrameEvent(msgspec.Struct, tag="frame", tag_field="kind", frozen=True, omit_defaults=True):
    conn: str
    ts: int
    data: str | None = None
    b64: str | None = None

    def payload(self) -> bytes:
        return self.data.encode() if self.data is not None else base64.b64decode(self.b64 or "")


class HttpEvent(msgspec.Struct, tag="http", tag_field="kind", frozen=True, omit_defaults=True):
    conn: str
    ts: int
    url: str
    status: int
    data: str | None = None
    b64: str | None = None

    def payload(self) -> bytes:
        return self.data.encode() if self.data is not None else base64.b64decode(self.b64 or "")


Event = FeedHeader | OpenEvent | FrameEvent | HttpEvent

_encoder = msgspec.json.Encoder()


def _text_or_b64(data: bytes) -> dict[str, str]:
    try:
        return {"data": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(data).decode("ascii")}


class _ConnectionLog:
    """The files of one connection: a line buffer the frame tap appends to (cheap, sync) and
    the rotating writer it is flushed to."""

    def __init__(self, writer: RotatingWriter) -> None:
        self.writer = writer
        self.buffer = bytearray()
        self.frames = 0


class FrameRecorder:
    """Taps every connection of an App; see the module docstring."""

    def __init__(
        self,
        directory: str | Path,
        *,
        rotate_bytes: int | None = 256 * 1024 * 1024,
        rotate_interval: float | None = 3600.0,
        compression: Compression = "zstd",
        flush_interval: float = 1.0,
    ) -> None:
        self.directory = Path(directory)
        self.rotate_bytes = rotate_bytes
        self.rotate_interval = rotate_interval
        self.compression = compression
        self.flush_interval = flush_interval
        self._logs: dict[str, _ConnectionLog] = {}
        self._flusher: asyncio.Task[None] | None = None

    @property
    def files(self) -> list[Path]:
        return [f for c in self._logs.values() for f in c.writer.files]

    @property
    def frames(self) -> int:
        return sum(c.frames for c in self._logs.values())

    def attach(self, app: App) -> None:
        """Tap every connection actor of a started App. Call it right after
        ``await app.start()``, before awaiting anything else, so the actors have not read
        a frame yet."""
        for actor in app.actors:
            self.attach_actor(actor)
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_periodically())

    def attach_actor(self, actor: ConnectionActor) -> None:
        name = actor.name
        feed = actor.feed
        header = FeedHeader(
            conn=name,
            ts=time.time_ns(),
            feed=msgspec.to_builtins(feed.config),
            url=feed.url,
            rest_url=feed.rest_url,
            plan_index=actor.plan.index,
            streams=[(s.channel, s.symbol, s.name) for s in actor.plan.streams],
        )
        writer = RotatingWriter(
            self.directory / (_safe(name) + FILE_SUFFIX),
            rotate_bytes=self.rotate_bytes,
            rotate_interval=self.rotate_interval,
            compression=self.compression,
            header=_encoder.encode(header) + b"\n",
        )
        conn = self._logs[name] = _ConnectionLog(writer)
        buffer = conn.buffer

        def tap(connection: str, data: bytes, recv_ts: int) -> None:
            conn.frames += 1
            buffer.extend(_encoder.encode(FrameEvent(connection, recv_ts, **_text_or_b64(data))))
            buffer.extend(b"\n")

        actor.frame_tap = tap
        actor.transport_factory = self._tap_opens(name, actor.transport_factory, buffer)
        actor.http_fetch = self._tap_http(name, actor.http_fetch, buffer)

    @staticmethod
    def _tap_opens(name: str, factory: TransportFactory, buffer: bytearray) -> TransportFactory:
        def open_transport(url: str, options: TransportOptions) -> Transport:
            buffer.extend(_encoder.encode(OpenEvent(name, time.time_ns(), url)) + b"\n")
            return factory(url, options)

        return open_transport

    @staticmethod
    def _tap_http(name: str, fetch: HttpFetch, buffer: bytearray) -> HttpFetch:
        async def fetch_and_record(url: str) -> tuple[int, bytes]:
            status, body = await fetch(url)
            # Recorded as the actor hands it to the plugin: no await between here and
            # protocol.on_http, so its place among the frames is exact.
            event = HttpEvent(name, time.time_ns(), url, status, **_text_or_b64(body))
            buffer.extend(_encoder.encode(event) + b"\n")
            return status, body

        return fetch_and_record

    def flush(self) -> None:
        for conn in self._logs.values():
            if conn.buffer:
                conn.writer.write(conn.buffer)
                conn.buffer.clear()
            conn.writer.flush()

    async def close(self) -> None:
        """Write everything buffered and finish the files."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        self.flush()
        for conn in self._logs.values():
            conn.writer.close()

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            self.flush()


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)


async def record(
    config: AppConfig,
    directory: str | Path,
    *,
    duration: float | None = None,
    rotate_bytes: int | None = 256 * 1024 * 1024,
    rotate_interval: float | None = 3600.0,
    compression: Compression = "zstd",
    on_start: Callable[[App], None] | None = None,
) -> FrameRecorder:
    """Run ``config`` (its sinks too) for ``duration`` seconds (None: until
    :meth:`App.request_stop`, e.g. on SIGINT) while recording every connection into
    ``directory``. ``on_start`` gets the started App (the CLI installs its signal handlers
    there). Returns the closed recorder (``.files``, ``.frames``)."""
    recorder = FrameRecorder(
        directory,
        rotate_bytes=rotate_bytes,
        rotate_interval=rotate_interval,
        compression=compression,
    )
    app = App(config)
    await app.start()
    recorder.attach(app)
    if on_start is not None:
        on_start(app)
    try:
        await app.run(duration)
    finally:
        await recorder.close()
        log.info("recording closed", files=[str(f) for f in recorder.files], frames=recorder.frames)
    return recorder
