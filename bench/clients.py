"""Benchmark clients, each run in its own process: ``python bench/clients.py --client NAME
--port P --scenario JSON`` prints one JSON result line.

Clients (the same stream, the same checks):

- ``floor``: raw asyncio ``BufferedProtocol`` WebSocket reader that decodes every frame with
  msgspec into a Struct: the floor of what Python + asyncio can do.
- ``curl_cffi``: curl_cffi ``AsyncWebSocket`` raw receive loop, no decoding (the transport
  streamkit used to be built on).
- ``libcurl``: libcurl read directly, ``Curl.ws_recv()`` in a blocking loop (``select`` on
  ``CURLE_AGAIN``), no decoding, no event loop.
- ``sk-transport``: streamkit's own transport (``LibcurlTransport``) read in batches, no
  decoding: the like-for-like comparison with ``curl_cffi``.
- ``cryptofeed``: cryptofeed 2.4's Binance feed end to end (its websockets connection, its
  decoding and normalization into its ``Trade`` objects, its callback), on plain asyncio.
- ``streamkit-decode`` (depth): streamkit's transport plus the Binance plugin's decode and
  normalization of each depth frame into its ``Book`` delta record, without the book engine:
  issue 5's "decode and normalize" half of the depth target.
- ``streamkit``: the whole pipeline: transport -> actor -> Binance plugin (msgspec decode,
  normalize into ``Trade``/``Book``, book sync for depth) -> bus -> one consumer reading
  batches (``Subscription.get_batch``). ``streamkit-curl_cffi``: the same on
  ``transport.kind: curl_cffi``.

Every client records, per message, its receive time (``CLOCK_MONOTONIC`` µs) and what it got;
after the timed window (so it costs no measured CPU) the result is decoded where the client
did not decode, and checked: every message arrived, in order per stream, with the right
sequence number and values. CPU is the process's user+system time from the first message to
the last; latency is receive time minus the server's write time embedded in the frame.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import json
import os
import resource
import select
import socket
import sys
import time
from array import array
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))

import itertools

from frames import TS_BASE, depth_best_bid, depth_seq, stream_for, trade_price, trade_qty


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def now_us() -> int:
    return time.monotonic_ns() // 1000


# --- wire structs for clients that decode themselves (and for post-hoc checks) -------------


class AggTrade(msgspec.Struct, gc=False):
    a: int
    p: str
    q: str
    T: int
    m: bool


class DepthUpdate(msgspec.Struct, gc=False):
    E: int
    U: int
    u: int
    b: list[tuple[str, str]]
    a: list[tuple[str, str]]


class TradeFrame(msgspec.Struct, gc=False):
    stream: str
    data: AggTrade


class DepthFrame(msgspec.Struct, gc=False):
    stream: str
    data: DepthUpdate


def frame_decoder(kind: str) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(TradeFrame if kind == "trade" else DepthFrame)


# (key, seq, value, write time µs): what every client's messages are reduced to for checking.
Item = tuple[str, int, Any, int]


def item_from_frame(msg: TradeFrame | DepthFrame) -> Item:
    symbol = msg.stream.split("@", 1)[0].upper()
    d = msg.data
    if isinstance(d, AggTrade):
        return symbol, d.a, (d.p, d.q, d.m), d.T - TS_BASE
    return symbol, depth_seq(d.u), Decimal(d.b[0][0]), d.E - TS_BASE


def check(kind: str, sc: dict[str, Any], items: list[Item]) -> list[str]:
    """Every message of every stream, in order, with the values the server encoded."""
    problems: list[str] = []
    expected_keys = sc["conns"] if not sc.get("ping_every") else 0
    next_seq: dict[str, int] = {}
    for key, seq, value, _ in items:
        want = next_seq.get(key, 0)
        if seq != want:
            problems.append(f"{key}: got seq {seq}, expected {want}")
            if len(problems) > 5:
                break
        next_seq[key] = seq + 1
        if kind == "trade":
            price, qty, sell = value
            expected = (Decimal(trade_price(seq)), Decimal(trade_qty(seq)), bool(seq % 2))
            if (Decimal(price), Decimal(qty), sell) != expected:
                problems.append(f"{key} seq {seq}: wrong value {value}")
        elif value != depth_best_bid(seq):
            problems.append(f"{key} seq {seq}: wrong best bid {value}")
        if len(problems) > 5:
            break
    if len(next_seq) != expected_keys:
        problems.append(f"{len(next_seq)} streams delivered data, expected {expected_keys}")
    short = [k for k, n in next_seq.items() if n != sc["count"]]
    if short:
        problems.append(f"{len(short)} streams incomplete, e.g. {short[0]}: {next_seq[short[0]]}")
    return problems


class Recorder:
    """Receive times and payloads, plus the CPU/wall window from first to last message."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.times = array("q")
        self.values: list[Any] = []
        self.cpu0 = self.t0 = 0.0
        self.cpu1 = self.t1 = 0.0
        self.done = False

    def first(self) -> None:
        if os.environ.get("BENCH_GC") == "off":
            gc.disable()
        self.cpu0, self.t0 = cpu(), time.monotonic()

    def finish(self) -> None:
        self.cpu1, self.t1 = cpu(), time.monotonic()
        self.done = True


