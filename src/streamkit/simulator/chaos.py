"""A fault-injecting TCP proxy that sits in front of a simulator: faults below the WebSocket API.

The simulators inject faults at the message level (stall, garbage text, gap, close codes).
Some failures that matter in production cannot be produced from inside a WebSocket server
library: a TCP reset in the middle of a frame, a peer that silently stops forwarding anything
(half-open), frames that are not valid UTF-8 text, binary or compressed frames, duplicated or
reordered frames, bytes corrupted in flight, and TLS. :class:`ChaosProxy` forwards TCP between
a client and an upstream server (normally a simulator on 127.0.0.1) and understands just
enough of RFC 6455 to cut the server-to-client byte stream into frames, so that it can act at
frame boundaries::

    async with BinanceSimulator() as sim, ChaosProxy(sim.port) as proxy:
        url = proxy.ws_url("/stream")            # ws://127.0.0.1:PROXYPORT/stream
        proxy.inject_frame(b"\\xff\\xfe", opcode=OPCODE_TEXT)   # invalid UTF-8 text
        proxy.reset_mid_frame()                  # half of the next frame, then TCP RST
        proxy.blackhole()                        # half-open: nothing forwarded any more

With ``ssl_context`` it terminates TLS, so ``wss://`` and ``https://`` clients can be tested
against a plain simulator. It binds 127.0.0.1 unless told otherwise.

Every fault method applies to the connections open at the time of the call (and, for the
"next frame" faults, to the next matching server frame of each) and returns how many
connections it was applied to. Connections whose upstream answer is not ``101 Switching
Protocols`` (plain HTTP, e.g. REST snapshots) are forwarded untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, Self

__all__ = [
    "OPCODE_BINARY",
    "OPCODE_TEXT",
    "ChaosProxy",
    "encode_server_frame",
]

OPCODE_TEXT: Final = 0x1
OPCODE_BINARY: Final = 0x2
_FIN: Final = 0x80
_RSV1: Final = 0x40
_READ_SIZE: Final = 65536
_HEAD_END: Final = b"\r\n\r\n"


def encode_server_frame(payload: bytes, *, opcode: int = OPCODE_TEXT, rsv1: bool = False) -> bytes:
    """One unmasked, final WebSocket frame as a server sends it. ``rsv1`` marks the payload as
    compressed (permessage-deflate), which a client that did not negotiate it must reject."""
    first = _FIN | (_RSV1 if rsv1 else 0) | (opcode & 0x0F)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", first, n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", first, 126, n)
    else:
        head = struct.pack("!BBQ", first, 127, n)
    return head + payload


def _frame_bounds(buf: bytes | bytearray) -> tuple[int, int] | None:
    """``(payload_offset, frame_end)`` of the frame at the start of ``buf``, or None when the
    buffer does not hold a whole frame yet."""
    if len(buf) < 2:
        return None
    length = buf[1] & 0x7F
    offset = 2
    if length == 126:
        if len(buf) < 4:
            return None
        length = struct.unpack_from("!H", buf, 2)[0]
        offset = 4
    elif length == 127:
        if len(buf) < 10:
            return None
        length = struct.unpack_from("!Q", buf, 2)[0]
        offset = 10
    if buf[1] & 0x80:  # masked: servers must not, but forward it intact anyway
        offset += 4
    end = offset + length
    return (offset, end) if len(buf) >= end else None


@dataclass(eq=False)
class _Link:
    """One proxied TCP connection and the faults pending on it."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    websocket: bool | None = None  # None until the upstream's answer head was seen
    blackholed: bool = False
    reset_next: bool = False
    duplicate: list[bytes] = field(default_factory=list)  # match patterns
    hold: list[bytes] = field(default_factory=list)
    held: list[tuple[bytes, bytes]] = field(default_factory=list)  # (pattern, frame)
    rewrite: list[tuple[bytes, bytes, bytes]] = field(default_factory=list)  # match, old, new

    def write_client(self, data: bytes) -> None:
        if not self.blackholed and not self.client.is_closing():
            self.client.write(data)


