"""In-process transport for tests and replay.

A :class:`MemoryExchange` stands in for one exchange endpoint. Its
:meth:`~MemoryExchange.transport_factory` has the ``(url, options) -> Transport`` shape the
actor takes, and hands out a fresh :class:`MemoryTransport` per connection attempt, so
reconnects work exactly as with the real transport. Every successful connect appends a
:class:`MemoryPeer`, the server side of that connection, to
:attr:`MemoryExchange.connections`; test code drives the connection through it::

    exchange = MemoryExchange()
    actor = ConnectionActor(..., transport_factory=exchange.transport_factory)
    peer = await exchange.next_connection()
    assert json.loads(await peer.received())["method"] == "SUBSCRIBE"
    await peer.send_text('{"result": null, "id": 1}')
    peer.close(1001, "going away")           # the actor reconnects...
    peer = await exchange.next_connection()  # ...to a new peer

    exchange.refuse_next(status=429, retry_after=5)  # the next connect raises ConnectError

The client side follows the same contract as :class:`~streamkit.transport.curl.CurlTransport`:
``max_message_size`` (a larger message fails the connection with ``MessageTooLarge``),
``recv_queue_size`` with ``block_on_full_recv_queue`` (the peer's send waits for room, or
the connection fails), ``drain_on_error`` (whether frames buffered before a failure are still
delivered), and ``connect_timeout`` (for :meth:`MemoryExchange.stall_next`). Unlike curl_cffi
it reports pongs nowhere either: pings are recorded on the peer and left unanswered.
"""

from __future__ import annotations

import asyncio
import collections

from streamkit.errors import ConnectError, ConnectionClosed, MessageTooLarge, TransportError
from streamkit.transport.base import Frame, TransportState
from streamkit.transport.options import TransportOptions

__all__ = ["MemoryExchange", "MemoryPeer", "MemoryTransport"]

_PING_MAX = 125


