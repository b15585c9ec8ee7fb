"""What only LibcurlTransport (``kind: curl``, streamkit's own libcurl read loop) does,
against a real aiohttp WebSocket server on 127.0.0.1 (tests/transport_peer.py): fragment
reassembly, frames larger than the receive buffer, PONGs seen and sent, pausing on a full
receive queue, the C accelerator against the pure-Python loop, the default factory kind.

The Transport contract it shares with CurlTransport is tested, for both, in
tests/test_transport_curl_contract.py.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import os
import struct
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import WSMsgType, web
from transport_peer import WsServer, opts, raw_frame, recv_n, running

from streamkit.errors import ConnectionClosed, MessageTooLarge
from streamkit.transport import libcurl
from streamkit.transport.base import Frame
from streamkit.transport.factory import make_transport
from streamkit.transport.libcurl import RECV_BUFFER_SIZE, LibcurlTransport
from streamkit.transport.options import TransportOptions

# A stream mixing what the C accelerator reads itself (whole TEXT/BINARY frames, one at the
# limit) with what it leaves to Python (fragments, a PING between fragments, an unsolicited
# PONG), long enough to span several of its batches; (opcode, payload, fin).
MIXED_LIMIT = 1000
MIXED: list[tuple[int, bytes, bool]] = [
    *[(0x1, f"t{i}".encode(), True) for i in range(20)],
    (0x2, b"\x00\xff", True),
    (0x1, b"frag", False),
    (0x9, b"ping between", True),
    (0x0, b"ment", False),
    (0x0, b"ed", True),
    (0xA, b"unsolicited", True),
    *[(0x1, f"u{i}".encode(), True) for i in range(20)],
    (0x1, b"x" * MIXED_LIMIT, True),
    (0x2, b"\x01", False),
    (0x0, b"\x02", True),
    *[(0x1, f"v{i}".encode(), True) for i in range(5)],
]
MIXED_FRAMES = [
    *[Frame(f"t{i}".encode()) for i in range(20)],
    Frame(b"\x00\xff", binary=True),
    Frame(b"fragmented"),
    *[Frame(f"u{i}".encode()) for i in range(20)],
    Frame(b"x" * MIXED_LIMIT),
    Frame(b"\x01\x02", binary=True),
    *[Frame(f"v{i}".encode()) for i in range(5)],
]


class FastWsServer(WsServer):
    """The shared scenarios plus the ones only this transport's tests use: raw frames
    aiohttp cannot produce by itself, messages of a given size, a server-initiated PING."""

    def __init__(self) -> None:
        super().__init__()
        self.pongs_seen = 0
        self.app.router.add_get("/fragments", self.fragments)
        self.app.router.add_get("/large/{n}", self.large)
        self.app.router.add_get("/server-pings", self.server_pings)
        self.app.router.add_get("/mixed/{end}", self.mixed)

    async def fragments(self, request: web.Request) -> web.WebSocketResponse:
        ws = await self._ws(request)
        transport = request.transport
        assert transport is not None
        # "hello, world" as TEXT(fin=0) + CONT(fin=0) + CONT(fin=1), a ping between fragments
        # (allowed by RFC 6455), then a binary message in two fragments and one whole frame.
        transport.write(
            raw_frame(0x1, b"hel", False)
            + raw_frame(0x1 & 0, b"lo, ", False)  # opcode 0: continuation
            + raw_frame(0x9, b"between", True)
            + raw_frame(0x0, b"world", True)
            + raw_frame(0x2, b"\x00\x01", False)
            + raw_frame(0x0, b"\x02", True)
            + raw_frame(0x1, b"whole", True)
        )
        await ws.receive()
        return ws

    async def mixed(self, request: web.Request) -> web.WebSocketResponse:
        ws = await self._ws(request)
        transport = request.transport
        assert transport is not None
        if request.match_info["end"] == "close":
            end = raw_frame(0x8, struct.pack("!H", 4001) + b"mixed done", True)
        else:  # one byte over max_message_size, in one frame and one read
            end = raw_frame(0x1, b"y" * (MIXED_LIMIT + 1), True)
        transport.write(b"".join(raw_frame(*f) for f in MIXED) + end)
        await ws.receive()
        return ws

    async def large(self, request: web.Request) -> web.WebSocketResponse:
        ws = await self._ws(request)
        n = int(request.match_info["n"])
        await ws.send_str("x" * n)
        await ws.send_str("after")
        await ws.receive()
        return ws

    async def server_pings(self, request: web.Request) -> web.WebSocketResponse:
        """Sends one PING and reports each PONG it gets back as a text frame."""
        ws = await self._ws(request, autoping=False)
        await ws.ping(b"are you there")
        async for msg in ws:
            if msg.type is WSMsgType.PONG:
                self.pongs_seen += 1
                await ws.send_str(f"pong {bytes(msg.data)!r}")
        return ws


@pytest.fixture
async def server() -> AsyncIterator[FastWsServer]:
    async with running(FastWsServer()) as srv:
        yield srv


async def connected(url: str, **kwargs: object) -> LibcurlTransport:
    transport = LibcurlTransport(url, opts(**kwargs))
    await transport.connect()
    return transport


# --- basics ------------------------------------------------------------------------------------


def test_kind_curl_is_the_default() -> None:
    assert TransportOptions().kind == "curl"
    assert isinstance(make_transport("ws://x/", TransportOptions()), LibcurlTransport)


async def test_ping_gets_a_pong_recorded_in_last_pong(server: FastWsServer) -> None:
    t = await connected(server.url("/pings"))
    try:
        assert t.last_pong is None
        before = time.monotonic()
        await t.ping(b"hb-1")
        await t.ping(b"hb-2")
        got = await recv_n(t, 2)
        assert [f.data for f in got] == [b"saw ping b'hb-1'", b"saw ping b'hb-2'"]
        # the server wrote the first PONG before the second text frame, and frames are
        # drained in wire order, so the PONG has been seen by now
        assert t.last_pong is not None
        assert t.last_pong >= before
        with pytest.raises(ValueError):
            await t.ping(b"x" * 126)
    finally:
        await t.close()


async def test_server_pings_are_answered_by_libcurl(server: FastWsServer) -> None:
    # (curl_cffi's AsyncWebSocket leaves libcurl's queued PONG unsent on an idle
    # connection, so this is not part of the shared contract.)
    t = await connected(server.url("/server-pings"))
    try:
        assert await recv_n(t, 1) == [Frame(b"pong b'are you there'")]
        assert server.pongs_seen == 1
    finally:
        await t.close()


async def test_full_queue_pauses_reading_and_loses_nothing(server: FastWsServer) -> None:
    t = await connected(server.url("/burst/300"), recv_queue_size=8)
    try:
        await asyncio.sleep(0.2)
        assert len(t._frames) == 8 and t._paused  # reading stopped at the bound
        got = await recv_n(t, 300)
        assert [f.data for f in got] == [f"m{i}".encode() for i in range(300)]
    finally:
        await t.close()


async def test_fragmented_messages_are_reassembled(server: FastWsServer) -> None:
    t = await connected(server.url("/fragments"))
    try:
        assert await recv_n(t, 3) == [
            Frame(b"hello, world"),
            Frame(b"\x00\x01\x02", binary=True),
            Frame(b"whole"),
        ]
    finally:
        await t.close()


async def test_message_larger_than_the_receive_buffer(server: FastWsServer) -> None:
    n = 3 * RECV_BUFFER_SIZE + 17
    t = await connected(server.url(f"/large/{n}"))
    try:
        assert await recv_n(t, 2) == [Frame(b"x" * n), Frame(b"after")]
    finally:
        await t.close()


async def test_oversize_across_reads_fails_before_buffering_it(server: FastWsServer) -> None:
    t = await connected(server.url(f"/large/{2 * RECV_BUFFER_SIZE}"), max_message_size=4096)
    try:
        with pytest.raises(MessageTooLarge, match="exceeds max_message_size"):
            await recv_n(t, 1)
    finally:
        await t.close()


# --- the C accelerator and the pure-Python loop -------------------------------------------------


def test_speedups_are_used_when_built_unless_disabled() -> None:
    built = importlib.util.find_spec("_streamkit_speedups") is not None
    disabled = os.environ.get("STREAMKIT_NO_SPEEDUPS") == "1"
    assert libcurl.SPEEDUPS is (built and not disabled)


@pytest.fixture(params=["c", "python"])
def read_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Connections made in the test read with the C accelerator or the pure-Python loop,
    whatever STREAMKIT_NO_SPEEDUPS says; ``c`` skips where the accelerator is not built."""
    path: str = request.param
    if path == "c":
        speedups = pytest.importorskip("_streamkit_speedups", reason="accelerator not built")
        monkeypatch.setattr(libcurl, "_Reader", speedups.Reader)
    else:
        monkeypatch.setattr(libcurl, "_Reader", None)
    return path