class ChaosProxy:
    """TCP proxy to ``upstream_host:upstream_port`` with frame-level fault injection.

    Args:
        upstream_port: the real server's port (e.g. ``sim.port``).
        upstream_host: the real server's address.
        host / port: where the proxy listens (default 127.0.0.1 and a free port).
        ssl_context: a server-side context to terminate TLS with (``wss://``/``https://``).
    """

    def __init__(
        self,
        upstream_port: int,
        upstream_host: str = "127.0.0.1",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._listen = (host, port)
        self._ssl = ssl_context
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.accepted = 0

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Listen; the port is :attr:`port` afterwards."""
        if self._server is not None:
            raise RuntimeError("proxy already started")
        self._server = await asyncio.start_server(
            self._accept, self._listen[0], self._listen[1], ssl=self._ssl
        )

    async def stop(self) -> None:
        """Stop listening and abort every proxied connection. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for link in list(self._links):
            link.client.transport.abort()
            link.upstream.transport.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("proxy not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def host(self) -> str:
        if self._server is None:
            raise RuntimeError("proxy not started")
        return str(self._server.sockets[0].getsockname()[0])

    def ws_url(self, path: str = "/stream") -> str:
        """``ws://`` (or ``wss://`` with TLS) URL of ``path`` through the proxy."""
        scheme = "wss" if self._ssl is not None else "ws"
        return f"{scheme}://{self._listen[0]}:{self.port}{path}"

    @property
    def rest_url(self) -> str:
        scheme = "https" if self._ssl is not None else "http"
        return f"{scheme}://{self._listen[0]}:{self.port}"

    @property
    def connections(self) -> int:
        """Proxied connections open now."""
        return len(self._links)

    # ----------------------------------------------------------------- faults

    def reset_mid_frame(self) -> int:
        """Forward the first half of each WebSocket connection's next server frame, then reset
        the client's TCP connection (RST, not FIN)."""
        return self._each(lambda link: setattr(link, "reset_next", True))

    def blackhole(self) -> int:
        """Half-open: stop forwarding in both directions but keep both TCP connections open,
        as a dead peer behind a NAT or a crashed middlebox looks to the client."""
        return self._each(lambda link: setattr(link, "blackholed", True), websocket_only=False)

    def inject_frame(self, payload: bytes, *, opcode: int = OPCODE_TEXT, rsv1: bool = False) -> int:
        """Send one extra server frame to each WebSocket client now (at a frame boundary)."""
        frame = encode_server_frame(payload, opcode=opcode, rsv1=rsv1)
        return self._each(lambda link: link.write_client(frame))

    def duplicate_next(self, match: bytes) -> int:
        """Send the next server frame containing ``match`` twice."""
        return self._each(lambda link: link.duplicate.append(match))

    def swap_next(self, match: bytes) -> int:
        """Reorder: hold back the next server frame containing ``match`` and send it right
        after the following frame containing ``match``."""
        return self._each(lambda link: link.hold.append(match))

    def rewrite_next(self, match: bytes, old: bytes, new: bytes) -> int:
        """Corrupt data in flight: in the next server frame containing ``match``, replace the
        first ``old`` with ``new`` (the frame length is re-encoded)."""
        return self._each(lambda link: link.rewrite.append((match, old, new)))

    def _each(self, apply: object, *, websocket_only: bool = True) -> int:
        assert callable(apply)
        count = 0
        for link in list(self._links):
            if websocket_only and not link.websocket:
                continue
            apply(link)
            count += 1
        return count

    # ----------------------------------------------------------------- forwarding

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.transport.abort()
            return
        link = _Link(client=writer, upstream=up_writer)
        self._links.add(link)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._pump_up(reader, link))
                group.create_task(self._pump_down(up_reader, link))
        except* (OSError, _LinkDone):
            pass  # either side went away (or was reset on purpose): tear the link down
        finally:
            self._links.discard(link)
            self._tasks.discard(task)
            for w in (writer, up_writer):
                w.transport.abort()

    async def _pump_up(self, reader: asyncio.StreamReader, link: _Link) -> None:
        """Client -> upstream, unchanged unless blackholed. Ends the link on client EOF."""
        while data := await reader.read(_READ_SIZE):
            if not link.blackholed:
                link.upstream.write(data)
                await link.upstream.drain()
        raise _LinkDone

    async def _pump_down(self, reader: asyncio.StreamReader, link: _Link) -> None:
        """Upstream -> client, frame by frame once the upgrade succeeded."""
        buf = bytearray()
        while data := await reader.read(_READ_SIZE):
            if link.blackholed:
                continue
            buf += data
            if link.websocket is None:
                end = buf.find(_HEAD_END)
                if end < 0:
                    continue
                head_len = end + len(_HEAD_END)
                link.websocket = buf.startswith(b"HTTP/1.1 101")
                link.write_client(bytes(buf[:head_len]))
                del buf[:head_len]
            if not link.websocket:
                link.write_client(bytes(buf))
                buf.clear()
            else:
                while (bounds := _frame_bounds(buf)) is not None:
                    offset, end = bounds
                    frame = bytes(buf[:end])
                    del buf[:end]
                    if not self._forward_frame(link, frame, offset):
                        raise _LinkDone
            if not link.client.is_closing():
                await link.client.drain()
        if not link.blackholed:  # a half-open peer does not tell the client it went away
            raise _LinkDone
        await asyncio.Event().wait()

    def _forward_frame(self, link: _Link, frame: bytes, offset: int) -> bool:
        """Apply pending frame faults and write; False once the link was reset."""
        if link.reset_next:
            link.client.write(frame[: max(1, len(frame) // 2)])
            _reset(link.client)
            link.upstream.transport.abort()
            return False
        payload = frame[offset:]
        for i, (match, old, new) in enumerate(link.rewrite):
            if match in payload and old in payload:
                del link.rewrite[i]
                frame = encode_server_frame(payload.replace(old, new, 1), opcode=frame[0] & 0x0F)
                break
        for i, match in enumerate(link.hold):
            if match in payload:
                del link.hold[i]
                link.held.append((match, frame))
                return True
        link.write_client(frame)
        for i, (match, held) in enumerate(link.held):
            if match in payload:
                del link.held[i]
                link.write_client(held)
                break
        for i, match in enumerate(link.duplicate):
            if match in payload:
                del link.duplicate[i]
                link.write_client(frame)
                break
        return True


class _LinkDone(Exception):
    """One side of a proxied connection ended: tear the link down."""


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST: SO_LINGER with a zero timeout, then abort."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
