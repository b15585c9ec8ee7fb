"""The peer the libcurl transports' tests talk to: a real aiohttp WebSocket server on
127.0.0.1 whose routes each play one scenario (its TLS mode takes a certificate from
tests/certs.py), and the small helpers those tests share.

Both curl transports (``kind: curl_cffi`` and ``kind: curl``) face exactly this server, so
a behaviour difference between them is a transport difference, never a peer difference.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar

from aiohttp import WSMsgType, web

from streamkit.transport.base import Frame, Transport
from streamkit.transport.options import TransportOptions


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
        """Answers each client PING itself, then reports it as a text frame."""
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


def raw_frame(opcode: int, payload: bytes, fin: bool) -> bytes:
    """An unmasked server-to-client frame (payload < 64 KiB), for scenarios aiohttp cannot
    produce by itself (fragments, control frames between fragments)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    if len(payload) < 126:
        return head + bytes([len(payload)]) + payload
    return head + bytes([126]) + struct.pack("!H", len(payload)) + payload


Server = TypeVar("Server", bound=WsServer)


@asynccontextmanager
async def running(
    server: Server, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[Server]:
    """``server`` listening on 127.0.0.1 (TLS with ``ssl_context``) for the block's duration."""
    await server.start(ssl_context=ssl_context)
    try:
        yield server
    finally:
        await server.stop()


def opts(**kwargs: object) -> TransportOptions:
    """Transport options with a 3 s connect timeout unless the test sets one."""
    kwargs.setdefault("connect_timeout", 3.0)
    return TransportOptions(**kwargs)  # type: ignore[arg-type]


def free_port() -> int:
    """A local TCP port nobody listens on (right now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def recv_n(t: Transport, n: int, within: float = 3.0) -> list[Frame]:
    """Exactly the next ``n`` frames; fails (TimeoutError) instead of hanging."""
    got: list[Frame] = []
    async with asyncio.timeout(within):
        while len(got) < n:
            got += await t.recv_batch()
    assert len(got) == n
    return got


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def wait_for_fds(limit: int) -> int:
    """The open fd count once it is at most ``limit``, or after 3 s (server-side sockets of
    this same process close asynchronously)."""
    for _ in range(60):
        if open_fds() <= limit:
            break
        await asyncio.sleep(0.05)
    return open_fds()
