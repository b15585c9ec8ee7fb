"""CurlTransport against a real aiohttp WebSocket server on 127.0.0.1.

Every test talks to a live socket: these pin down what curl_cffi 0.16 actually does (close
codes, refused upgrades, EOF, limits) as seen through the Transport contract.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import ipaddress
import json
import os
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import WSMsgType, web

from streamkit.errors import ConnectError, ConnectionClosed, MessageTooLarge, TransportError
from streamkit.transport.base import Frame, Transport, TransportState
from streamkit.transport.curl import (
    CurlTransport,
    parse_retry_after,
    set_max_concurrent_connects,
)
from streamkit.transport.options import RetryOptions, TransportOptions


class WsServer:
    """A small WebSocket server whose routes each play one scenario."""

    def __init__(self) -> None:
        self.app = web.Application()
        self.app.add_routes(
            [
                web.get("/echo", self.echo),
                web.get("/headers", self.headers),
                web.get("/close/{code}", self.close),
                web.get("/abort", self.abort),
                web.get("/eof", self.eof),
                web.get("/refuse/{status}", self.refuse),
                web.get("/big", self.big),
                web.get("/burst/{n}", self.burst),
                web.get("/pings", self.pings),
                web.get("/slow-upgrade", self.slow_upgrade),
            ]
        )
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.received: list[str] = []  # text frames seen by /echo, one entry per frame
        self.upgrades_in_flight = 0
        self.max_upgrades_in_flight = 0

    def url(self, path: str, scheme: str = "ws") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.runner = web.AppRunner(self.app, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _ws(self, request: web.Request, **kwargs: object) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(**kwargs)  # type: ignore[arg-type]
        await ws.prepare(request)
        return ws

    async def echo(self, request: web.Request) -> web.WebSocketResponse:
        ws = await self._ws(request)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                self.received.append(msg.data)
                if msg.data == "binary please":
                    await ws.send_bytes(b"\x00\x01\xff")
                else:
                    await ws.send_str(msg.data)
        return ws

    async def headers(self, request: web.Request) -> web.WebSocketResponse:
        ws = await self._ws(request)
        await ws.send_str(json.dumps(dict(request.headers)))
        await ws.receive()
        return ws

    async def close(self, request: web.Request) -> web.WebSocketResponse:
        ws = await self._ws(request)
        await ws.send_str("before close")
        code = int(request.match_info["code"])
        await ws.close(code=code, message=f"reason {code}".encode())
        return ws

    async def abort(self, request: web.Request) -> web.WebSocketResponse:
        ws = await self._ws(request)
        await ws.send_str("one")
        await asyncio.sleep(0.1)
        transport = request.transport
        assert transport is not None
        sock = transport.get_extra_info("socket")
        # SO_LINGER 0: close() sends a TCP RST instead of a FIN, no close frame.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        return ws

    async def eof(self, request: web.Request) -> web.WebSocketResponse:
        ws = await self._ws(request)
        await ws.send_str("one")
        await asyncio.sleep(0.1)
        transport = request.transport
        assert transport is not None
        transport.close()  # TCP FIN without a close frame
        return ws

    async def refuse(self, request: web.Request) -> web.Response:
        status = int(request.match_info["status"])
        headers = {}
        if "retry_after" in request.query:
            headers["Retry-After"] = request.query["retry_after"]
        return web.Response(status=status, headers=headers, text="go away")

    async def big(self, request: web.Request) -> web.WebSocketResponse:
        ws = await self._ws(request)
        await ws.send_str("a" * 1024)  # exactly max_message_size: allowed
        await ws.receive()  # the client asks for more
        await ws.send_str("b" * 5000)
        await ws.receive()
        return ws

    async def burst(self, request: web.Request) -> web.WebSocketResponse:
        ws = await self._ws(request)
        for i in range(int(request.match_info["n"])):
            await ws.send_str(f"m{i}")
        await ws.receive()
        return ws

    async def pings(self, request: web.Request) -> web.WebSocketResponse:
        ws = await self._ws(request, autoping=False)
        async for msg in ws:
            if msg.type is WSMsgType.PING:
                await ws.pong(msg.data)
                await ws.send_str(f"saw ping {bytes(msg.data)!r}")
        return ws

    async def slow_upgrade(self, request: web.Request) -> web.WebSocketResponse:
        self.upgrades_in_flight += 1
        self.max_upgrades_in_flight = max(self.max_upgrades_in_flight, self.upgrades_in_flight)
        try:
            await asyncio.sleep(0.15)
        finally:
            self.upgrades_in_flight -= 1
        ws = await self._ws(request)
        await ws.receive()
        return ws


@pytest.fixture
async def server() -> AsyncIterator[WsServer]:
    srv = WsServer()
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


async def connected(url: str, **kwargs: object) -> CurlTransport:
    transport = CurlTransport(url, opts(**kwargs))
    await transport.connect()
    return transport


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def recv_n(t: CurlTransport, n: int, within: float = 3.0) -> list[Frame]:
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


async def test_echo_text_and_binary_frames(server: WsServer) -> None:
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
        # the server saw text frames, bytes included
        assert server.received == ['{"op":"subscribe"}', "bytes go out as text", "binary please"]
    finally:
        await t.close()
    assert t.state.value == "closed"  # (not `is`: mypy keeps the narrowing from above)


async def test_headers_and_impersonation_reach_the_server(server: WsServer) -> None:
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


async def test_options_reach_the_curl_websocket(server: WsServer) -> None:
    t = await connected(
        server.url("/echo"),
        recv_queue_size=7,
        send_queue_size=9,
        max_send_batch_size=3,
        coalesce_frames=True,
        recv_time_slice=0.02,
        send_time_slice=0.03,
        max_message_size=2048,
        drain_on_error=True,
        block_on_full_recv_queue=False,
        retry=RetryOptions(enabled=True, delay=0.5, count=4),
    )
    try:
        ws = t._ws
        assert ws is not None
        assert ws._receive_queue.maxsize == 7
        assert ws._send_queue.maxsize == 9
        assert ws._max_send_batch_size == 3
        assert ws._coalesce_frames is True
        assert ws._recv_time_slice == 0.02
        assert ws._send_time_slice == 0.03
        assert ws._max_message_size == 2048
        assert ws.drain_on_error is True
        assert ws._block_on_recv_queue_full is False
        assert (ws.ws_retry.retry, ws.ws_retry.delay, ws.ws_retry.count) == (True, 0.5, 4)
    finally:
        await t.close()


async def test_coalescing_never_merges_sent_messages(server: WsServer) -> None:
    t = await connected(server.url("/echo"), coalesce_frames=True, max_send_batch_size=64)
    try:
        sent = [f'{{"id":{i}}}' for i in range(20)]
        # concurrent senders too: the actor's subscriber, watchdog and reader all send
        await asyncio.gather(*(t.send(m) for m in sent[:10]))
        for m in sent[10:]:
            await t.send(m)
        # a merged frame would come back as one echo: fewer than 20 frames, a timeout
        await recv_n(t, 20)
        assert sorted(server.received) == sorted(sent)  # one frame per send()
        assert server.received[10:] == sent[10:]
    finally:
        await t.close()


async def test_ping_is_a_control_frame(server: WsServer) -> None:
    t = await connected(server.url("/pings"))
    try:
        await t.ping(b"hb-1")
        await t.ping()
        got = await recv_n(t, 2)
        # the server saw real pings; their pongs are swallowed by curl_cffi (only our text
        # frames come back)
        assert [f.data for f in got] == [b"saw ping b'hb-1'", b"saw ping b''"]
        with pytest.raises(ValueError):
            await t.ping(b"x" * 126)
    finally:
        await t.close()


async def test_burst_is_returned_in_ordered_batches(server: WsServer) -> None:
    t = await connected(server.url("/burst/500"), recv_queue_size=1000)
    try:
        await asyncio.sleep(0.3)  # let the whole burst land in the receive queue
        batches: list[list[Frame]] = []
        while sum(map(len, batches)) < 500:
            batches.append(await t.recv_batch(64))
        assert len(batches[0]) == 64  # one await, then everything already buffered
        assert all(1 <= len(b) <= 64 for b in batches)
        assert [f.data for b in batches for f in b] == [f"m{i}".encode() for i in range(500)]
    finally:
        await t.close()


# --- the peer goes away -------------------------------------------------------------------------


@pytest.mark.parametrize("code", [1000, 1001, 1011, 1013])
async def test_server_close_reports_code_and_reason(server: WsServer, code: int) -> None:
    t = await connected(server.url(f"/close/{code}"))
    try:
        got: list[Frame] = []
        with pytest.raises(ConnectionClosed) as info:
            while True:
                got += await t.recv_batch()
        assert got == [Frame(b"before close")]  # data before the close frame is delivered
        assert (info.value.code, info.value.reason) == (code, f"reason {code}")
        assert t.state is TransportState.CLOSED
        with pytest.raises(ConnectionClosed):  # dead for good
            await t.send("x")
    finally:
        await t.close()


@pytest.mark.parametrize("path", ["/abort", "/eof"], ids=["rst", "fin"])
async def test_connection_lost_without_close_frame_is_1006(server: WsServer, path: str) -> None:
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


async def test_message_larger_than_max_message_size(server: WsServer) -> None:
    t = await connected(server.url("/big"), max_message_size=1024)
    try:
        assert await t.recv_batch() == [Frame(b"a" * 1024)]
        await t.send("more")
        with pytest.raises(MessageTooLarge):
            await t.recv_batch()
        assert t.state is TransportState.CLOSED
    finally:
        await t.close()


@pytest.mark.parametrize("drain", [False, True])
async def test_full_receive_queue_fails_the_connection_when_not_blocking(
    server: WsServer, drain: bool
) -> None:
    t = await connected(
        server.url("/burst/100"),
        recv_queue_size=8,
        block_on_full_recv_queue=False,
        drain_on_error=drain,
    )
    try:
        await asyncio.sleep(0.2)  # the reader overflows the 8-message queue meanwhile
        got: list[Frame] = []
        with pytest.raises(TransportError, match="queue full") as info:
            async with asyncio.timeout(3):
                while True:
                    got += await t.recv_batch()
        assert not isinstance(info.value, ConnectionClosed)
        # drain_on_error decides whether what was buffered before the failure is delivered
        assert [f.data for f in got] == ([f"m{i}".encode() for i in range(8)] if drain else [])
    finally:
        await t.close()


# --- connect failures ---------------------------------------------------------------------------


async def test_refused_upgrade_429_with_retry_after(server: WsServer) -> None:
    t = CurlTransport(server.url("/refuse/429?retry_after=7"), opts())
    with pytest.raises(ConnectError) as info:
        await t.connect()
    assert info.value.status == 429
    assert info.value.retry_after == 7.0
    assert "HTTP 429" in str(info.value)
    assert "retry_after" not in str(info.value)  # the query string is redacted
    assert t.state is TransportState.CLOSED


async def test_refused_upgrade_503_with_http_date_retry_after(server: WsServer) -> None:
    when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=30)
    date = email.utils.format_datetime(when, usegmt=True)
    t = CurlTransport(server.url(f"/refuse/503?retry_after={date}"), opts())
    with pytest.raises(ConnectError) as info:
        await t.connect()
    assert info.value.status == 503
    assert info.value.retry_after is not None
    assert 25 < info.value.retry_after <= 30


async def test_refused_upgrade_403(server: WsServer) -> None:
    t = CurlTransport(server.url("/refuse/403"), opts())
    with pytest.raises(ConnectError) as info:
        await t.connect()
    assert (info.value.status, info.value.retry_after) == (403, None)


async def test_connection_refused_on_closed_port() -> None:
    t = CurlTransport(f"ws://127.0.0.1:{free_port()}/ws", opts())
    with pytest.raises(ConnectError) as info:
        await t.connect()
    assert info.value.status is None
    assert "connect failed" in str(info.value)
    assert "curl.se" not in str(info.value)  # boilerplate trimmed


async def test_dead_proxy_is_used(server: WsServer) -> None:
    t = CurlTransport(server.url("/echo"), opts(proxy=f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(ConnectError):
        await t.connect()


async def test_connect_timeout_against_silent_server_and_slot_accounting(
    server: WsServer,
) -> None:
    set_max_concurrent_connects(1)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes TCP handshakes; nobody ever answers
    try:
        t = CurlTransport(f"ws://127.0.0.1:{silent.getsockname()[1]}/ws", opts(connect_timeout=0.4))
        started = time.monotonic()
        with pytest.raises(ConnectError) as info:
            await t.connect()
        assert time.monotonic() - started < 1.0
        assert "timed out" in str(info.value)
        assert info.value.status is None

        # The abandoned handshake still blocks a pool thread, so it keeps the only slot.
        blocked = CurlTransport(server.url("/echo"), opts(connect_timeout=0.3))
        with pytest.raises(ConnectError, match="handshake slot"):
            await blocked.connect()

        # libcurl's low-speed limit (1 s here) ends the stuck perform() although the silent
        # server is still there; then the slot is free again.
        started = time.monotonic()
        t2 = await connected(server.url("/echo"), connect_timeout=3.0)
        assert time.monotonic() - started < 2.5
        await t2.close()
    finally:
        silent.close()


async def test_concurrent_handshakes_are_capped(server: WsServer) -> None:
    set_max_concurrent_connects(2)
    transports = [CurlTransport(server.url("/slow-upgrade"), opts()) for _ in range(6)]
    try:
        await asyncio.gather(*(t.connect() for t in transports))
        assert server.max_upgrades_in_flight == 2
    finally:
        await asyncio.gather(*(t.close() for t in transports))


async def test_transport_is_single_use(server: WsServer) -> None:
    t = await connected(server.url("/echo"))
    await t.close()
    await t.close()  # idempotent
    with pytest.raises(ConnectError, match="single-use"):
        await t.connect()
    with pytest.raises(ConnectionClosed):
        await t.recv_batch()


# --- resources ------------------------------------------------------------------------------------


async def wait_for_fds(limit: int) -> int:
    """The open fd count once it is at most ``limit``, or after 3 s (server-side sockets of
    this same process close asynchronously)."""
    for _ in range(60):
        if open_fds() <= limit:
            break
        await asyncio.sleep(0.05)
    return open_fds()


async def test_no_fd_leak_over_50_connections(server: WsServer) -> None:
    warm = await connected(server.url("/echo"))  # lazy one-time setup (selector, certs)
    await warm.close()
    await asyncio.sleep(0.2)  # let the server side of the warm-up connection finish
    baseline = open_fds()
    for i in range(50):
        t = await connected(server.url("/echo"))
        await t.send(f"hello {i}")
        assert await t.recv_batch() == [Frame(f"hello {i}".encode())]
        await t.close()
    # failed connects must not leak either
    for _ in range(5):
        with pytest.raises(ConnectError):
            await connected(server.url("/refuse/503"))
    assert await wait_for_fds(baseline) <= baseline


async def test_cancelled_connect_releases_everything(server: WsServer) -> None:
    warm = await connected(server.url("/echo"))
    await warm.close()
    await asyncio.sleep(0.2)
    baseline = open_fds()
    t = CurlTransport(server.url("/slow-upgrade"), opts())
    task = asyncio.create_task(t.connect())
    await asyncio.sleep(0.05)  # the handshake is in flight in a worker thread
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert t.state is TransportState.CLOSED
    # the upgrade still succeeds server-side; the background reaper must close it
    assert await wait_for_fds(baseline) <= baseline


async def test_close_releases_even_if_peer_already_gone(server: WsServer) -> None:
    t = await connected(server.url("/abort"))
    with pytest.raises(TransportError):
        while True:
            await t.recv_batch()
    await asyncio.wait_for(t.close(), 3.0)
    assert t._ws is None and t._session is None


# --- TLS --------------------------------------------------------------------------------------


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_verify_and_ca_file(self_signed: tuple[Path, Path]) -> None:
    cert, key = self_signed
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    srv = WsServer()
    await srv.start(ssl_context=context)
    try:
        url = srv.url("/echo", scheme="wss")
        # default: certifi's bundle, which does not know our certificate
        with pytest.raises(ConnectError, match="TLS certificate verification failed"):
            await connected(url)
        for kwargs in ({"ca_file": str(cert)}, {"verify": False}):
            t = await connected(url, **kwargs)
            await t.send("over tls")
            assert await t.recv_batch() == [Frame(b"over tls")]
            await t.close()
    finally:
        await srv.stop()


# --- helpers ------------------------------------------------------------------------------------


def test_parse_retry_after() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    for bad in (None, "", "soon", "nan", "inf"):
        assert parse_retry_after(bad) is None