class MemoryPeer:
    """The server side of one in-memory connection.

    Attributes:
        url, options, headers: what the client connected with.
        inbox: every text message the client sent, in order (``bytes`` decoded as UTF-8).
        pings: payloads of the pings the client sent, in order.
        client_close: ``(code, reason)`` once the client closed the connection.
    """

    def __init__(self, transport: MemoryTransport) -> None:
        self._transport = transport
        self.url = transport.url
        self.options = transport.options
        self.headers: dict[str, str] = dict(transport.options.headers)
        self.inbox: list[str] = []
        self.pings: list[bytes] = []
        self.client_close: tuple[int, str] | None = None
        self._read = 0  # inbox messages already returned by received()
        self._activity = asyncio.Event()  # set whenever the client sends or pings

    @property
    def is_open(self) -> bool:
        """False once either side closed the connection or it failed."""
        return self._transport._accepts_frames()

    async def send_text(self, data: str | bytes) -> None:
        """Deliver one text message to the client. Waits while the client's receive queue is
        full and ``block_on_full_recv_queue`` is set (TCP backpressure).

        Raises:
            ConnectionClosed: the connection is already closed or failed.
        """
        if isinstance(data, str):
            data = data.encode()
        await self._transport._deliver(Frame(data, binary=False))

    async def send_bytes(self, data: bytes) -> None:
        """Deliver one binary message to the client (see :meth:`send_text`)."""
        await self._transport._deliver(Frame(bytes(data), binary=True))

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close from the server side. The client receives the frames already sent, then
        ``ConnectionClosed(code, reason)`` (a close frame is in-band)."""
        self._transport._peer_close(ConnectionClosed(code, reason))

    def fail(self, exc: TransportError | None = None) -> None:
        """Break the connection abruptly. The client raises ``exc`` (default
        ``ConnectionClosed(1006)``, the TCP connection went away) at its next receive, after
        draining buffered frames only if ``drain_on_error`` is set."""
        self._transport._peer_fail(exc if exc is not None else ConnectionClosed(1006, "aborted"))

    async def received(self, within: float = 5.0) -> str:
        """The next message the client sent that this method has not returned yet.

        Raises:
            TimeoutError: none arrived within ``within`` seconds.
        """
        async with asyncio.timeout(within):
            while self._read >= len(self.inbox):
                self._activity.clear()
                await self._activity.wait()
        message = self.inbox[self._read]
        self._read += 1
        return message

    async def wait_for_ping(self, count: int = 1, within: float = 5.0) -> bytes:
        """Wait until the client has sent at least ``count`` pings; return the last one.

        Raises:
            TimeoutError: not within ``within`` seconds.
        """
        async with asyncio.timeout(within):
            while len(self.pings) < count:
                self._activity.clear()
                await self._activity.wait()
        return self.pings[-1]

    def _client_activity(self) -> None:
        self._activity.set()

    def __repr__(self) -> str:
        return f"MemoryPeer({self.url!r}, open={self.is_open}, inbox={len(self.inbox)})"


class MemoryExchange:
    """A fake endpoint handing out one :class:`MemoryTransport` per connection attempt.

    Attributes:
        connections: one :class:`MemoryPeer` per successful connect, oldest first.
        attempts: number of connects tried (refused and stalled ones included).
    """

    def __init__(self) -> None:
        self.connections: list[MemoryPeer] = []
        self.attempts = 0
        self._scripted: collections.deque[ConnectError | None] = collections.deque()
        self._handed_out = 0  # connections already returned by next_connection()
        self._connected = asyncio.Event()

    def transport_factory(self, url: str, options: TransportOptions) -> MemoryTransport:
        """Build a new, unconnected transport to this exchange (``TransportFactory`` shape)."""
        return MemoryTransport(url, options, self)

    def refuse_next(
        self,
        status: int | None = None,
        retry_after: float | None = None,
        message: str | None = None,
    ) -> None:
        """Make the next connect attempt fail with ``ConnectError(status, retry_after)``.
        Calls queue up: three calls refuse the next three attempts."""
        if message is None:
            message = (
                "connection refused"
                if status is None
                else f"server refused the WebSocket upgrade with HTTP {status}"
            )
        self._scripted.append(ConnectError(message, status=status, retry_after=retry_after))

    def stall_next(self) -> None:
        """Make the next connect attempt hang until its ``connect_timeout`` runs out, then
        fail with ``ConnectError`` (a server that accepts TCP and never answers)."""
        self._scripted.append(None)

    async def next_connection(self, within: float = 5.0) -> MemoryPeer:
        """The oldest connection not yet returned by this method, waiting for it if needed.

        Raises:
            TimeoutError: no new connection within ``within`` seconds.
        """
        async with asyncio.timeout(within):
            while self._handed_out >= len(self.connections):
                self._connected.clear()
                await self._connected.wait()
        peer = self.connections[self._handed_out]
        self._handed_out += 1
        return peer

    @property
    def latest(self) -> MemoryPeer:
        """The most recent connection. Raises ``IndexError`` if there was none."""
        return self.connections[-1]

    async def _connect(self, transport: MemoryTransport) -> MemoryPeer:
        self.attempts += 1
        if self._scripted:
            refusal = self._scripted.popleft()
            if refusal is None:
                timeout = transport.options.connect_timeout
                await asyncio.sleep(timeout)
                raise ConnectError(f"{transport.url}: connect timed out after {timeout:g}s")
            raise refusal
        peer = MemoryPeer(transport)
        self.connections.append(peer)
        self._connected.set()
        return peer


class MemoryTransport:
    """The client side of an in-memory connection; implements
    :class:`~streamkit.transport.base.Transport`. Built by
    :meth:`MemoryExchange.transport_factory`; single use, like every transport."""

    def __init__(self, url: str, options: TransportOptions, exchange: MemoryExchange) -> None:
        self.url = url
        self.options = options
        self._exchange = exchange
        self._state = TransportState.NEW
        self.peer: MemoryPeer | None = None
        self._frames: collections.deque[Frame] = collections.deque()
        # In-band end of stream (close frame): raised once the buffered frames are consumed.
        self._end: ConnectionClosed | None = None
        # Out-of-band failure: raised at once unless drain_on_error.
        self._failure: TransportError | None = None
        # Set on every change the receiver or a blocked peer sender may be waiting for.
        self._changed = asyncio.Event()

    @property
    def state(self) -> TransportState:
        return self._state

    async def connect(self) -> None:
        """Connect to the exchange (or fail as it was scripted to).

        Raises:
            ConnectError: refused or stalled by the exchange, or the transport is not new.
        """
        if self._state is not TransportState.NEW:
            raise ConnectError(f"{self.url}: transport is single-use; build a new one")
        self._state = TransportState.CONNECTING
        try:
            self.peer = await self._exchange._connect(self)
        except BaseException:
            self._state = TransportState.CLOSED
            raise
        self._state = TransportState.OPEN

    def _check_open(self) -> MemoryPeer:
        if self._failure is not None:
            raise self._failure
        if self._end is not None:
            raise self._end
        if self._state is not TransportState.OPEN or self.peer is None:
            raise TransportError(f"{self.url}: transport is not open ({self._state.value})")
        return self.peer

    async def send(self, data: bytes | str) -> None:
        """Record one text message in the peer's inbox (never coalesced)."""
        peer = self._check_open()
        peer.inbox.append(data.decode() if isinstance(data, bytes) else data)
        peer._client_activity()

    async def ping(self, payload: bytes = b"") -> None:
        """Record a ping on the peer (no pong is ever delivered, as with curl_cffi)."""
        if len(payload) > _PING_MAX:
            raise ValueError(f"ping payload is {len(payload)} bytes, limit {_PING_MAX}")
        peer = self._check_open()
        peer.pings.append(bytes(payload))
        peer._client_activity()

    async def recv_batch(self, max_messages: int = 256) -> list[Frame]:
        """Wait for at least one frame; return all buffered ones up to ``max_messages``.

        Raises:
            ConnectionClosed: the peer closed (after the frames sent before the close) or
                the connection was closed locally.
            TransportError: the connection failed (``MessageTooLarge``, queue overflow,
                :meth:`MemoryPeer.fail`).
        """
        if max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, got {max_messages}")
        if self._state is TransportState.NEW or self._state is TransportState.CONNECTING:
            raise TransportError(f"{self.url}: transport is not open ({self._state.value})")
        while True:
            if self._failure is not None and not (self.options.drain_on_error and self._frames):
                self._state = TransportState.CLOSED
                raise self._failure
            if self._frames:
                count = min(max_messages, len(self._frames))
                batch = [self._frames.popleft() for _ in range(count)]
                self._signal()  # room for a peer blocked on a full queue
                return batch
            if self._end is not None:
                self._state = TransportState.CLOSED
                raise self._end
            self._changed.clear()
            await self._changed.wait()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close locally (idempotent). The peer sees ``client_close``; a pending
        ``recv_batch`` raises ``ConnectionClosed(code, reason)``."""
        if self._state is TransportState.CLOSED and self._end is not None:
            return
        if self.peer is not None and self._accepts_frames():
            self.peer.client_close = (code, reason)
        self._state = TransportState.CLOSED
        if self._end is None:
            self._end = ConnectionClosed(code, reason)
        self._frames.clear()
        self._signal()

    # --- driven by MemoryPeer ------------------------------------------------------------------

    def _accepts_frames(self) -> bool:
        return self._state is TransportState.OPEN and self._end is None and self._failure is None

    def _signal(self) -> None:
        self._changed.set()

    async def _deliver(self, frame: Frame) -> None:
        while True:
            if not self._accepts_frames():
                raise ConnectionClosed(1006, "memory connection is closed")
            if len(frame.data) > self.options.max_message_size:
                self._peer_fail(
                    MessageTooLarge(
                        f"{self.url}: message of {len(frame.data)} bytes exceeds "
                        f"max_message_size {self.options.max_message_size}"
                    )
                )
                return  # like a real server: the sender does not learn about it
            if len(self._frames) < self.options.recv_queue_size:
                self._frames.append(frame)
                self._signal()
                return
            if not self.options.block_on_full_recv_queue:
                self._peer_fail(
                    TransportError(
                        f"{self.url}: receive queue full ({self.options.recv_queue_size} "
                        "messages); failing the connection instead of dropping data"
                    )
                )
                return
            self._changed.clear()
            await self._changed.wait()  # backpressure: wait until the client consumed some

    def _peer_close(self, end: ConnectionClosed) -> None:
        if self._accepts_frames():
            self._end = end
            self._signal()

    def _peer_fail(self, failure: TransportError) -> None:
        if self._accepts_frames():
            self._failure = failure
            self._signal()

    def __repr__(self) -> str:
        return f"MemoryTransport({self.url!r}, state={self._state.value})"
