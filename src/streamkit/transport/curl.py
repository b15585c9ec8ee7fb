"""WebSocket transport on libcurl, through curl_cffi's ``AsyncSession.ws_connect``.

One :class:`CurlTransport` is one connection: it owns one ``AsyncSession`` (and with it one
libcurl multi handle) and one ``AsyncWebSocket`` (one easy handle and one socket), and
:meth:`CurlTransport.close` releases all of them. Every :class:`TransportOptions` knob is
passed to curl_cffi explicitly, with streamkit's pinned defaults.

Things the integrator must know about curl_cffi 0.16's ``AsyncWebSocket``:

* **PONG frames are swallowed.** The reader drops control frames, so a PONG never reaches
  :meth:`CurlTransport.recv_batch`. :meth:`CurlTransport.ping` sends a real ping, but
  pong-timeout liveness with this transport must be application-level (the actor watches
  for data / application-level heartbeats); a WebSocket-level pong cannot be observed.
* **Performance.** Its reader task re-arms the event loop (``add_reader`` + a future) for
  every read that would block, i.e. roughly once per message on a trickling stream, and
  hands each message over through an ``asyncio.Queue``. A faster read loop will replace it
  in a later issue behind the same :class:`~streamkit.transport.base.Transport` protocol,
  without touching the actors.
* **Handshakes are blocking.** ``ws_connect`` runs ``curl.perform`` in the loop's default
  thread pool, and libcurl ignores ``CURLOPT_TIMEOUT`` while it waits for the answer to the
  upgrade request (observed with libcurl 8.21-IMPERSONATE: against a server that accepts the
  TCP connection and never answers, ``perform`` blocks forever). So we also set a low-speed
  limit, which libcurl does enforce there, and we cap concurrent handshakes per event loop
  (:func:`set_max_concurrent_connects`). A handshake slot is held until the worker thread
  really finished, not merely until :meth:`CurlTransport.connect` gave up on it: otherwise a
  reconnect storm against a silent server could still fill the pool with stuck threads.
* **Session defaults kept.** Each connection gets a fresh ``AsyncSession()``: with
  ``proxy`` unset, the ``HTTPS_PROXY``/``ALL_PROXY``/``NO_PROXY`` environment applies
  (curl_cffi's ``trust_env``), and redirects of the upgrade request are followed.
* **Refused upgrades.** For a non-101 answer libcurl fails ``perform`` with
  ``CURLE_HTTP_RETURNED_ERROR`` (22, "Refused WebSocket upgrade: 429"), and ``ws_connect``
  closes the easy handle before re-raising, so ``getinfo(RESPONSE_CODE)`` is not reachable.
  We install a header callback (``CURLOPT_HEADERFUNCTION`` through ``curl_options``, which
  curl_cffi applies after its own header buffer) that records the status line and headers of
  the upgrade response, and take ``status`` and ``Retry-After`` from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import Final, cast

from curl_cffi import CurlECode, CurlError, CurlOpt, CurlWsFlag
from curl_cffi.requests import (
    AsyncSession,
    AsyncWebSocket,
    Response,
    WebSocketClosed,
    WebSocketRetryStrategy,
)

from streamkit.errors import ConnectError, ConnectionClosed, MessageTooLarge, TransportError
from streamkit.transport.base import Frame, TransportState
from streamkit.transport.curl_common import (
    CLOSE_TIMEOUT,
    PING_MAX,
    UpgradeResponse,
    connect_error,
    curl_message,
    handshake_slots,
    in_background,
    parse_retry_after,
    redact,
    set_max_concurrent_connects,
    verify_arg,
)
from streamkit.transport.options import TransportOptions

__all__ = [
    "CLOSE_TIMEOUT",
    "CurlTransport",
    "parse_retry_after",
    "set_max_concurrent_connects",
]

_CONNECTION_LOST_CODES: Final = frozenset(
    {CurlECode.GOT_NOTHING, CurlECode.RECV_ERROR, CurlECode.SEND_ERROR}
)


async def _reap(handshake: asyncio.Task[AsyncWebSocket], session: AsyncSession[Response]) -> None:
    """Own a handshake that :meth:`CurlTransport.connect` abandoned (timeout, cancellation):
    wait for the worker thread to finish, then close whatever it produced."""
    try:
        try:
            ws = await handshake
        except (Exception, asyncio.CancelledError):
            return  # connect() already reported the failure; nothing was opened
        with contextlib.suppress(Exception):
            await ws.close(timeout=CLOSE_TIMEOUT)
    finally:
        with contextlib.suppress(Exception):
            await session.close()


class CurlTransport:
    """One WebSocket connection over libcurl (curl_cffi ``AsyncWebSocket``).

    Implements :class:`~streamkit.transport.base.Transport`. Single use: after :meth:`close`
    or any :class:`~streamkit.errors.TransportError` it is dead and every further call
    raises that error again; build a new transport to reconnect.

    ``send``/``ping`` may be called from other tasks while one task sits in
    :meth:`recv_batch` (the actor's subscriber and watchdog do that); ``recv_batch`` itself
    must have a single caller.
    """

    def __init__(self, url: str, options: TransportOptions) -> None:
        self._url = url
        self._where = redact(url)
        self._options = options
        self._state = TransportState.NEW
        self._session: AsyncSession[Response] | None = None
        self._ws: AsyncWebSocket | None = None
        # The error that killed the connection; re-raised by every later call.
        self._error: TransportError | None = None
        self._closing = False
        self._send_lock = asyncio.Lock()

    @property
    def url(self) -> str:
        return self._url

    @property
    def state(self) -> TransportState:
        return self._state

    # --- connect -----------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the connection within ``connect_timeout`` (which includes waiting for a
        handshake slot).

        Raises:
            ConnectError: on any failure: DNS, TCP, TLS, proxy, timeout, a non-101 answer
                (``status`` set, and ``retry_after`` for 429/503 when the server sent
                ``Retry-After``), or when called on a transport that is not new.

        Safe to cancel: an abandoned handshake is finished and closed in the background.
        """
        if self._state is not TransportState.NEW:
            raise ConnectError(
                f"{self._where}: transport is single-use (state {self._state.value}); "
                "build a new one to reconnect"
            )
        self._state = TransportState.CONNECTING
        timeout = self._options.connect_timeout
        response = UpgradeResponse()
        handshake: asyncio.Task[AsyncWebSocket] | None = None
        error: ConnectError | None = None
        try:
            async with asyncio.timeout(timeout):
                slots = handshake_slots()
                await slots.acquire()
                try:
                    session: AsyncSession[Response] = AsyncSession()
                    handshake = asyncio.get_running_loop().create_task(
                        self._handshake(session, response), name=f"ws-handshake {self._where}"
                    )
                except BaseException:  # pragma: no cover - nothing above awaits
                    slots.release()
                    raise
                # Release the slot when the worker thread is done, not when we stop waiting.
                handshake.add_done_callback(lambda _: slots.release())
                # shield: a timeout or cancellation must not cancel the task, because that
                # would only abandon the thread; _reap() waits for it instead.
                ws = await asyncio.shield(handshake)
        except asyncio.CancelledError:
            if handshake is not None:
                self._abandon(handshake, session)
            self._state = TransportState.CLOSED
            raise
        except CurlError as exc:  # before TimeoutError: keep curl's own diagnosis
            error = self._connect_error(exc, response)
        except TimeoutError:
            stage = "waiting for a handshake slot" if handshake is None else "handshake"
            error = ConnectError(f"{self._where}: connect timed out after {timeout:g}s ({stage})")
        except Exception as exc:
            error = self._connect_error(exc, response)

        if error is not None:
            self._state = TransportState.CLOSED
            self._error = error
            if handshake is not None:
                reaper = self._abandon(handshake, session)
                if handshake.done():
                    # curl_cffi already closed the easy handle; closing the session is quick,
                    # so finish it before reporting (callers may count fds right away).
                    await asyncio.shield(reaper)
            raise error

        if self._closing:  # pragma: no cover - close() raced with connect() from another task
            self._session, self._ws = session, ws
            await self._release(1000, "")
            raise ConnectError(f"{self._where}: transport was closed while connecting")
        self._session, self._ws = session, ws
        self._state = TransportState.OPEN

    async def _handshake(
        self, session: AsyncSession[Response], response: UpgradeResponse
    ) -> AsyncWebSocket:
        o = self._options
        # curl_cffi types curl_options as dict[CurlOpt, str] but hands each value to
        # Curl.setopt, which takes ints and callables too.
        curl_options = cast(
            "dict[CurlOpt, str]",
            {
                CurlOpt.HEADERFUNCTION: response,
                # libcurl does enforce the low-speed limit while it waits for the upgrade
                # answer (unlike CURLOPT_TIMEOUT): this bounds how long the worker thread
                # can block against a server that accepts TCP and never answers.
                CurlOpt.LOW_SPEED_LIMIT: 1,
                CurlOpt.LOW_SPEED_TIME: max(1, math.ceil(o.connect_timeout)),
            },
        )
        return await session.ws_connect(
            self._url,
            headers=dict(o.headers),
            proxy=o.proxy,
            impersonate=o.impersonate,
            verify=verify_arg(o),
            # libcurl's overall timeout covers DNS, TCP and TLS; it is not enforced while
            # waiting for the upgrade answer (see the module docstring and curl_options).
            timeout=o.connect_timeout,
            curl_options=curl_options,
            recv_queue_size=o.recv_queue_size,
            send_queue_size=o.send_queue_size,
            max_send_batch_size=o.max_send_batch_size,
            coalesce_frames=o.coalesce_frames,
            recv_time_slice=o.recv_time_slice,
            send_time_slice=o.send_time_slice,
            max_message_size=o.max_message_size,
            drain_on_error=o.drain_on_error,
            block_on_recv_queue_full=o.block_on_full_recv_queue,
            ws_retry=WebSocketRetryStrategy(
                retry=o.retry.enabled, delay=o.retry.delay, count=o.retry.count
            ),
            # Reply to the peer's close frame as RFC 6455 requires; recv_batch still reports
            # the peer's code and reason.
            autoclose=True,
        )

    @staticmethod
    def _abandon(
        handshake: asyncio.Task[AsyncWebSocket], session: AsyncSession[Response]
    ) -> asyncio.Task[None]:
        """Hand a handshake connect() will not use to a background task that waits for it
        (the worker thread cannot be interrupted) and closes what it produced."""
        return in_background(_reap(handshake, session))

    def _connect_error(self, exc: BaseException, response: UpgradeResponse) -> ConnectError:
        return connect_error(self._where, exc, response)

    # --- data path ---------------------------------------------------------------------------

    def _open_ws(self) -> AsyncWebSocket:
        if self._error is not None:
            raise self._error
        if self._ws is None or self._state is not TransportState.OPEN:
            raise TransportError(f"{self._where}: transport is not open ({self._state.value})")
        return self._ws

    async def send(self, data: bytes | str) -> None:
        """Queue one text frame (bytes are sent as text too).

        Never coalesced: with ``coalesce_frames`` on, curl_cffi's writer merges consecutive
        queued data frames with equal flags into one frame. Everything the actor sends is a
        control or subscription message that must stay one frame, so in that mode each send
        waits (under a lock, as several actor tasks may send) until the writer has written
        the frame to the socket (``flush``): its queue then never holds two data frames, so
        there is nothing to merge. Pings and close frames are never merged by curl_cffi.
        Without coalescing, send returns once the frame is queued (``send_queue_size``).
        """
        async with self._send_lock:
            ws = self._open_ws()
            try:
                await ws.send(data, CurlWsFlag.TEXT)
                if self._options.coalesce_frames:
                    await ws.flush()
            except Exception as exc:
                raise await self._fail(exc) from exc

    async def ping(self, payload: bytes = b"") -> None:
        """Send a ping control frame (the pong is swallowed by curl_cffi, see module doc).

        Raises:
            ValueError: the payload exceeds 125 bytes (RFC 6455 limit for control frames).
        """
        if len(payload) > PING_MAX:
            raise ValueError(f"ping payload is {len(payload)} bytes, limit {PING_MAX}")
        ws = self._open_ws()
        try:
            await ws.ping(payload)
        except Exception as exc:
            raise await self._fail(exc) from exc

    async def recv_batch(self, max_messages: int = 256) -> list[Frame]:
        """Wait for one message, then return it with every message already buffered (without
        waiting), up to ``max_messages``, in arrival order.

        A close frame ends the batch: the frames before it are returned and the next call
        raises ``ConnectionClosed(code, reason)`` from the peer's close frame.

        Raises:
            ConnectionClosed: the peer closed (its code/reason; 1006 when the TCP connection
                went away without a close frame).
            MessageTooLarge: a message exceeded ``max_message_size``.
            TransportError: any other failure (receive queue overflow with
                ``block_on_full_recv_queue=False``, socket errors, protocol errors).
        """
        if max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, got {max_messages}")
        if self._error is not None:
            await self._release(1000, "")
            raise self._error
        ws = self._open_ws()
        try:
            data, flags = await ws.recv()
        except Exception as exc:
            raise await self._fail(exc) from exc
        if flags & CurlWsFlag.CLOSE:
            raise await self._fail(self._peer_closed(ws))
        batch = [Frame(data, bool(flags & CurlWsFlag.BINARY))]

        # AsyncWebSocket has no public non-blocking receive: take the rest straight from its
        # receive queue (curl_cffi is pinned to 0.16.x; the burst test covers this). Honour
        # drain_on_error like AsyncWebSocket.recv does: after a transport error, buffered
        # messages are only delivered when draining was asked for.
        queue = ws._receive_queue
        drain = self._options.drain_on_error
        while len(batch) < max_messages:
            if not drain and ws._transport_exception is not None:
                break
            try:
                data, flags = queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            if flags & CurlWsFlag.CLOSE:
                self._set_error(self._peer_closed(ws))
                break
            batch.append(Frame(data, bool(flags & CurlWsFlag.BINARY)))
        return batch

    def _peer_closed(self, ws: AsyncWebSocket) -> ConnectionClosed:
        # AsyncWebSocket parsed the close frame (and validated the code) before queueing it.
        code = ws.close_code
        return ConnectionClosed(1005 if code is None else int(code), ws.close_reason or "")

    def _map_error(self, exc: BaseException) -> TransportError:
        if isinstance(exc, TransportError):
            return exc
        where = self._where
        if isinstance(exc, CurlError):
            if exc.code == CurlECode.TOO_LARGE:
                return MessageTooLarge(f"{where}: {curl_message(exc)}")
            ws = self._ws
            if isinstance(exc, WebSocketClosed) and ws is not None and ws.close_code is not None:
                return self._peer_closed(ws)
            if isinstance(exc, WebSocketClosed) or exc.code in _CONNECTION_LOST_CODES:
                # EOF, reset, or the connection died under us: no close frame, so 1006.
                return ConnectionClosed(1006, curl_message(exc))
        return TransportError(f"{where}: websocket error: {curl_message(exc)}")

    def _set_error(self, error: TransportError) -> None:
        if self._error is None:
            self._error = error
        self._state = TransportState.CLOSED

    async def _fail(self, exc: BaseException) -> TransportError:
        """Record the error that killed the connection, release it, return what to raise."""
        self._set_error(self._map_error(exc))
        await self._release(1000, "")
        assert self._error is not None
        return self._error

    # --- close -------------------------------------------------------------------------------

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame (if the connection is still up), wait at most
        :data:`CLOSE_TIMEOUT` for the closing handshake, then release the socket, the curl
        handle and the session. Idempotent, and completes the release even if cancelled."""
        if self._closing:
            return
        self._closing = True
        self._set_error(ConnectionClosed(code, reason))
        await self._release(code, reason)

    async def _release(self, code: int, reason: str) -> None:
        ws, session = self._ws, self._session
        self._ws = self._session = None
        if ws is None and session is None:
            return
        # A task of its own, shielded: resources must be released even when the caller is
        # being cancelled (an actor's finally: block during shutdown).
        await asyncio.shield(in_background(self._release_now(ws, session, code, reason)))

    @staticmethod
    async def _release_now(
        ws: AsyncWebSocket | None,
        session: AsyncSession[Response] | None,
        code: int,
        reason: str,
    ) -> None:
        try:
            if ws is not None:
                with contextlib.suppress(Exception):
                    # Bounded: sends the close frame, flushes and waits for curl_cffi's
                    # teardown (which closes the easy handle and its socket) within timeout.
                    await ws.close(code, reason, timeout=CLOSE_TIMEOUT)
                ws.terminate()  # no-op unless close() failed early; idempotent
        finally:
            if session is not None:
                with contextlib.suppress(Exception):
                    await session.close()

    def __repr__(self) -> str:
        return f"CurlTransport({self._where!r}, state={self._state.value})"
