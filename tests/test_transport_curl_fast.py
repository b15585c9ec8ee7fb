"""LibcurlTransport (``kind: curl``, streamkit's own libcurl read loop) against a real aiohttp
WebSocket server on 127.0.0.1: the behaviours of tests/test_transport_curl.py, plus what only
this transport does (fragment reassembly, frames larger than the receive buffer, PONGs seen,
pausing on a full receive queue, the default factory kind).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import WSMsgType, web

# The scenario server and the self-signed certificate fixture are shared with the
# AsyncWebSocket transport's tests, so both transports face exactly the same peer.
from test_transport_curl import WsServer, self_signed  # noqa: F401

from streamkit.errors import ConnectError, ConnectionClosed, MessageTooLarge, TransportError
from streamkit.transport import libcurl
from streamkit.transport.base import Frame, Transport, TransportState
from streamkit.transport.curl_common import set_max_concurrent_connects
from streamkit.transport.factory import make_transport
from streamkit.transport.libcurl import RECV_BUFFER_SIZE, LibcurlTransport
from streamkit.transport.options import TransportOptions


def _raw_frame(opcode: int, payload: bytes, fin: bool) -> bytes:
    """An unmasked server-to-client frame (payload < 64 KiB)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    if len(payload) < 126:
        return head + bytes([len(payload)]) + payload
    return head + bytes([126]) + struct.pack("!H", len(payload)) + payload


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
    """The shared scenarios plus raw-frame ones aiohttp cannot produce by itself."""

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
            _raw_frame(0x1, b"hel", False)
            + _raw_frame(0x1 & 0, b"lo, ", False)  # opcode 0: continuation
            + _raw_frame(0x9, b"between", True)
            + _raw_frame(0x0, b"world", True)
            + _raw_frame(0x2, b"\x00\x01", False)
            + _raw_frame(0x0, b"\x02", True)
            + _raw_frame(0x1, b"whole", True)
        )
        await ws.receive()
        return ws

    async def mixed(self, request: web.Request) -> web.WebSocketResponse:
        ws = await self._ws(request)
        transport = request.transport
        assert transport is not None
        if request.match_info["end"] == "close":
            end = _raw_frame(0x8, struct.pack("!H", 4001) + b"mixed done", True)
        else:  # one byte over max_message_size, in one frame and one read
            end = _raw_frame(0x1, b"y" * (MIXED_LIMIT + 1), True)
        transport.write(b"".join(_raw_frame(*f) for f in MIXED) + end)
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
        ws = await self._ws(request, autoping=False)
        await ws.ping(b"are you there")
        async for msg in ws:
            if msg.type is WSMsgType.PONG:
                self.pongs_seen += 1
                await ws.send_str(f"pong {bytes(msg.data)!r}")
        return ws


@pytest.fixture
async def server() -> AsyncIterator[FastWsServer]:
    srv = FastWsServer()
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture(autouse=True)
def default_connect_slots() -> Iterator[None]:
    yield
    set_max_concurrent_connects(8)


def opts(**kwargs: object) -> TransportOptions:
    kwargs.setdefault("connect_timeout", 3.0)
    return TransportOptions(**kwargs)  # type: ignore[arg-type]


async def connected(url: str, **kwargs: object) -> LibcurlTransport:
    transport = LibcurlTransport(url, opts(**kwargs))
    await transport.connect()
    return transport


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def recv_n(t: LibcurlTransport, n: int, within: float = 3.0) -> list[Frame]:
    """Exactly the next ``n`` frames; fails (TimeoutError) instead of hanging."""
    got: list[Frame] = []
    async with asyncio.timeout(within):
        while len(got) < n:
            got += await t.recv_batch()
    assert len(got) == n
    return got


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# --- basics ------------------------------------------------------------------------------------


def test_kind_curl_is_this_transport_and_curl_cffi_the_old_one() -> None:
    from streamkit.transport.curl import CurlTransport

    assert TransportOptions().kind == "curl"
    assert isinstance(make_transport("ws://x/", TransportOptions()), LibcurlTransport)
    assert isinstance(make_transport("ws://x/", opts(kind="curl_cffi")), CurlTransport)


async def test_echo_text_and_binary_frames(server: FastWsServer) -> None:
    t = await connected(server.url("/echo"))
    try:
        assert isinstance(t, Transport)
        assert t.state is TransportState.OPEN
        await t.send('{"op":"subscribe"}')
        await t.send(b"bytes go out as text")
        await t.send("binary please")
        assert await recv_n(t, 3) == [
            Frame(b'{"op":"subscribe"}', binary=False),
            Frame(b"bytes go out as text", binary=False),
            Frame(b"\x00\x01\xff", binary=True),
        ]
        assert server.received == ['{"op":"subscribe"}', "bytes go out as text", "binary please"]
    finally:
        await t.close()
    assert t.state.value == "closed"