# --- floor: asyncio BufferedProtocol ------------------------------------------------------


def ws_handshake(port: int, path: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)  # byte by byte: leave any frame that follows in the socket
    assert b" 101 " in head.split(b"\r\n", 1)[0], head
    return sock


def masked_text(payload: bytes) -> bytes:
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    head = bytes((0x81, 0x80 | n)) if n < 126 else bytes((0x81, 0xFE)) + n.to_bytes(2, "big")
    return head + mask + body


def subscribe_payload(streams: list[str]) -> bytes:
    return json.dumps({"method": "SUBSCRIBE", "params": streams, "id": 1}).encode()


class FloorProtocol(asyncio.BufferedProtocol):
    def __init__(self, rec: Recorder, decode: Callable[[bytes], Any], done: asyncio.Future[None]):
        self.buf = bytearray(1 << 20)
        self.view = memoryview(self.buf)
        self.start = 0
        self.end = 0
        self.rec = rec
        self.decode = decode
        self.done = done

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.end > len(self.buf) - 65536:  # compact
            n = self.end - self.start
            self.buf[:n] = self.buf[self.start : self.end]
            self.start, self.end = 0, n
        return self.view[self.end :]

    def buffer_updated(self, nbytes: int) -> None:
        self.end += nbytes
        buf, pos, end = self.buf, self.start, self.end
        rec = self.rec
        t = now_us()
        while end - pos >= 2:
            n = buf[pos + 1] & 0x7F
            hdr = 2
            if n == 126:
                if end - pos < 4:
                    break
                n = (buf[pos + 2] << 8) | buf[pos + 3]
                hdr = 4
            elif n == 127:
                if end - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                hdr = 10
            if end - pos < hdr + n:
                break
            opcode = buf[pos] & 0x0F
            payload = bytes(buf[pos + hdr : pos + hdr + n])
            pos += hdr + n
            if opcode != 0x1 or not payload.startswith(b'{"stream"'):
                continue  # the subscribe ack, pings
            if not rec.times:
                rec.first()
            rec.values.append(item_from_frame(self.decode(payload)))
            rec.times.append(t)
            if len(rec.times) == rec.expected:
                rec.finish()
                self.done.set_result(None)
        self.start = pos


async def floor_client(port: int, sc: dict[str, Any], rec: Recorder) -> list[Item]:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    decode = frame_decoder(sc["kind"]).decode
    transports = []
    for c in range(sc["conns"]):
        sock = ws_handshake(port, "/stream")
        streams = [
            stream_for(sc["kind"], c * sc["streams_per_conn"] + i)[2]
            for i in range(sc["streams_per_conn"])
        ]
        sock.sendall(masked_text(subscribe_payload(streams)))
        sock.setblocking(False)
        tr, _ = await loop.create_connection(lambda: FloorProtocol(rec, decode, done), sock=sock)
        transports.append(tr)
    await done
    for tr in transports:
        tr.close()
    return rec.values


