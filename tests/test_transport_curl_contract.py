"""The Transport contract both libcurl transports keep, each against a real aiohttp
WebSocket server on 127.0.0.1 (tests/transport_peer.py).

Every test runs once per transport kind: ``curl_cffi`` (:class:`CurlTransport`, curl_cffi's
``AsyncWebSocket``) and ``curl`` (:class:`LibcurlTransport`, streamkit's own libcurl read
loop, with the C accelerator when it is built). They pin down what libcurl actually does
(close codes, refused upgrades, EOF, limits, handshake slots, TLS) as seen through the
contract. What only one transport does is tested in tests/test_transport_curl.py
(curl_cffi) and tests/test_transport_curl_fast.py (curl).
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import gc
import json
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from certs import write_self_signed_cert
from transport_peer import (
    WsServer,
    free_port,
    open_fds,
    opts,
    recv_n,
    running,
    wait_for_fds,
)

from streamkit.errors import ConnectError, ConnectionClosed, MessageTooLarge, TransportError
from streamkit.transport.base import Frame, Transport, TransportState
from streamkit.transport.curl import CurlTransport
from streamkit.transport.curl_common import set_max_concurrent_connects
from streamkit.transport.factory import make_transport
from streamkit.transport.libcurl import LibcurlTransport

AnyCurlTransport = CurlTransport | LibcurlTransport


@dataclass(frozen=True)
class TransportKind:
    """One transport under the contract: its ``transport.kind``, its class, and how to tell
    that a transport of it let go of every libcurl handle."""

    kind: str
    cls: type[AnyCurlTransport]
    released: Callable[[Any], bool]

    def build(self, url: str, **options: object) -> AnyCurlTransport:
        """A new, unconnected transport (``opts`` defaults)."""
        return self.cls(url, opts(**options))

    async def connected(self, url: str, **options: object) -> AnyCurlTransport:
        """A transport that connected to ``url``."""
        transport = self.build(url, **options)
        await transport.connect()
        return transport


KINDS = [
    TransportKind("curl_cffi", CurlTransport, lambda t: t._ws is None and t._session is None),
    TransportKind("curl", LibcurlTransport, lambda t: t._curl is None and t._handle is None),
]


@pytest.fixture(params=KINDS, ids=[k.kind for k in KINDS])
def kind(request: pytest.FixtureRequest) -> TransportKind:
    """Each test runs once per transport kind (test ids ``[curl_cffi]`` and ``[curl]``)."""
    transport_kind: TransportKind = request.param
    return transport_kind


@pytest.fixture
async def server() -> AsyncIterator[WsServer]:
    async with running(WsServer()) as srv:
        yield srv


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    return write_self_signed_cert(tmp_path)


@pytest.fixture(autouse=True)
def default_connect_slots() -> Iterator[None]:
    """Tests that shrink the handshake slots must not shrink them for the next test."""
    yield
    set_max_concurrent_connects(8)


# --- basics ------------------------------------------------------------------------------------


def test_kind_selects_this_transport(kind: TransportKind) -> None:
    transport = make_transport("ws://x/", opts(kind=kind.kind))
    assert type(transport) is kind.cls


async def test_echo_text_and_binary_frames(server: WsServer, kind: TransportKind) -> None:
    t = await kind.connected(server.url("/echo"))
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


async def test_headers_and_impersonation_reach_the_server(
    server: WsServer, kind: TransportKind
) -> None:
    t = await kind.connected(
        server.url("/headers"), headers={"X-Api-Key": "k-123"}, impersonate="chrome"
    )
    try:
        [frame] = await t.recv_batch()
        headers = json.loads(frame.data)
        assert headers["X-Api-Key"] == "k-123"
        assert "Chrome" in headers["User-Agent"]
    finally:
        await t.close()


@pytest.mark.parametrize(
    ("n", "options"),
    [
        (20, {"coalesce_frames": True, "max_send_batch_size": 64}),
        (50, {"coalesce_frames": True, "send_queue_size": 4}),  # senders wait for room
    ],
    ids=["big-batches", "small-send-queue"],
)
async def test_every_send_is_one_frame(
    server: WsServer, kind: TransportKind, n: int, options: dict[str, object]
) -> None:
    t = await kind.connected(server.url("/echo"), **options)
    try:
        sent = [f'{{"id":{i}}}' for i in range(n)]
        # concurrent senders too: the actor's subscriber, watchdog and reader all send
        half = n // 2
        await asyncio.gather(*(t.send(m) for m in sent[:half]))
        for m in sent[half:]:
            await t.send(m)
        # a merged frame would come back as one echo: fewer than n frames, a timeout
        await recv_n(t, n)
        assert sorted(server.received) == sorted(sent)  # one frame per send()
        assert server.received[half:] == sent[half:]
    finally:
        await t.close()


async def test_ping_is_a_control_frame(server: WsServer, kind: TransportKind) -> None:
    t = await kind.connected(server.url("/pings"))
    try:
        await t.ping(b"hb-1")
        await t.ping()
        got = await recv_n(t, 2)
        # the server saw real pings; their pongs never come out as frames (only the
        # server's text frames do)
        assert [f.data for f in got] == [b"saw ping b'hb-1'", b"saw ping b''"]
        with pytest.raises(ValueError):
            await t.ping(b"x" * 126)
    finally:
        await t.close()


async def test_burst_is_returned_in_ordered_batches(server: WsServer, kind: TransportKind) -> None:
    t = await kind.connected(server.url("/burst/500"), recv_queue_size=1000)
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
async def test_server_close_reports_code_and_reason(
    server: WsServer, kind: TransportKind, code: int
) -> None:
    t = await kind.connected(server.url(f"/close/{code}"))
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
async def test_connection_lost_without_close_frame_is_1006(
    server: WsServer, kind: TransportKind, path: str
) -> None:
    t = await kind.connected(server.url(path))
    try:
        got: list[Frame] = []
        with pytest.raises(ConnectionClosed) as info:
            while True:
                got += await t.recv_batch()
        assert got == [Frame(b"one")]
        assert info.value.code == 1006
    finally:
        await t.close()


async def test_message_larger_than_max_message_size(server: WsServer, kind: TransportKind) -> None:
    t = await kind.connected(server.url("/big"), max_message_size=1024)
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
    server: WsServer, kind: TransportKind, drain: bool
) -> None:
    t = await kind.connected(
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


async def test_refused_upgrade_429_with_retry_after(server: WsServer, kind: TransportKind) -> None:
    t = kind.build(server.url("/refuse/429?retry_after=7"))
    with pytest.raises(ConnectError) as info:
        await t.connect()
    assert info.value.status == 429
    assert info.value.retry_after == 7.0
    assert "HTTP 429" in str(info.value)
    assert "retry_after" not in str(info.value)  # the query string is redacted
    assert t.state is TransportState.CLOSED


async def test_refused_upgrade_503_with_http_date_retry_after(
    server: WsServer, kind: TransportKind
) -> None:
    when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=30)
    date = email.utils.format_datetime(when, usegmt=True)
    t = kind.build(server.url(f"/refuse/503?retry_after={date}"))
    with pytest.raises(ConnectError) as info:
        await t.connect()
    assert info.value.status == 503
    assert info.value.retry_after is not None
    assert 25 < info.value.retry_after <= 30


async def test_refused_upgrade_403(server: WsServer, kind: TransportKind) -> None:
    t = kind.build(server.url("/refuse/403"))
    with pytest.raises(ConnectError) as info:
        await t.connect()
    assert (info.value.status, info.value.retry_after) == (403, None)


async def test_connection_refused_on_closed_port(kind: TransportKind) -> None:
    t = kind.build(f"ws://127.0.0.1:{free_port()}/ws")
    with pytest.raises(ConnectError) as info:
        await t.connect()
    assert info.value.status is None
    assert "connect failed" in str(info.value)
    assert "curl.se" not in str(info.value)  # boilerplate trimmed


async def test_dead_proxy_is_used(server: WsServer, kind: TransportKind) -> None:
    t = kind.build(server.url("/echo"), proxy=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ConnectError):
        await t.connect()


async def test_connect_timeout_against_silent_server_and_slot_accounting(
    server: WsServer, kind: TransportKind
) -> None:
    set_max_concurrent_connects(1)
    unhandled: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: unhandled.append(context))
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes TCP handshakes; nobody ever answers
    try:
        t = kind.build(f"ws://127.0.0.1:{silent.getsockname()[1]}/ws", connect_timeout=0.4)
        started = time.monotonic()
        with pytest.raises(ConnectError) as info:
            await t.connect()
        assert time.monotonic() - started < 1.0
        assert "timed out" in str(info.value)
        assert info.value.status is None

        # The abandoned handshake still blocks a pool thread, so it keeps the only slot.
        blocked = kind.build(server.url("/echo"), connect_timeout=0.3)
        with pytest.raises(ConnectError, match="handshake slot"):
            await blocked.connect()

        # libcurl's low-speed limit (1 s here) ends the stuck perform() although the silent
        # server is still there; then the slot is free again.
        started = time.monotonic()
        t2 = await kind.connected(server.url("/echo"), connect_timeout=3.0)
        assert time.monotonic() - started < 2.5
        await t2.close()

        # The abandoned handshake has failed by now, and nobody awaits it: its error must
        # have been retrieved, or asyncio reports "Future exception was never retrieved"
        # whenever the collector frees it (once, in the middle of CPython 3.11 parsing an
        # import, that report broke a whole pytest session).
        del t, blocked, info  # the failed connect()'s traceback holds the handshake
        gc.collect()
        await asyncio.sleep(0)
        assert [c["message"] for c in unhandled] == []
    finally:
        silent.close()


async def test_concurrent_handshakes_are_capped(server: WsServer, kind: TransportKind) -> None:
    set_max_concurrent_connects(2)
    transports = [kind.build(server.url("/slow-upgrade")) for _ in range(6)]
    try:
        await asyncio.gather(*(t.connect() for t in transports))
        assert server.max_upgrades_in_flight == 2
    finally:
        await asyncio.gather(*(t.close() for t in transports))


async def test_transport_is_single_use(server: WsServer, kind: TransportKind) -> None:
    t = await kind.connected(server.url("/echo"))
    await t.close()
    await t.close()  # idempotent
    with pytest.raises(ConnectError, match="single-use"):
        await t.connect()
    with pytest.raises(ConnectionClosed):
        await t.recv_batch()


# --- resources ------------------------------------------------------------------------------------


async def test_no_fd_leak_over_50_connections(server: WsServer, kind: TransportKind) -> None:
    warm = await kind.connected(server.url("/echo"))  # lazy one-time setup (selector, certs)
    await warm.close()
    await asyncio.sleep(0.2)  # let the server side of the warm-up connection finish
    baseline = open_fds()
    for i in range(50):
        t = await kind.connected(server.url("/echo"))
        await t.send(f"hello {i}")
        assert await t.recv_batch() == [Frame(f"hello {i}".encode())]
        await t.close()
    # failed connects must not leak either
    for _ in range(5):
        with pytest.raises(ConnectError):
            await kind.connected(server.url("/refuse/503"))
    assert await wait_for_fds(baseline) <= baseline


async def test_cancelled_connect_releases_everything(server: WsServer, kind: TransportKind) -> None:
    warm = await kind.connected(server.url("/echo"))
    await warm.close()
    await asyncio.sleep(0.2)
    baseline = open_fds()
    t = kind.build(server.url("/slow-upgrade"))
    task = asyncio.create_task(t.connect())
    await asyncio.sleep(0.05)  # the handshake is in flight in a worker thread
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert t.state is TransportState.CLOSED
    # the upgrade still succeeds server-side; the abandoned handshake must be closed
    assert await wait_for_fds(baseline) <= baseline


async def test_close_releases_even_if_peer_already_gone(
    server: WsServer, kind: TransportKind
) -> None:
    t = await kind.connected(server.url("/abort"))
    with pytest.raises(TransportError):
        while True:
            await t.recv_batch()
    await asyncio.wait_for(t.close(), 3.0)
    assert kind.released(t)


# --- TLS --------------------------------------------------------------------------------------


async def test_tls_verify_and_ca_file(self_signed: tuple[Path, Path], kind: TransportKind) -> None:
    cert, key = self_signed
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    async with running(WsServer(), ssl_context=context) as srv:
        url = srv.url("/echo", scheme="wss")
        # default: certifi's bundle, which does not know our certificate
        with pytest.raises(ConnectError, match="TLS certificate verification failed") as info:
            await kind.connected(url)
        assert "ca_file" in str(info.value)  # says how to trust a private CA
        for options in ({"ca_file": str(cert)}, {"verify": False}):
            t = await kind.connected(url, **options)
            await t.send("over tls")
            assert await t.recv_batch() == [Frame(b"over tls")]
            # TLS-buffered data is never stranded: a burst decrypted in one read is drained
            for i in range(20):
                await t.send(f"tls {i}")
            got = await recv_n(t, 20)
            assert [f.data for f in got] == [f"tls {i}".encode() for i in range(20)]
            await t.close()