@pytest.mark.parametrize("queue", [8, 1000])
@pytest.mark.parametrize("end", ["close", "oversize"])
async def test_mixed_stream_is_delivered_alike_by_both_read_paths(
    server: FastWsServer, read_path: str, end: str, queue: int
) -> None:
    t = await connected(
        server.url(f"/mixed/{end}"),
        max_message_size=MIXED_LIMIT,
        recv_queue_size=queue,
        drain_on_error=True,  # the messages before the oversize one are delivered too
    )
    try:
        assert (t._reader is not None) is (read_path == "c")
        await asyncio.sleep(0.1)  # all of it in one read: batches, pending frames, pauses
        got: list[Frame] = []
        expected_error = ConnectionClosed if end == "close" else MessageTooLarge
        with pytest.raises(expected_error) as info:
            async with asyncio.timeout(3):
                while True:
                    got += await t.recv_batch(5)
        assert got == MIXED_FRAMES
        assert all(type(f) is Frame and type(f.binary) is bool for f in got)
        assert t.last_pong is not None
        if end == "close":
            assert isinstance(info.value, ConnectionClosed)
            assert (info.value.code, info.value.reason) == (4001, "mixed done")
        else:
            assert f"message of {MIXED_LIMIT + 1} bytes" in str(info.value)
        assert t._reader is None  # released with the handle
    finally:
        await t.close()