# --- curl_cffi AsyncWebSocket, raw ----------------------------------------------------------


async def curl_cffi_client(port: int, sc: dict[str, Any], rec: Recorder) -> list[Item]:
    from curl_cffi import CurlWsFlag
    from curl_cffi.requests import AsyncSession

    session = AsyncSession(max_clients=max(10, sc["conns"]))  # one curl handle per socket
    done = asyncio.get_running_loop().create_future()

    async def one(c: int) -> None:
        ws = await session.ws_connect(f"ws://127.0.0.1:{port}/stream")
        streams = [
            stream_for(sc["kind"], c * sc["streams_per_conn"] + i)[2]
            for i in range(sc["streams_per_conn"])
        ]
        await ws.send(subscribe_payload(streams), CurlWsFlag.TEXT)
        await ws.recv()  # the ack
        times, values = rec.times, rec.values
        while not done.done():
            data, _ = await ws.recv()
            if not times:
                rec.first()
            times.append(now_us())
            values.append(data)
            if len(times) == rec.expected:
                rec.finish()
                done.set_result(None)
        ws.terminate()

    tasks = [asyncio.create_task(one(c)) for c in range(sc["conns"])]
    await done
    for t in tasks:
        t.cancel()
    decode = frame_decoder(sc["kind"]).decode
    return [item_from_frame(decode(v)) for v in rec.values]


# --- streamkit's transport alone, raw ---------------------------------------------------------


async def transport_client(port: int, sc: dict[str, Any], rec: Recorder) -> list[Item]:
    """LibcurlTransport (``kind: curl``) read in batches, no decoding: the transport alone,
    to compare with curl_cffi's AsyncWebSocket doing the same work."""
    from streamkit.transport.libcurl import LibcurlTransport
    from streamkit.transport.options import TransportOptions

    done = asyncio.get_running_loop().create_future()

    async def one(c: int) -> None:
        t = LibcurlTransport(f"ws://127.0.0.1:{port}/stream", TransportOptions())
        await t.connect()
        first = c * sc["streams_per_conn"]
        streams = [stream_for(sc["kind"], first + i)[2] for i in range(sc["streams_per_conn"])]
        await t.send(subscribe_payload(streams))
        await t.recv_batch(1)  # the ack
        times, values = rec.times, rec.values
        while not done.done():
            batch = await t.recv_batch()
            if not times:
                rec.first()
            now = now_us()
            for frame in batch:
                times.append(now)
                values.append(frame.data)
            if len(times) >= rec.expected and not done.done():
                rec.finish()
                done.set_result(None)
        await t.close()

    tasks = [asyncio.create_task(one(c)) for c in range(sc["conns"])]
    await done
    for task in tasks:
        task.cancel()
    decode = frame_decoder(sc["kind"]).decode
    return [item_from_frame(decode(v)) for v in rec.values]


# --- streamkit's transport + the Binance plugin's decode and normalize, no book engine ------