async def test_headers_and_impersonation_reach_the_server(server: FastWsServer) -> None:
    import json

    t = await connected(
        server.url("/headers"), headers={"X-Api-Key": "k-123"}, impersonate="chrome"
    )
    try:
        [frame] = await t.recv_batch()
        headers = json.loads(frame.data)
        assert headers["X-Api-Key"] == "k-123"
        assert "Chrome" in headers["User-Agent"]
    finally:
        await t.close()


async def test_many_sends_are_one_frame_each(server: FastWsServer) -> None:
    t = await connected(server.url("/echo"), coalesce_frames=True, send_queue_size=4)
    try:
        sent = [f'{{"id":{i}}}' for i in range(50)]
        await asyncio.gather(*(t.send(m) for m in sent[:25]))  # concurrent senders
        for m in sent[25:]:
            await t.send(m)
        await recv_n(t, 50)
        assert sorted(server.received) == sorted(sent)
        assert server.received[25:] == sent[25:]
    finally:
        await t.close()


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
    t = await connected(server.url("/server-pings"))
    try:
        assert await recv_n(t, 1) == [Frame(b"pong b'are you there'")]
        assert server.pongs_seen == 1
    finally:
        await t.close()


async def test_burst_is_returned_in_ordered_batches(server: FastWsServer) -> None:
    t = await connected(server.url("/burst/500"), recv_queue_size=1000)
    try:
        await asyncio.sleep(0.3)  # let the whole burst arrive
        batches: list[list[Frame]] = []
        while sum(map(len, batches)) < 500:
            batches.append(await t.recv_batch(64))
        assert len(batches[0]) == 64
        assert all(1 <= len(b) <= 64 for b in batches)
        assert [f.data for b in batches for f in b] == [f"m{i}".encode() for i in range(500)]
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


# --- the C accelerator and the pure-Python loop -------------------------------------------------


def test_speedups_are_used_when_built_unless_disabled() -> None:
    built = importlib.util.find_spec("_streamkit_speedups") is not None
    disabled = os.environ.get("STREAMKIT_NO_SPEEDUPS") == "1"
    assert libcurl.SPEEDUPS is (built and not disabled)


