"""Typed transport options (the ``transport:`` block of a feed's config).

Every knob of curl_cffi's ``AsyncWebSocket`` is here with its default pinned explicitly:
curl_cffi changed several of them between releases, and a market-data process must not change
behaviour because a dependency was upgraded.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec


class RetryOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Receive retries inside one connection (curl_cffi ``WebSocketRetryStrategy``).

    Off by default: streamkit treats any receive error as a dead connection and lets the
    actor reconnect and resync, which is safer for books than retrying a half-read stream.
    """

    enabled: bool = False
    delay: Annotated[float, msgspec.Meta(ge=0)] = 0.3
    count: Annotated[int, msgspec.Meta(ge=0)] = 3


class TransportOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How one WebSocket connection is opened and driven.

    kind: ``curl`` (the default: streamkit's own read loop on a libcurl connection,
        :class:`~streamkit.transport.libcurl.LibcurlTransport`), ``curl_cffi`` (curl_cffi's
        ``AsyncWebSocket`` over libcurl, the previous default, kept as an option and as the
        benchmark baseline) or ``memory`` (in-process, for tests).
        Every option below applies to both libcurl kinds except ``coalesce_frames``.
        One difference the venue can see: libcurl answers a server's PING itself but only
        writes the PONG at the connection's next send or read call. ``curl`` flushes it
        when the PING arrives; ``curl_cffi`` leaves it until the client next sends (or
        the next message arrives), so on a quiet connection the client does not write to,
        a venue that drops clients which do not answer its pings may drop it.
    connect_timeout: seconds for TCP + TLS + HTTP upgrade.
    recv_queue_size / send_queue_size: messages buffered between the socket and the actor.
    max_send_batch_size: frames written per send batch.
    coalesce_frames: merge queued data frames into one write (``curl_cffi`` kind only).
        streamkit never coalesces control or subscription frames (it sends those with
        coalescing bypassed); ``kind: curl`` writes one frame per send, always.
    recv_time_slice / send_time_slice: seconds the reader/writer may run before yielding to
        the event loop, so one busy connection cannot starve the others.
    max_message_size: a larger message kills the connection (``MessageTooLarge``).
    drain_on_error: deliver messages already buffered before reporting a transport error.
    block_on_full_recv_queue: when the actor falls behind, True pauses reading (TCP
        backpressure; the exchange may drop us), False fails the connection at once. Either
        way it is a deliberate choice, never a silent drop.
    retry: receive retries (see :class:`RetryOptions`).
    headers: extra HTTP headers for the upgrade request.
    proxy: ``http://``, ``https://`` or ``socks5://`` proxy URL.
    impersonate: browser fingerprint for curl_cffi (``chrome``, ``safari``, ...).
    verify: verify the server's TLS certificate (on by default; turning it off is logged as a
        warning at startup).
    ca_file: PEM bundle to verify against instead of certifi's.
    """

    kind: Literal["curl", "curl_cffi", "memory"] = "curl"
    connect_timeout: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    recv_queue_size: Annotated[int, msgspec.Meta(ge=1)] = 128
    send_queue_size: Annotated[int, msgspec.Meta(ge=1)] = 128
    max_send_batch_size: Annotated[int, msgspec.Meta(ge=1)] = 64
    coalesce_frames: bool = False
    recv_time_slice: Annotated[float, msgspec.Meta(gt=0)] = 0.01
    send_time_slice: Annotated[float, msgspec.Meta(gt=0)] = 0.005
    max_message_size: Annotated[int, msgspec.Meta(ge=1024)] = 4 * 1024 * 1024
    drain_on_error: bool = False
    block_on_full_recv_queue: bool = True
    retry: RetryOptions = RetryOptions()
    headers: dict[str, str] = {}
    proxy: str | None = None
    impersonate: str | None = None
    verify: bool = True
    ca_file: str | None = None

    def __repr__(self) -> str:
        """Like the default repr, but header values and proxy credentials are redacted: they
        carry API keys and passwords, and configs end up in logs and error messages."""
        fields: list[str] = []
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if name == "headers":
                value = dict.fromkeys(value, REDACTED)
            elif name == "proxy" and value is not None:
                value = _redact_userinfo(value)
            fields.append(f"{name}={value!r}")
        return f"TransportOptions({', '.join(fields)})"


REDACTED: Final = "<redacted>"


def _redact_userinfo(url: str) -> str:
    """``scheme://user:pass@host`` -> ``scheme://<redacted>@host``."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        return f"{scheme}://{REDACTED}@{rest.split('@', 1)[1]}"
    return url