async def decode_client(port: int, sc: dict[str, Any], rec: Recorder) -> list[Item]:
    """LibcurlTransport read in batches, every frame through the Binance plugin's own
    ``on_message`` (its one-pass msgspec decode of envelope + payload into the wire Struct,
    its routing, and its price interning into Decimal levels), each depth diff normalized into
    the ``Book`` delta record by :func:`streamkit_binance.depth_sync.delta_record`: everything
    the pipeline does to a depth frame except the book engine (apply + verify), the actor and
    the bus. Records are reduced as the ``streamkit`` client's consumer reduces them."""
    from streamkit.config import FeedConfig
    from streamkit.feed import Output
    from streamkit.model import Book
    from streamkit.transport.libcurl import LibcurlTransport
    from streamkit.transport.options import TransportOptions
    from streamkit_binance import BinanceFeed
    from streamkit_binance.depth_sync import delta_record
    from streamkit_binance.feed import BinanceProtocol

    if sc["kind"] != "depth" or sc["conns"] != 1:
        raise SystemExit("skip: the decode-only client reads depth on one connection")

    class DecodeOnly(BinanceProtocol):
        """The plugin's protocol with the depth handler's book engine (DepthSync.on_diff)
        replaced by the record it would publish."""

        def _on_depth(self, symbol: str, d: Any, recv_ts: int, out: Output) -> None:
            diff = self.books[symbol].diff(d)  # the plugin's price interning
            out.records.append(delta_record(self._exchange, symbol, diff, recv_ts))

    symbols = [stream_for("depth", i)[0] for i in range(sc["streams_per_conn"])]
    feed = BinanceFeed(
        FeedConfig(exchange="binance", symbols=symbols, channels=["l2_book"]),
        url=f"ws://127.0.0.1:{port}/stream",
        rest_url=f"http://127.0.0.1:{port}",
    )
    [plan] = feed.plan()
    protocol = DecodeOnly(feed, plan, "binance/0")
    t = LibcurlTransport(protocol.url(), TransportOptions())
    await t.connect()
    out = Output()
    on_message = protocol.on_message
    for request in protocol.subscriptions():
        await t.send(request.payload)
    while not out.acks:  # the subscribe ack
        for frame in await t.recv_batch(1):
            on_message(frame.data, time.time_ns(), out)
    out.clear()
    times, values = rec.times, rec.values
    records = out.records
    while len(times) < rec.expected:
        batch = await t.recv_batch()
        if not times:
            rec.first()
        recv_ts = time.time_ns()  # once per batch, as the actor does
        now = now_us()
        for frame in batch:
            on_message(frame.data, recv_ts, out)
        for r in records:
            if type(r) is Book:
                times.append(now)
                values.append((r.symbol, depth_seq(r.seq), r.bids[0][0], r.ts))
        out.clear()
    rec.finish()
    await t.close()
    return [(k.replace("-", ""), seq, v, ts // 1_000_000 - TS_BASE) for k, seq, v, ts in values]


# --- libcurl direct ------------------------------------------------------------------------


def libcurl_client(port: int, sc: dict[str, Any], rec: Recorder) -> list[Item]:
    from curl_cffi import Curl, CurlECode, CurlError, CurlInfo, CurlOpt, CurlWsFlag

    if sc["conns"] != 1:
        raise SystemExit("skip: the libcurl direct baseline reads one connection")
    curl = Curl()
    curl.setopt(CurlOpt.URL, f"ws://127.0.0.1:{port}/stream")
    curl.setopt(CurlOpt.CONNECT_ONLY, 2)
    curl.setopt(CurlOpt.TCP_NODELAY, 1)
    curl.perform()
    fd = curl.getinfo(CurlInfo.ACTIVESOCKET)
    streams = [stream_for(sc["kind"], i)[2] for i in range(sc["streams_per_conn"])]
    curl.ws_send(subscribe_payload(streams), CurlWsFlag.TEXT)
    recv = curl.ws_recv
    times, values = rec.times, rec.values
    chunks: list[bytes] = []
    again = CurlECode.AGAIN
    acked = False
    while len(times) < rec.expected:
        try:
            data, frame = recv()
        except CurlError as exc:
            if exc.code != again:
                raise
            select.select([fd], [], [])
            continue
        if frame.bytesleft or frame.flags & CurlWsFlag.CONT:
            chunks.append(data)
            continue
        if chunks:
            chunks.append(data)
            data = b"".join(chunks)
            chunks.clear()
        if not frame.flags & CurlWsFlag.TEXT:
            continue
        if not acked:  # the subscribe ack
            acked = True
            continue
        if not times:
            rec.first()
        times.append(now_us())
        values.append(data)
    rec.finish()
    curl.close()
    decode = frame_decoder(sc["kind"]).decode
    return [item_from_frame(decode(v)) for v in values]


# --- cryptofeed --------------------------------------------------------------------------------


async def cryptofeed_client(port: int, sc: dict[str, Any], rec: Recorder) -> list[Item]:
    """cryptofeed's Binance feed end to end: its websockets connection (subscribed through
    the URL, ``/stream?streams=...``, as cryptofeed does), its JSON decoding and
    normalization into its ``Trade`` objects, its callback; on plain asyncio (``uvloop:
    False``). Only what would touch the network is replaced: the symbol map (normally from
    ``GET /api/v3/exchangeInfo``) is set statically, and the address points at the bench
    server over ``ws://`` (cryptofeed insists on ``wss://``)."""
    try:
        from cryptofeed import FeedHandler
        from cryptofeed.connection import RestEndpoint, Routes, WebsocketEndpoint
        from cryptofeed.defines import BINANCE, SELL, TRADES
        from cryptofeed.exchanges import Binance
        from cryptofeed.symbols import Symbols
    except ImportError as exc:
        raise SystemExit(f"skip: cryptofeed not installed ({exc})") from None
    if sc["kind"] != "trade" or sc["conns"] != 1:
        raise SystemExit("skip: the cryptofeed baseline reads trades on one connection")
    # Binance's TRADES channel is <symbol>@aggTrade, the stream the server sends.
    assert Binance.websocket_channels[TRADES] == "aggTrade"
    names = [stream_for("trade", i) for i in range(sc["streams_per_conn"])]
    Symbols.set(BINANCE, {norm: exch for norm, exch, _ in names}, {})

    class BenchBinance(Binance):  # type: ignore[misc]
        websocket_endpoints = [WebsocketEndpoint(f"wss://127.0.0.1:{port}")]
        rest_endpoints = [
            RestEndpoint(
                f"http://127.0.0.1:{port}",
                routes=Routes("/api/v3/exchangeInfo", l2book="/api/v3/depth?symbol={}&limit={}"),
            )
        ]

        def connect(self) -> list[Any]:
            conns = super().connect()
            for conn, *_ in conns:  # WSAsyncConn only accepts wss:// at construction
                conn.address = "ws://" + conn.address.removeprefix("wss://")
            return conns

    done = asyncio.get_running_loop().create_future()
    times, values = rec.times, rec.values

    async def on_trade(t: Any, receipt_timestamp: float) -> None:
        if not times:
            rec.first()
        times.append(now_us())
        # cryptofeed's timestamp is T / 1000 (T in ms on the venue). The bench's T is
        # TS_BASE + µs, so round(timestamp * 1000) is T again, exactly: the float keeps
        # ~0.06 units of error at 1e15, far below the 0.5 that rounding forgives.
        values.append(
            (
                t.symbol.replace("-", ""),
                int(t.id),
                (t.price, t.amount, t.side == SELL),
                round(t.timestamp * 1000) - TS_BASE,
            )
        )
        if len(times) == rec.expected:
            rec.finish()
            done.set_result(None)

    config = {"uvloop": False, "log": {"disabled": True}}
    fh = FeedHandler(config=config)
    fh.add_feed(
        BenchBinance(
            config=config,
            symbols=[norm for norm, _, _ in names],
            channels=[TRADES],
            callbacks={TRADES: on_trade},
        )
    )
    fh.run(start_loop=False, install_signal_handlers=False)
    await done
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(fh.stop_async(), 5)
    return rec.values


# --- the streamkit pipeline ------------------------------------------------------------------


def pipeline_config(port: int, sc: dict[str, Any], transport_kind: str) -> str:
    channel = "trades" if sc["kind"] == "trade" else "l2_book"
    feeds = []
    for c in range(sc["conns"]):
        symbols = [
            stream_for(sc["kind"], c * sc["streams_per_conn"] + i)[0]
            for i in range(sc["streams_per_conn"])
        ]
        feeds.append(
            {
                "exchange": "binance",
                "name": f"bench{c}",
                "url": f"ws://127.0.0.1:{port}/stream",
                "rest_url": f"http://127.0.0.1:{port}",
                "symbols": symbols,
                "channels": [channel],
                "stale_after": 3600,
                "connect_timeout": 60,
                "transport": {"kind": transport_kind, "recv_queue_size": 1024},
            }
        )
    return json.dumps({"feeds": feeds, "logging": {"level": "warning"}})


async def streamkit_client(
    port: int, sc: dict[str, Any], rec: Recorder, transport_kind: str
) -> tuple[list[Item], dict[str, Any]]:
    from streamkit.app import App
    from streamkit.config import parse_config
    from streamkit.model import Book, Status, StatusEvent, Trade

    app = App(parse_config(pipeline_config(port, sc, transport_kind)))
    data_type = Trade if sc["kind"] == "trade" else Book
    sub = app.stream(maxsize=65536, name="fast")
    slow = (
        app.stream(data_type, maxsize=1000, policy="drop_oldest", name="slow")
        if sc.get("slow")
        else None
    )
    problems: list[str] = []
    extra: dict[str, Any] = {}
    done = asyncio.get_running_loop().create_future()

    async def consume() -> None:
        times, values = rec.times, rec.values
        while True:
            batch = await sub.get_batch()
            t = now_us()
            for r in batch:
                # Reduce each record to (symbol, seq, value, write time) at once: retaining
                # whole records (their level lists) would make the garbage collector's cost
                # grow with the run, which no real consumer pays.
                if type(r) is Trade:
                    if not times:
                        rec.first()
                    times.append(t)
                    values.append((r.symbol, int(r.id), (r.price, r.size, r.side == "sell"), r.ts))
                elif type(r) is Book and not r.snapshot:
                    if not times:
                        rec.first()
                    times.append(t)
                    values.append((r.symbol, depth_seq(r.seq), r.bids[0][0], r.ts))
                elif isinstance(r, Status) and r.event in (
                    StatusEvent.GAP,
                    StatusEvent.DECODE_ERROR,
                    StatusEvent.DISCONNECTED,
                    StatusEvent.RESYNC,
                    StatusEvent.ERROR,
                ):
                    problems.append(f"status {r.event}: {r.detail}")
            if len(times) >= rec.expected and not done.done():
                rec.finish()
                done.set_result(None)

    slow_seen: list[int] = []

    async def consume_slowly() -> None:
        assert slow is not None
        while True:
            r = await slow.get()
            slow_seen.append(int(r.id) if data_type is Trade else r.seq)  # type: ignore[attr-defined]
            await asyncio.sleep(0.001)  # a consumer that manages well under 1,000 records/s

    consumer = asyncio.create_task(consume())
    slow_task = asyncio.create_task(consume_slowly()) if slow else None
    await app.start()
    if sc.get("ping_every"):
        # idle: wait until every connection is subscribed, then measure a quiet window
        while not all(a.state.value == "streaming" for a in app.actors):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        rec.first()
        await asyncio.sleep(sc["duration"] - 1.0)
        rec.finish()
        extra["connections"] = len(app.actors)
        extra["reconnects"] = sum(a.counters.reconnects for a in app.actors)
        if extra["reconnects"]:
            problems.append(f"{extra['reconnects']} reconnects while idle")
    else:
        await done
    extra["rss_mb_before_stop"] = rss_mb()
    if slow is not None:
        extra["slow_delivered"] = slow.delivered
        extra["slow_dropped"] = slow.dropped
        extra["slow_max_depth"] = slow.max_depth
        if any(b <= a for a, b in itertools.pairwise(slow_seen)):
            problems.append("slow consumer saw records out of order")
    await app.stop()
    consumer.cancel()
    if slow_task:
        slow_task.cancel()
    extra["problems"] = problems
    # keys: normalized symbols S0-USDT -> compare by stream symbol S0USDT; ts (ns) -> µs
    items = [
        (k.replace("-", ""), seq, v, ts // 1_000_000 - TS_BASE) for k, seq, v, ts in rec.values
    ]
    return items, extra


# --- main ------------------------------------------------------------------------------------


def percentiles(lat: list[int]) -> dict[str, float]:
    if not lat:
        return {"p50_us": float("nan"), "p99_us": float("nan"), "p999_us": float("nan")}
    lat.sort()
    n = len(lat)

    def at(q: float) -> float:
        return float(lat[min(n - 1, int(q * n))])

    return {"p50_us": at(0.50), "p99_us": at(0.99), "p999_us": at(0.999)}


# Quantiles of the latency CDF kept in the results (bench/plot.py draws the curves from them):
# every percentile, then the tail in finer steps up to the maximum. About 110 points per row
# instead of every sample keeps the results JSON small.
CDF_QUANTILES = [i / 100 for i in range(100)] + [0.995, 0.999, 0.9995, 0.9999, 1.0]


def latency_cdf(lat: list[int]) -> list[list[float]]:
    """``[[latency_us, quantile], ...]`` over ``CDF_QUANTILES``; sorts ``lat`` in place."""
    if not lat:
        return []
    lat.sort()  # already sorted by percentiles(): timsort makes this one linear pass
    n = len(lat)
    return [[float(lat[min(n - 1, int(q * n))]), q] for q in CDF_QUANTILES]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--client", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--scenario", required=True)
    args = parser.parse_args()
    sc = json.loads(args.scenario)
    expected = 0 if sc.get("ping_every") else sc["count"] * sc["conns"]
    rec = Recorder(expected)
    extra: dict[str, Any] = {}
    client = args.client
    if client == "floor":
        items = asyncio.run(floor_client(args.port, sc, rec))
    elif client == "curl_cffi":
        items = asyncio.run(curl_cffi_client(args.port, sc, rec))
    elif client == "sk-transport":
        items = asyncio.run(transport_client(args.port, sc, rec))
    elif client == "libcurl":
        items = libcurl_client(args.port, sc, rec)
    elif client == "cryptofeed":
        items = asyncio.run(cryptofeed_client(args.port, sc, rec))
    elif client == "streamkit-decode":
        items = asyncio.run(decode_client(args.port, sc, rec))
    elif client.startswith("streamkit"):
        kind = "curl_cffi" if client.endswith("curl_cffi") else "curl"
        from streamkit import app, config, model, runtime  # noqa: F401  (imported before the freeze)

        # The product's own runner: STREAMKIT_LOOP picks the loop (run.py: asyncio).
        items, extra = runtime.run(streamkit_client(args.port, sc, rec, kind))
    else:
        raise SystemExit(f"unknown client {client}")
    rss = extra.pop("rss_mb_before_stop", None) or rss_mb()
    problems = extra.pop("problems", [])
    if not sc.get("ping_every"):
        problems += check(sc["kind"], sc, items)
    wall = rec.t1 - rec.t0
    n = len(rec.times)
    lat = [int(t) - w for t, (_, _, _, w) in zip(rec.times, items, strict=False)]
    result = {
        "client": client,
        "messages": n,
        "wall_s": wall,
        "cpu_s": rec.cpu1 - rec.cpu0,
        "msgs_per_s": (n - 1) / wall if n > 1 and wall > 0 else 0.0,
        "cpu_us_per_msg": 1e6 * (rec.cpu1 - rec.cpu0) / max(1, n - 1) if n > 1 else None,
        "cpu_pct": 100 * (rec.cpu1 - rec.cpu0) / wall if wall > 0 else 0.0,
        "rss_mb": rss,
        **percentiles(lat),
        "latency_cdf": latency_cdf(lat),
        "ok": not problems,
        "problems": problems[:10],
        **extra,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
