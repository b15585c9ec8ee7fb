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
import email.utils
import math
import re
import time
import weakref
from collections.abc import Coroutine
from datetime import UTC
from typing import Any, Final, cast
from urllib.parse import urlsplit

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
from streamkit.transport.options import TransportOptions

__all__ = [
    "CLOSE_TIMEOUT",
    "CurlTransport",
    "parse_retry_after",
    "set_max_concurrent_connects",
]

#: Seconds :meth:`CurlTransport.close` may spend on the closing handshake before it tears the
#: connection down regardless.
CLOSE_TIMEOUT: Final = 2.0

_DEFAULT_MAX_CONCURRENT_CONNECTS: Final = 8
_max_concurrent_connects = _DEFAULT_MAX_CONCURRENT_CONNECTS
# One semaphore per event loop: each loop has its own default executor (the thing the cap
# protects), and an asyncio.Semaphore must not be shared between loops.
_handshake_slots_by_loop: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, asyncio.Semaphore
] = weakref.WeakKeyDictionary()
# Strong references to background clean-up tasks (the loop only keeps weak ones).
_background: set[asyncio.Task[None]] = set()

_PING_MAX: Final = 125  # RFC 6455 5.5: control frame payloads are at most 125 bytes
_REFUSED_RE: Final = re.compile(r"Refused WebSocket upgrade: (\d{3})")
_CONNECTION_LOST_CODES: Final = frozenset(
    {CurlECode.GOT_NOTHING, CurlECode.RECV_ERROR, CurlECode.SEND_ERROR}
)


def set_max_concurrent_connects(n: int) -> None:
    """Cap the number of WebSocket handshakes running at once (default 8).

    The cap applies per event loop (each loop has its own default thread pool, which is what
    it protects); a process normally runs one loop. Connects beyond the cap wait for a slot,
    and that wait counts against their ``connect_timeout``. Handshakes already running keep
    the slot they hold; the new cap applies to slots acquired from now on.

    Raises:
        ValueError: ``n`` is smaller than 1.
    """
    global _max_concurrent_connects
    if n < 1:
        raise ValueError(f"max concurrent connects must be >= 1, got {n}")
    _max_concurrent_connects = n
    _handshake_slots_by_loop.clear()


def _handshake_slots() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    slots = _handshake_slots_by_loop.get(loop)
    if slots is None:
        slots = _handshake_slots_by_loop[loop] = asyncio.Semaphore(_max_concurrent_connects)
    return slots


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait according to an HTTP ``Retry-After`` value, or None if unusable.

    Accepts delta-seconds (``"120"``, decimals tolerated) and HTTP-dates; a date in the past
    gives 0. ``now`` (Unix time) is for tests.
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


class _UpgradeResponse:
    """libcurl header callback recording the head of the upgrade response.

    libcurl calls it once per header line, from the worker thread running ``curl.perform``;
    it is read only after ``perform`` returned. Only the last response is kept (redirects and
    proxy ``CONNECT`` answers come first). It never raises: an exception in a header callback
    would abort the transfer and hide the real answer.
    """

    def __init__(self) -> None:
        self.status: int | None = None
        self.headers: dict[str, str] = {}

    def __call__(self, line: bytes) -> int:
        try:
            if line.startswith(b"HTTP/"):
                self.headers = {}
                parts = line.split(None, 2)
                self.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
            else:
                name, sep, value = line.partition(b":")
                if sep:
                    key = name.strip().decode("latin-1").lower()
                    self.headers[key] = value.strip().decode("latin-1")
        except Exception:  # pragma: no cover - defensive, see docstring
            pass
        return len(line)  # anything else tells libcurl to abort


def _curl_message(exc: BaseException) -> str:
    """An exception's text without curl_cffi's boilerplate link to the libcurl error docs."""
    text = str(exc) or type(exc).__name__
    return text.split(" See https://curl.se/", 1)[0].rstrip(" .")


def _redact(url: str) -> str:
    """``url`` without userinfo, query and fragment, which may carry credentials/listen keys."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
    except ValueError:
        return "<invalid url>"
    return f"{parts.scheme}://{host}{parts.path}"


def _verify(options: TransportOptions) -> bool:
    """``ws_connect``'s ``verify``: False, True (curl_cffi's default bundle, certifi) or, when
    ``ca_file`` is set, that path. curl_cffi treats a string ``verify`` as a CA bundle
    (CURLOPT_CAINFO and PROXY_CAINFO) but its signature says ``bool | None``, hence the cast."""
    if options.verify and options.ca_file is not None:
        return cast(bool, options.ca_file)
    return options.verify


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


def _in_background(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)
    return task


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
        self._where = _redact(url)
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
        response = _UpgradeResponse()
        handshake: asyncio.Task[AsyncWebSocket] | None = None
        error: ConnectError | None = None
        try:
            async with asyncio.timeout(timeout):
                slots = _handshake_slots()
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
        self, session: AsyncSession[Response], response: _UpgradeResponse
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
            verify=_verify(o),
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
        return _in_background(_reap(handshake, session))

    def _connect_error(self, exc: BaseException, response: _UpgradeResponse) -> ConnectError:
        status = response.status if response.status not in (None, 101) else None
        if status is None and isinstance(exc, CurlError):
            # Fallback: libcurl names the status in its message.
            match = _REFUSED_RE.search(str(exc))
            if match is not None:
                status = int(match.group(1))
        if status is not None:
            retry_after = None
            if status in (429, 503):
                retry_after = parse_retry_after(response.headers.get("retry-after"))
            message = f"{self._where}: server refused the WebSocket upgrade with HTTP {status}"
            if retry_after is not None:
                message += f" (Retry-After: {retry_after:g}s)"
            return ConnectError(message, status=status, retry_after=retry_after)
        if isinstance(exc, CurlError) and exc.code == CurlECode.OPERATION_TIMEDOUT:
            return ConnectError(f"{self._where}: connect timed out: {_curl_message(exc)}")
        return ConnectError(f"{self._where}: connect failed: {_curl_message(exc)}")

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
        if len(payload) > _PING_MAX:
            raise ValueError(f"ping payload is {len(payload)} bytes, limit {_PING_MAX}")
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
                return MessageTooLarge(f"{where}: {_curl_message(exc)}")
            ws = self._ws
            if isinstance(exc, WebSocketClosed) and ws is not None and ws.close_code is not None:
                return self._peer_closed(ws)
            if isinstance(exc, WebSocketClosed) or exc.code in _CONNECTION_LOST_CODES:
                # EOF, reset, or the connection died under us: no close frame, so 1006.
                return ConnectionClosed(1006, _curl_message(exc))
        return TransportError(f"{where}: websocket error: {_curl_message(exc)}")

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
        await asyncio.shield(_in_background(self._release_now(ws, session, code, reason)))

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