@pytest.fixture(params=["c", "python"])
def read_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Connections made in the test read with the C accelerator or the pure-Python loop,
    whatever STREAMKIT_NO_SPEEDUPS says."""
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


# --- the peer goes away -------------------------------------------------------------------------


@pytest.mark.parametrize("code", [1000, 1001, 1011, 1013])
async def test_server_close_reports_code_and_reason(server: FastWsServer, code: int) -> None:
    t = await connected(server.url(f"/close/{code}"))
    try:
        got: list[Frame] = []
        with pytest.raises(ConnectionClosed) as info:
            while True:
                got += await t.recv_batch()
        assert got == [Frame(b"before close")]
        assert (info.value.code, info.value.reason) == (code, f"reason {code}")
        assert t.state is TransportState.CLOSED
        with pytest.raises(ConnectionClosed):
            await t.send("x")
    finally:
        await t.close()


@pytest.mark.parametrize("path", ["/abort", "/eof"], ids=["rst", "fin"])
async def test_connection_lost_without_close_frame_is_1006(server: FastWsServer, path: str) -> None:
    t = await connected(server.url(path))
    try:
        got: list[Frame] = []
        with pytest.raises(ConnectionClosed) as info:
            while True:
                got += await t.recv_batch()
        assert got == [Frame(b"one")]
        assert info.value.code == 1006
    finally:
        await t.close()


async def test_message_larger_than_max_message_size(server: FastWsServer) -> None:
    t = await connected(server.url("/big"), max_message_size=1024)
    try:
        assert await t.recv_batch() == [Frame(b"a" * 1024)]
        await t.send("more")
        with pytest.raises(MessageTooLarge):
            await t.recv_batch()
        assert t.state is TransportState.CLOSED
    finally:
        await t.close()


async def test_oversize_across_reads_fails_before_buffering_it(server: FastWsServer) -> None:
    t = await connected(server.url(f"/large/{2 * RECV_BUFFER_SIZE}"), max_message_size=4096)
    try:
        with pytest.raises(MessageTooLarge, match="exceeds max_message_size"):
            await recv_n(t, 1)
    finally:
        await t.close()


@pytest.mark.parametrize("drain", [False, True])
async def test_full_receive_queue_fails_the_connection_when_not_blocking(
    server: FastWsServer, drain: bool
) -> None:
    t = await connected(
        server.url("/burst/100"),
        recv_queue_size=8,
        block_on_full_recv_queue=False,
        drain_on_error=drain,
    )
    try:
        await asyncio.sleep(0.2)
        got: list[Frame] = []
        with pytest.raises(TransportError, match="queue full") as info:
            async with asyncio.timeout(3):
                while True:
                    got += await t.recv_batch()
        assert not isinstance(info.value, ConnectionClosed)
        assert [f.data for f in got] == ([f"m{i}".encode() for i in range(8)] if drain else [])
    finally:
        await t.close()


# --- connect failures ---------------------------------------------------------------------------


async def test_refused_upgrade_429_with_retry_after(server: FastWsServer) -> None:
    t = LibcurlTransport(server.url("/refuse/429?retry_after=7"), opts())
    with pytest.raises(ConnectError) as info:
        await t.connect()
    assert info.value.status == 429
    assert info.value.retry_after == 7.0
    assert "HTTP 429" in str(info.value)
    assert "retry_after" not in str(info.value)
    assert t.state is TransportState.CLOSED


async def test_refused_upgrade_403(server: FastWsServer) -> None:
    t = LibcurlTransport(server.url("/refuse/403"), opts())
    with pytest.raises(ConnectError) as info:
        await t.connect()
    assert (info.value.status, info.value.retry_after) == (403, None)


async def test_connection_refused_on_closed_port() -> None:
    t = LibcurlTransport(f"ws://127.0.0.1:{free_port()}/ws", opts())
    with pytest.raises(ConnectError) as info:
        await t.connect()
    assert info.value.status is None
    assert "connect failed" in str(info.value)
    assert "curl.se" not in str(info.value)


async def test_connect_timeout_against_silent_server(server: FastWsServer) -> None:
    set_max_concurrent_connects(1)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes TCP handshakes; nobody ever answers
    try:
        t = LibcurlTransport(
            f"ws://127.0.0.1:{silent.getsockname()[1]}/ws", opts(connect_timeout=0.4)
        )
        started = time.monotonic()
        with pytest.raises(ConnectError, match="timed out") as info:
            await t.connect()
        assert time.monotonic() - started < 1.0
        assert info.value.status is None
        # the stuck handshake keeps its slot until libcurl's low-speed limit ends it
        blocked = LibcurlTransport(server.url("/echo"), opts(connect_timeout=0.3))
        with pytest.raises(ConnectError, match="handshake slot"):
            await blocked.connect()
        t2 = await connected(server.url("/echo"), connect_timeout=3.0)
        await t2.close()
    finally:
        silent.close()


async def test_transport_is_single_use(server: FastWsServer) -> None:
    t = await connected(server.url("/echo"))
    await t.close()
    await t.close()
    with pytest.raises(ConnectError, match="single-use"):
        await t.connect()
    with pytest.raises(ConnectionClosed):
        await t.recv_batch()


# --- resources ------------------------------------------------------------------------------------


async def wait_for_fds(limit: int) -> int:
    for _ in range(60):
        if open_fds() <= limit:
            break
        await asyncio.sleep(0.05)
    return open_fds()


async def test_no_fd_leak_over_50_connections(server: FastWsServer) -> None:
    warm = await connected(server.url("/echo"))
    await warm.close()
    await asyncio.sleep(0.2)
    baseline = open_fds()
    for i in range(50):
        t = await connected(server.url("/echo"))
        await t.send(f"hello {i}")
        assert await t.recv_batch() == [Frame(f"hello {i}".encode())]
        await t.close()
    for _ in range(5):
        with pytest.raises(ConnectError):
            await connected(server.url("/refuse/503"))
    assert await wait_for_fds(baseline) <= baseline


async def test_cancelled_connect_releases_everything(server: FastWsServer) -> None:
    warm = await connected(server.url("/echo"))
    await warm.close()
    await asyncio.sleep(0.2)
    baseline = open_fds()
    t = LibcurlTransport(server.url("/slow-upgrade"), opts())
    task = asyncio.create_task(t.connect())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert t.state is TransportState.CLOSED
    assert await wait_for_fds(baseline) <= baseline


async def test_close_releases_even_if_peer_already_gone(server: FastWsServer) -> None:
    t = await connected(server.url("/abort"))
    with pytest.raises(TransportError):
        while True:
            await t.recv_batch()
    await asyncio.wait_for(t.close(), 3.0)
    assert t._curl is None and t._handle is None


# --- TLS --------------------------------------------------------------------------------------


async def test_tls_verify_and_ca_file(self_signed: tuple[Path, Path]) -> None:  # noqa: F811
    cert, key = self_signed
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    srv = FastWsServer()
    await srv.start(ssl_context=context)
    try:
        url = srv.url("/echo", scheme="wss")
        # default: certifi's bundle, which does not know our certificate
        with pytest.raises(ConnectError, match="TLS certificate verification failed") as info:
            await connected(url)
        assert "ca_file" in str(info.value)  # says how to trust a private CA
        for kwargs in ({"ca_file": str(cert)}, {"verify": False}):
            t = await connected(url, **kwargs)
            await t.send("over tls")
            assert await t.recv_batch() == [Frame(b"over tls")]
            # TLS-buffered data is never stranded: a burst decrypted in one read is drained
            for i in range(20):
                await t.send(f"tls {i}")
            got = await recv_n(t, 20)
            assert [f.data for f in got] == [f"tls {i}".encode() for i in range(20)]
            await t.close()
    finally:
        await srv.stop()
