"""streamkit's own WebSocket read loop on libcurl: the default transport (``kind: curl``).

It keeps libcurl for the connection (TLS fingerprint, impersonation, proxies, the upgrade) but
replaces curl_cffi's ``AsyncWebSocket`` reader, which costs about 20 µs of CPU per message on
a stream that arrives one message per packet: that reader re-registers the socket with the
event loop and raises (and catches) a ``CurlError`` on every empty read.

How this one reads:

* The upgrade runs ``curl_easy_perform`` with ``CURLOPT_CONNECT_ONLY=2`` in the loop's default
  thread pool (capped by the handshake slots shared with
  :class:`~streamkit.transport.curl.CurlTransport`), with the same options, TLS, proxy,
  impersonation, header capture (status, ``Retry-After``) and low-speed limit.
* Then the socket is registered with ``loop.add_reader`` **once** for the connection's life.
  When it is readable, :meth:`LibcurlTransport._drain` calls ``curl_ws_recv`` through cffi and
  checks its return code (``CURLE_AGAIN`` means "nothing more", no exception is raised) until
  **libcurl** says it would block, not the socket: TLS may hold decrypted records that the
  socket no longer signals.
* When the optional C accelerator ``_streamkit_speedups`` is built (the wheel build compiles
  it when a compiler is available; ``STREAMKIT_NO_SPEEDUPS=1`` turns it off), it runs that
  loop for the common frame, a whole TEXT/BINARY message in one read, and hands every other
  frame to the Python code, which is the reference and the fallback (:data:`SPEEDUPS`).
* Fragments (``CURLWS_CONT``) and frames larger than the receive buffer (``bytesleft``) are
  reassembled; whole messages go to a deque, and one future wakes the actor waiting in
  :meth:`LibcurlTransport.recv_batch`, which takes everything queued in one call. In push
  mode (:meth:`LibcurlTransport.set_receiver`, what the actor uses) the drain also calls the
  receiver, which takes the batch with :meth:`LibcurlTransport.take_batch` on the spot:
  no task switch between reading a batch and decoding it.
* Control frames: libcurl answers PINGs itself (it does unless ``CURLWS_RAW_MODE`` is set,
  which we never set); PONGs set :attr:`LibcurlTransport.last_pong`, so the actor can run a
  WebSocket-level pong timeout on this transport; a CLOSE is answered and reported as
  ``ConnectionClosed(code, reason)`` after the messages that preceded it.
* ``recv_time_slice`` bounds one drain: after that long the rest is scheduled with
  ``call_soon`` so one busy connection cannot starve the loop. ``recv_queue_size`` bounds the
  deque: when full, ``block_on_full_recv_queue`` pauses reading (``remove_reader``, TCP
  backpressure) until the actor catches up, or fails the connection.
* Sending calls ``curl_ws_send`` at once when the socket takes it; otherwise (``CURLE_AGAIN``,
  a partial write, or frames already waiting) the frame waits in a FIFO queue flushed by an
  ``add_writer`` callback (``max_send_batch_size`` frames or ``send_time_slice`` per call).
  Frames are never merged: every ``send`` is one WebSocket frame (``coalesce_frames`` does not
  apply here; exchange protocols need their subscription and control messages one per frame).

Everything except the handshake runs on the event loop thread; the curl handle is used by no
other thread once connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, cast

from curl_cffi import Curl, CurlECode, CurlError, CurlInfo, CurlOpt, CurlWsFlag
from curl_cffi._wrapper import ffi, lib
from curl_cffi.requests.utils import set_curl_options

from streamkit.errors import ConnectError, ConnectionClosed, MessageTooLarge, TransportError
from streamkit.transport.base import Frame, TransportState
from streamkit.transport.curl_common import (
    CLOSE_TIMEOUT,
    PING_MAX,
    UpgradeResponse,
    connect_error,
    curl_message,
    handshake_slots,
    redact,
    verify_arg,
)
from streamkit.transport.options import TransportOptions

if TYPE_CHECKING:
    from _streamkit_speedups import Reader

__all__ = ["RECV_BUFFER_SIZE", "SPEEDUPS", "LibcurlTransport"]

#: Bytes ``curl_ws_recv`` may return per call; larger frames arrive in parts (``bytesleft``).
RECV_BUFFER_SIZE: Final = 64 * 1024

_AGAIN: Final = int(CurlECode.AGAIN)  # 81
_RECV_ERROR: Final = int(CurlECode.RECV_ERROR)
_LOST: Final = frozenset(
    {int(CurlECode.GOT_NOTHING), int(CurlECode.RECV_ERROR), int(CurlECode.SEND_ERROR)}
)
_TEXT: Final = int(CurlWsFlag.TEXT)
_BINARY: Final = int(CurlWsFlag.BINARY)
_CONT: Final = int(CurlWsFlag.CONT)
_CLOSE: Final = int(CurlWsFlag.CLOSE)
_PING: Final = int(CurlWsFlag.PING)
_PONG: Final = int(CurlWsFlag.PONG)
_DATA: Final = _TEXT | _BINARY | _CONT
# Messages drained between two looks at the clock (the time slice check is not free).
_CLOCK_EVERY: Final = 16
# Looked up once: the drain loop runs per message.
_ws_recv = lib.curl_ws_recv
_unpack = ffi.unpack
_monotonic = time.monotonic  # the clock asyncio's loop.time() reads


def _address(cdata: Any) -> int:
    return int(ffi.cast("uintptr_t", cdata))


def _load_speedups() -> type[Reader] | None:
    """The optional C accelerator's reader class (``_streamkit_speedups``, compiled by the
    wheel build when a compiler is available), or None: not built, disabled with
    ``STREAMKIT_NO_SPEEDUPS=1``, or curl_cffi's ``struct curl_ws_frame`` is not laid out
    the way the C code reads it."""
    if os.environ.get("STREAMKIT_NO_SPEEDUPS") == "1":
        return None
    try:
        import _streamkit_speedups as speedups
    except ImportError:
        return None
    layout = (
        ffi.sizeof("struct curl_ws_frame"),
        ffi.offsetof("struct curl_ws_frame", "flags"),
        ffi.offsetof("struct curl_ws_frame", "bytesleft"),
    )
    if layout != (speedups.FRAME_STRUCT_SIZE, speedups.FLAGS_OFFSET, speedups.BYTESLEFT_OFFSET):
        return None
    return speedups.Reader


#: The reader class connections use when the C accelerator is in use, else None (tests
#: patch it to compare both paths on one stream).
_Reader = _load_speedups()
#: True when new connections read with the C accelerator (``_streamkit_speedups``); the
#: pure-Python loop in :meth:`LibcurlTransport._drain` is the fallback and the reference.
SPEEDUPS: Final = _Reader is not None
_WS_RECV_ADDRESS: Final = _address(ffi.addressof(lib, "curl_ws_recv"))


class _Outgoing:
    """One frame waiting to be written (possibly partly written already)."""

    __slots__ = ("flags", "offset", "payload")

    def __init__(self, payload: bytes, flags: int) -> None:
        self.payload = payload
        self.flags = flags
        self.offset = 0


class LibcurlTransport:
    """One WebSocket connection over libcurl, read by streamkit's own loop.

    Implements :class:`~streamkit.transport.base.Transport`. Single use: after :meth:`close`
    or any :class:`~streamkit.errors.TransportError` it is dead and every further call raises
    that error again; build a new transport to reconnect.

    ``send``/``ping`` may be called from other tasks while one task waits in
    :meth:`recv_batch` (the actor's subscriber and watchdog do that); ``recv_batch`` itself
    must have a single caller.

    :attr:`last_pong` is the ``time.monotonic()`` of the last PONG frame received (None until
    one arrives): the actor's WebSocket-level pong timeout reads it.
    """

    def __init__(self, url: str, options: TransportOptions) -> None:
        self._url = url
        self._where = redact(url)
        self._options = options
        self._state = TransportState.NEW
        self.last_pong: float | None = None
        self._curl: Curl | None = None
        self._handle: Any = None  # the CURL* of self._curl while connected
        self._fd = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        # The error that killed the connection; re-raised by every later call once the frames
        # that may still be delivered are gone.
        self._error: TransportError | None = None
        self._closing = False
        self._close_sent = False
        self._closed_by_peer: asyncio.Future[None] | None = None
        # receive side
        self._frames: deque[Frame] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._receiver: Callable[[], None] | None = None
        self._reading = False  # registered with add_reader
        self._paused = False  # receive queue full (block_on_full_recv_queue)
        self._drain_pending = False  # a call_soon(_drain) is scheduled
        self._parts: list[bytes] = []  # fragments of the message being assembled
        self._parts_size = 0
        self._parts_binary = False
        self._control: list[bytes] = []  # a control frame larger than one recv (rare)
        self._retries = 0
        self._buf = ffi.new("char[]", RECV_BUFFER_SIZE)
        self._limits = (options.max_message_size, options.recv_queue_size)
        self._nrecv = ffi.new("size_t *")
        self._meta = ffi.new("struct curl_ws_frame **")
        # The C accelerator's loop over the same handle, buffer and out-params (connect()).
        self._reader: Reader | None = None
        # send side
        self._nsent = ffi.new("size_t *")
        self._outgoing: deque[_Outgoing] = deque()
        self._writing = False  # registered with add_writer
        self._room: deque[asyncio.Future[None]] = deque()  # senders waiting for queue room

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

        Safe to cancel: an abandoned handshake's curl handle is closed as soon as its worker
        thread finishes (the thread cannot be interrupted).
        """
        if self._state is not TransportState.NEW:
            raise ConnectError(
                f"{self._where}: transport is single-use (state {self._state.value}); "
                "build a new one to reconnect"
            )
        self._state = TransportState.CONNECTING
        loop = self._loop = asyncio.get_running_loop()
        timeout = self._options.connect_timeout
        response = UpgradeResponse()
        curl = Curl()
        handshake: asyncio.Future[None] | None = None
        error: ConnectError | None = None
        try:
            async with asyncio.timeout(timeout):
                slots = handshake_slots()
                await slots.acquire()
                try:
                    handshake = loop.run_in_executor(None, self._perform, curl, response)
                except BaseException:  # pragma: no cover - executor refused the job
                    slots.release()
                    raise
                # Release the slot when the worker thread is done, not when we stop waiting:
                # a reconnect storm against a silent server must not pile up stuck threads.
                handshake.add_done_callback(lambda _: slots.release())
                await asyncio.shield(handshake)
        except asyncio.CancelledError:
            self._abandon(handshake, curl)
            self._state = TransportState.CLOSED
            raise
        except CurlError as exc:  # before TimeoutError: keep curl's own diagnosis
            error = connect_error(self._where, exc, response)
        except TimeoutError:
            stage = "waiting for a handshake slot" if handshake is None else "handshake"
            error = ConnectError(f"{self._where}: connect timed out after {timeout:g}s ({stage})")
        except Exception as exc:
            error = connect_error(self._where, exc, response)

        if error is None and self._closing:  # pragma: no cover - close() raced connect()
            error = ConnectError(f"{self._where}: transport was closed while connecting")
        if error is not None:
            self._state = TransportState.CLOSED
            self._error = error
            self._abandon(handshake, curl)
            raise error

        self._curl = curl
        self._handle = curl._curl  # the CURL*: curl_ws_recv/curl_ws_send take it directly
        self._fd = cast(int, curl.getinfo(CurlInfo.ACTIVESOCKET))
        if _Reader is not None:
            # It holds raw addresses: self keeps the handle (until _release closes the
            # reader), the buffer and the out-params alive.
            self._reader = _Reader(
                _WS_RECV_ADDRESS,
                _address(self._handle),
                _address(self._buf),
                RECV_BUFFER_SIZE,
                _address(self._nrecv),
                _address(self._meta),
                Frame,
                self._frames,
                self._options.max_message_size,
            )
        self._state = TransportState.OPEN
        loop.add_reader(self._fd, self._drain)
        self._reading = True
        # libcurl may already hold frames that arrived with the upgrade answer.
        self._schedule_drain()

    def _perform(self, curl: Curl, response: UpgradeResponse) -> None:
        """Worker thread: configure the handle like curl_cffi's ``ws_connect`` and run the
        upgrade (connect-only WebSocket mode)."""
        o = self._options
        set_curl_options(
            curl,
            "GET",
            self._url,
            params_list=[None, None],
            headers_list=[None, dict(o.headers)],
            cookies_list=[None, None],
            proxies_list=[None, None],
            proxy=o.proxy,
            verify_list=[True, verify_arg(o)],
            impersonate=o.impersonate,
            # libcurl's overall timeout covers DNS, TCP and TLS; it is not enforced while
            # waiting for the upgrade answer, the low-speed limit below is.
            timeout=o.connect_timeout,
            allow_redirects=True,
            max_redirects=30,
            accept_encoding="gzip, deflate, br",
            curl_options=cast(
                "dict[CurlOpt, str]",
                {
                    CurlOpt.HEADERFUNCTION: response,
                    CurlOpt.LOW_SPEED_LIMIT: 1,
                    CurlOpt.LOW_SPEED_TIME: max(1, math.ceil(o.connect_timeout)),
                },
            ),
        )
        curl.setopt(CurlOpt.TCP_NODELAY, 1)
        curl.setopt(CurlOpt.CONNECT_ONLY, 2)  # 2: WebSocket, https://curl.se/docs/websocket.html
        curl.perform()

    @staticmethod
    def _abandon(handshake: asyncio.Future[None] | None, curl: Curl) -> None:
        """Close the handle of a handshake connect() will not use, once its thread is done.

        The handshake's outcome is retrieved and dropped: connect() has already reported
        its own error, and an unretrieved one would make asyncio log "Future exception was
        never retrieved" whenever the collector frees the future."""

        def close(done: asyncio.Future[None] | None = None) -> None:
            if done is not None and not done.cancelled():
                done.exception()
            with contextlib.suppress(Exception):
                curl.close()

        if handshake is None or handshake.done():
            close(handshake)
        else:
            handshake.add_done_callback(close)

    # --- receive -----------------------------------------------------------------------------

    async def recv_batch(self, max_messages: int = 256) -> list[Frame]:
        """Wait for one message, then return it with every message already received (without
        waiting), up to ``max_messages``, in arrival order.

        Raises:
            ConnectionClosed: the peer closed (its code/reason; 1006 when the TCP connection
                went away without a close frame), after the messages that preceded it.
            MessageTooLarge: a message exceeded ``max_message_size``.
            TransportError: any other failure (receive queue overflow with
                ``block_on_full_recv_queue=False``, socket errors, protocol errors). Messages
                received before such a failure are delivered first only with
                ``drain_on_error``.
        """
        if max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, got {max_messages}")
        frames = self._frames
        while not frames:
            self._check_readable()
            assert self._loop is not None
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        return self._take(max_messages)

    def take_batch(self, max_messages: int = 256) -> list[Frame]:
        """:meth:`recv_batch` without waiting: the messages already received (up to
        ``max_messages``), ``[]`` when there are none. Raises what ``recv_batch`` raises once
        nothing is left to deliver."""
        if max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, got {max_messages}")
        if not self._frames:
            self._check_readable()
            return []
        return self._take(max_messages)

    def set_receiver(self, receiver: Callable[[], None] | None) -> None:
        """Push mode: call ``receiver()`` on the event loop, from the reader callback, each
        time messages were queued or the connection failed (besides waking ``recv_batch``),
        so a caller can take them with :meth:`take_batch` without a task switch. The
        receiver must not raise and must not block; it runs while the reader callback is
        on the stack, so it must not call :meth:`close`. ``None`` turns push mode off."""
        self._receiver = receiver

    def _check_readable(self) -> None:
        if self._error is not None:
            raise self._error
        if self._state is not TransportState.OPEN:
            raise TransportError(f"{self._where}: transport is not open ({self._state.value})")

    def _take(self, max_messages: int) -> list[Frame]:
        frames = self._frames
        if len(frames) <= max_messages:
            batch = list(frames)
            frames.clear()
        else:
            batch = [frames.popleft() for _ in range(max_messages)]
        if self._paused:
            self._resume()
        return batch

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        receiver = self._receiver
        if receiver is not None:
            receiver()

    def _schedule_drain(self) -> None:
        if not self._drain_pending and self._loop is not None:
            self._drain_pending = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        """Read every frame libcurl has (until ``CURLE_AGAIN``), within ``recv_time_slice``.

        Called by the event loop when the socket is readable, and through ``call_soon`` to
        continue a drain that hit its time slice or to pick up frames libcurl buffered while
        reading was paused. Never raises: failures end the connection (:meth:`_fail`).

        With the C accelerator (:data:`SPEEDUPS`), ``self._reader`` reads and queues the
        whole, unfragmented data messages within ``max_message_size`` in batches that end
        where this loop checks the queue size and the clock; every other frame is left in
        the buffer for the code below, which is the whole reference implementation."""
        self._drain_pending = False
        handle = self._handle
        if handle is None or self._paused:
            return
        recv = _ws_recv
        buf, nrecv, meta = self._buf, self._nrecv, self._meta
        unpack = _unpack
        frames = self._frames
        append = frames.append
        parts = self._parts  # never rebound: cleared in place
        reader = self._reader
        # tuple.__new__ skips the NamedTuple's Python-level __new__: half the cost per message
        new_frame = tuple.__new__
        limit, queue_size = self._limits
        # The time slice starts at the first clock read, after _CLOCK_EVERY messages (a few
        # microseconds into a 10 ms slice): a drain that reads one message, the usual case
        # on a paced stream, never reads the clock.
        deadline = 0.0
        count = 0
        try:
            while True:
                if reader is None or parts:
                    rc = recv(handle, buf, RECV_BUFFER_SIZE, nrecv, meta)
                else:
                    # At most up to the next queue-size or clock check: only the batch's last
                    # message can trip one, so the checks below see what they would see
                    # message by message. rc -1: the batch is full, nothing is pending.
                    room = queue_size - len(frames)
                    batch = _CLOCK_EVERY - count % _CLOCK_EVERY
                    rc, got = reader.drain(batch if batch <= room else room if room > 0 else 1)
                    count += got
                if rc > 0:
                    if rc != _AGAIN:
                        if not self._recv_error(rc):
                            return
                    elif not count:
                        # Woken without a data message: possibly a PING that libcurl consumed
                        # and answered with a PONG it has only queued (see _flush_auto_pong).
                        self._flush_auto_pong()
                    break
                if not rc:  # a frame waits in buf/meta
                    frame = meta[0]
                    flags = frame.flags
                    if flags & _DATA:
                        n = nrecv[0]
                        if not (flags & _CONT or frame.bytesleft or parts):
                            # The common case: a whole message in one frame and one read.
                            if n > limit:
                                self._too_large(n)
                                return
                            append(new_frame(Frame, (unpack(buf, n), bool(flags & _BINARY))))
                        elif not self._fragment(flags, n, frame.bytesleft):
                            return
                        count += 1
                    elif flags & _CLOSE:
                        if not self._control_frame(nrecv[0], frame.bytesleft):
                            continue  # more of the close payload follows
                        self._peer_closed(b"".join(self._control))
                        return
                    else:
                        if flags & _PONG:
                            self.last_pong = time.monotonic()
                            if frame.bytesleft:
                                self._control_frame(nrecv[0], frame.bytesleft)
                            else:
                                self._control.clear()
                        continue
                # After a data frame (or a batch from the reader):
                if len(frames) >= queue_size:
                    if self._closing:
                        frames.clear()  # close() waits for the peer's close frame only
                    elif not self._queue_full():
                        return
                if self._paused:
                    break
                if count % _CLOCK_EVERY == 0:
                    now = _monotonic()
                    if not deadline:
                        deadline = now + self._options.recv_time_slice
                    elif now >= deadline:
                        self._schedule_drain()  # the time slice is used up: yield
                        break
            if self._retries:
                self._retries = 0
        finally:
            if frames:
                self._wake()

    def _flush_auto_pong(self) -> None:
        """Push out a PONG libcurl queued for a PING it consumed.

        libcurl answers PINGs itself (unless ``CURLWS_RAW_MODE``, which we never set) and does
        not return them from ``curl_ws_recv``; in connect-only mode it only queues the PONG
        and writes it at its next ``curl_ws_send`` or ``curl_ws_recv`` call. On a busy
        connection the next read does that; a PING on an idle connection wakes a drain that
        yields no data message, and then this flushes: an empty ``curl_ws_send`` writes
        libcurl's queue and is then rejected (``CURLE_BAD_FUNCTION_ARGUMENT``) without
        sending a frame (libcurl 8.21; tests/test_transport_curl_fast.py checks the server
        sees the PONG). Skipped while our own frames wait: the writer's sends flush it.
        """
        if not self._outgoing and self._handle is not None:
            lib.curl_ws_send(self._handle, ffi.NULL, 0, self._nsent, 0, 0)

    def _fragment(self, flags: int, n: int, bytesleft: int) -> bool:
        """Add one piece of a message that spans frames or reads. Returns False when the
        message grew past ``max_message_size`` (the connection is failed then)."""
        size = self._parts_size + n
        if size + bytesleft > self._options.max_message_size:
            self._parts.clear()
            self._too_large(size + bytesleft)
            return False
        if not self._parts:
            self._parts_binary = bool(flags & _BINARY)
        self._parts.append(ffi.unpack(self._buf, n))
        self._parts_size = size
        if not (flags & _CONT or bytesleft):
            self._frames.append(Frame(b"".join(self._parts), self._parts_binary))
            self._parts.clear()
            self._parts_size = 0
        return True

    def _control_frame(self, n: int, bytesleft: int) -> bool:
        """Collect a control frame's payload; True once it is complete."""
        self._control.append(ffi.unpack(self._buf, n))
        return not bytesleft

    def _queue_full(self) -> bool:
        """The receive queue reached ``recv_queue_size``: pause reading (True) or fail."""
        if self._options.block_on_full_recv_queue:
            self._paused = True
            if self._reading and self._loop is not None:
                self._loop.remove_reader(self._fd)
                self._reading = False
            return True
        self._fail(
            TransportError(
                f"{self._where}: receive queue full ({self._options.recv_queue_size} "
                "messages); failing the connection rather than dropping messages "
                "(block_on_full_recv_queue is false)"
            ),
            orderly=False,
        )
        return False

    def _resume(self) -> None:
        """The actor took messages: read again (and pick up what libcurl buffered)."""
        if self._handle is None or len(self._frames) >= self._options.recv_queue_size:
            return
        self._paused = False
        if not self._reading and self._loop is not None:
            self._loop.add_reader(self._fd, self._drain)
            self._reading = True
        self._schedule_drain()

    def _too_large(self, size: int) -> None:
        self._fail(
            MessageTooLarge(
                f"{self._where}: message of {size} bytes exceeds max_message_size "
                f"({self._options.max_message_size})"
            ),
            orderly=False,
        )

    def _recv_error(self, rc: int) -> bool:
        """A ``curl_ws_recv`` error other than ``CURLE_AGAIN``. Returns True to treat it as
        "would block" (BoringSSL reports EAGAIN as ``CURLE_RECV_ERROR``; a configured retry
        pauses reading for a while), False when the connection failed."""
        message = self._curl_error_text(rc)
        if rc == _RECV_ERROR:
            lowered = message.lower()
            if "errno 11" in lowered or "resource temporarily unavailable" in lowered:
                return True
        retry = self._options.retry
        if retry.enabled and rc == _RECV_ERROR and self._retries < retry.count:
            self._retries += 1
            self._paused = True
            if self._reading and self._loop is not None:
                self._loop.remove_reader(self._fd)
                self._reading = False
            delay = retry.delay * 2 ** (self._retries - 1)
            assert self._loop is not None
            self._loop.call_later(delay, self._resume)
            return True
        if rc in _LOST:
            # EOF, reset, or the connection died under us: no close frame, so 1006.
            self._fail(ConnectionClosed(1006, message), orderly=False)
        else:
            self._fail(TransportError(f"{self._where}: websocket error: {message}"), False)
        return False

    def _curl_error_text(self, rc: int) -> str:
        detail = ""
        curl = self._curl
        if curl is not None:
            with contextlib.suppress(Exception):
                detail = ffi.string(curl._error_buffer).decode(errors="replace")
        text = f"curl: ({rc}) {detail}".rstrip()
        return curl_message(CurlError(text, rc))

    def _peer_closed(self, payload: bytes) -> None:
        """The peer's close frame: answer it (RFC 6455), report its code and reason after
        the messages that preceded it."""
        self._control.clear()
        if len(payload) >= 2:
            code = int.from_bytes(payload[:2], "big")
            reason = payload[2:].decode("utf-8", "replace")
        else:
            code, reason = 1005, ""
        if not self._close_sent:
            self._send_close(code if code not in (1005, 1006, 1015) else 1000, "")
        self._fail(ConnectionClosed(code, reason), orderly=True)

    # --- send --------------------------------------------------------------------------------

    async def send(self, data: bytes | str) -> None:
        """Send one text frame (bytes are sent as text too); never merged with other frames.

        Written at once when the socket takes it; otherwise queued (FIFO, at most
        ``send_queue_size`` frames: a full queue makes the caller wait) and written when the
        socket becomes writable. Returns once the frame is written or queued."""
        payload = data.encode() if isinstance(data, str) else bytes(data)
        await self._send_frame(payload, _TEXT)

    async def ping(self, payload: bytes = b"") -> None:
        """Send a ping control frame; the answer sets :attr:`last_pong`.

        Raises:
            ValueError: the payload exceeds 125 bytes (RFC 6455 limit for control frames).
        """
        if len(payload) > PING_MAX:
            raise ValueError(f"ping payload is {len(payload)} bytes, limit {PING_MAX}")
        await self._send_frame(bytes(payload), _PING)

    async def _send_frame(self, payload: bytes, flags: int) -> None:
        self._check_open()
        outgoing = self._outgoing
        if not outgoing:
            entry = _Outgoing(payload, flags)
            if self._write(entry):
                return
            outgoing.append(entry)
            self._start_writer()
            return
        while len(outgoing) >= self._options.send_queue_size:
            assert self._loop is not None
            room = self._loop.create_future()
            self._room.append(room)
            await room
            self._check_open()
        outgoing.append(_Outgoing(payload, flags))
        self._start_writer()

    def _check_open(self) -> None:
        if self._error is not None:
            raise self._error
        if self._handle is None or self._state is not TransportState.OPEN or self._closing:
            raise TransportError(f"{self._where}: transport is not open ({self._state.value})")

    def _write(self, entry: _Outgoing) -> bool:
        """Write as much of ``entry`` as the socket takes: True when the whole frame went
        out, False when the rest must wait for the socket. Raises the connection's error
        (after failing it) on a send error."""
        payload = entry.payload
        total = len(payload)
        while True:
            view = ffi.from_buffer(payload)
            rc = lib.curl_ws_send(
                self._handle, view + entry.offset, total - entry.offset, self._nsent, 0, entry.flags
            )
            if rc == _AGAIN:
                return False  # nothing taken: retry the same bytes when writable
            if rc:
                message = self._curl_error_text(rc)
                error: TransportError = (
                    ConnectionClosed(1006, message)
                    if rc in _LOST
                    else TransportError(f"{self._where}: websocket send error: {message}")
                )
                self._fail(error, orderly=False)
                raise error
            sent = self._nsent[0]
            entry.offset += sent
            if entry.offset >= total:
                return True
            if sent == 0:
                return False

    def _start_writer(self) -> None:
        if not self._writing and self._loop is not None and self._handle is not None:
            self._loop.add_writer(self._fd, self._flush)
            self._writing = True

    def _stop_writer(self) -> None:
        if self._writing and self._loop is not None:
            self._loop.remove_writer(self._fd)
            self._writing = False

    def _flush(self) -> None:
        """Writer callback: write queued frames, at most ``max_send_batch_size`` of them or
        ``send_time_slice`` seconds per call (the loop calls again while the socket stays
        writable and frames are left)."""
        options = self._options
        assert self._loop is not None
        deadline = self._loop.time() + options.send_time_slice
        outgoing = self._outgoing
        written = 0
        while outgoing and self._handle is not None:
            try:
                if not self._write(outgoing[0]):
                    return  # socket full: stay registered
            except TransportError:
                return  # _write failed the connection
            outgoing.popleft()
            room = self._room
            while room and len(outgoing) < options.send_queue_size:
                waiter = room.popleft()
                if not waiter.done():
                    waiter.set_result(None)
            written += 1
            if written >= options.max_send_batch_size or self._loop.time() >= deadline:
                return
        self._stop_writer()

    def _send_close(self, code: int, reason: str) -> None:
        """Best effort, non-blocking: the closing handshake must never hold up a teardown."""
        self._close_sent = True
        if self._handle is None:
            return
        payload = code.to_bytes(2, "big") + reason.encode()[:123]
        with contextlib.suppress(Exception):
            lib.curl_ws_send(
                self._handle, ffi.from_buffer(payload), len(payload), self._nsent, 0, _CLOSE
            )

    # --- failure and close -------------------------------------------------------------------

    def _fail(self, error: TransportError, orderly: bool) -> None:
        """The connection is dead: keep the first error, release the handle, wake the reader.

        ``orderly`` (a peer close) keeps the messages received before it; otherwise they are
        kept only with ``drain_on_error``."""
        if self._error is None:
            self._error = error
        self._state = TransportState.CLOSED
        if not orderly and not self._options.drain_on_error:
            self._frames.clear()
        self._release()
        self._wake()
        closed = self._closed_by_peer
        if closed is not None and not closed.done():
            closed.set_result(None)

    def _release(self) -> None:
        """Unregister the socket and close the curl handle (and with it the socket)."""
        loop = self._loop
        if loop is not None and self._fd >= 0 and not loop.is_closed():
            if self._reading:
                loop.remove_reader(self._fd)
            if self._writing:
                loop.remove_writer(self._fd)
        self._reading = self._writing = False
        self._paused = False
        self._outgoing.clear()
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
        while self._room:
            waiter = self._room.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the sender re-checks and raises the error
        self._handle = None
        curl, self._curl = self._curl, None
        if curl is not None:
            with contextlib.suppress(Exception):
                curl.close()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame (if the connection is still up), wait at most
        :data:`~streamkit.transport.curl_common.CLOSE_TIMEOUT` for the peer's answer, then
        release the socket and the curl handle. Idempotent; completes the release even if
        cancelled."""
        if self._closing:
            return
        self._closing = True
        try:
            if self._handle is not None and self._error is None and self._loop is not None:
                self._closed_by_peer = self._loop.create_future()
                self._send_close(code, reason)
                # Whatever arrives from now on is not wanted: make room so the reader can
                # see the peer's close frame even if the receive queue was full.
                self._frames.clear()
                if self._paused:
                    self._resume()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._closed_by_peer), CLOSE_TIMEOUT)
        finally:
            self._frames.clear()
            self._fail(ConnectionClosed(code, reason), orderly=True)

    def __repr__(self) -> str:
        return f"LibcurlTransport({self._where!r}, state={self._state.value})"
