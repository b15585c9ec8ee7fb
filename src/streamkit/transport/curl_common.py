"""What streamkit's two libcurl transports share: handshake slots, upgrade-response capture,
``Retry-After`` parsing, error text and the background-task registry.

Both :class:`~streamkit.transport.curl.CurlTransport` (curl_cffi ``AsyncWebSocket``) and
:class:`~streamkit.transport.libcurl.LibcurlTransport` (streamkit's own read loop) run the
blocking ``curl_easy_perform`` of the upgrade in the loop's default thread pool, so they share
one cap on concurrent handshakes (:func:`set_max_concurrent_connects`).
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import re
import time
import weakref
from collections.abc import Coroutine
from datetime import UTC
from typing import Any, Final, cast
from urllib.parse import urlsplit

from curl_cffi import CurlECode, CurlError

from streamkit.errors import ConnectError
from streamkit.transport.options import TransportOptions

__all__ = [
    "CLOSE_TIMEOUT",
    "PING_MAX",
    "UpgradeResponse",
    "connect_error",
    "curl_message",
    "handshake_slots",
    "in_background",
    "parse_retry_after",
    "redact",
    "set_max_concurrent_connects",
    "verify_arg",
]

#: Seconds ``close()`` may spend on the closing handshake before it tears the connection
#: down regardless.
CLOSE_TIMEOUT: Final = 2.0

#: RFC 6455 5.5: control frame payloads are at most 125 bytes.
PING_MAX: Final = 125

_DEFAULT_MAX_CONCURRENT_CONNECTS: Final = 8
_max_concurrent_connects = _DEFAULT_MAX_CONCURRENT_CONNECTS
# One semaphore per event loop: each loop has its own default executor (the thing the cap
# protects), and an asyncio.Semaphore must not be shared between loops.
_handshake_slots_by_loop: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, asyncio.Semaphore
] = weakref.WeakKeyDictionary()
# Strong references to background clean-up tasks (the loop only keeps weak ones).
_background: set[asyncio.Task[None]] = set()

_REFUSED_RE: Final = re.compile(r"Refused WebSocket upgrade: (\d{3})")


def set_max_concurrent_connects(n: int) -> None:
    """Cap the number of WebSocket handshakes running at once (default 8), for both libcurl
    transports together.

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


def handshake_slots() -> asyncio.Semaphore:
    """The running loop's handshake semaphore (created on first use)."""
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


class UpgradeResponse:
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


def curl_message(exc: BaseException) -> str:
    """An exception's text without curl_cffi's boilerplate link to the libcurl error docs."""
    text = str(exc) or type(exc).__name__
    return text.split(" See https://curl.se/", 1)[0].rstrip(" .")


def redact(url: str) -> str:
    """``url`` without userinfo, query and fragment, which may carry credentials/listen keys."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
    except ValueError:
        return "<invalid url>"
    return f"{parts.scheme}://{host}{parts.path}"


def verify_arg(options: TransportOptions) -> bool:
    """curl_cffi's ``verify``: False, True (curl_cffi's default bundle, certifi) or, when
    ``ca_file`` is set, that path. curl_cffi treats a string ``verify`` as a CA bundle
    (CURLOPT_CAINFO and PROXY_CAINFO) but its signature says ``bool | None``, hence the cast."""
    if options.verify and options.ca_file is not None:
        return cast(bool, options.ca_file)
    return options.verify


def connect_error(where: str, exc: BaseException, response: UpgradeResponse) -> ConnectError:
    """The :class:`ConnectError` for a failed handshake: the refused status (and
    ``Retry-After`` for 429/503) when the server answered, else libcurl's diagnosis."""
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
        message = f"{where}: server refused the WebSocket upgrade with HTTP {status}"
        if retry_after is not None:
            message += f" (Retry-After: {retry_after:g}s)"
        return ConnectError(message, status=status, retry_after=retry_after)
    if isinstance(exc, CurlError) and exc.code == CurlECode.OPERATION_TIMEDOUT:
        return ConnectError(f"{where}: connect timed out: {curl_message(exc)}")
    if isinstance(exc, CurlError) and exc.code in _TLS_VERIFY_FAILED:
        return ConnectError(
            f"{where}: TLS certificate verification failed: {curl_message(exc)} (to trust a "
            "private CA, set transport.ca_file to its PEM bundle)"
        )
    return ConnectError(f"{where}: connect failed: {curl_message(exc)}")


# The server's certificate did not verify, or the configured CA bundle is unusable.
_TLS_VERIFY_FAILED: Final = frozenset(
    {CurlECode.PEER_FAILED_VERIFICATION, CurlECode.SSL_CACERT_BADFILE}
)


def in_background(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """Run ``coro`` as a task that is kept alive until it finishes (clean-up work)."""
    task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)
    return task