async def test_time_slice_ends_a_drain_at_the_same_message_on_both_read_paths(
    server: FastWsServer, read_path: str
) -> None:
    # The clock is read every 16th data frame: the first read starts the slice, the second
    # (32nd frame, fragments included) finds it used up and the drain yields.
    t = await connected(
        server.url("/mixed/close"), max_message_size=MIXED_LIMIT, recv_time_slice=1e-9
    )
    queued: list[int] = []
    t.set_receiver(lambda: queued.append(len(t._frames)))
    try:
        assert (t._reader is not None) is (read_path == "c")
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(3):
                while True:
                    await asyncio.sleep(0.05)
                    t._check_readable()
        # first drain: t0-t19, the binary one, "fragmented" (3 frames), u0-u7 = 30 messages
        assert queued[:2] == [30, len(MIXED_FRAMES)]
        assert t.take_batch(100) == MIXED_FRAMES
    finally:
        await t.close()


async def test_frames_the_c_reader_queues_are_not_tracked_by_the_collector(
    server: FastWsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Frame (bytes, bool) can never be part of a cycle, but the collector only untracks
    # exact tuples by itself: tracked, every queued frame is traversed by every young
    # collection under a backlog (about a seventh of the burst pipeline's CPU). The frames
    # the Python code assembles (fragments here) stay tracked: only the C reader can do this.
    speedups = pytest.importorskip("_streamkit_speedups", reason="accelerator not built")
    monkeypatch.setattr(libcurl, "_Reader", speedups.Reader)
    t = await connected(server.url("/mixed/close"), max_message_size=MIXED_LIMIT)
    try:
        got: list[Frame] = []
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(3):
                while True:
                    got += await t.recv_batch()
        assert got == MIXED_FRAMES
        whole = [f for f in got if f.data[:1] in (b"t", b"u", b"v")]
        assert len(whole) == 45
        assert not any(gc.is_tracked(f) for f in whole)
        assert gc.is_tracked(Frame(b"fragmented", False))  # what the Python code builds
    finally:
        await t.close()
