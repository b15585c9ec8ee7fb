"""The Feed plugin API.

A feed is pure protocol logic (no I/O): the connection actor moves bytes, the feed turns them
into records and tells the actor what to do next. Two classes make a plugin:

- :class:`Feed` (one per configured feed): declares the exchange id, channels, URLs, limits and
  heartbeat policy, maps symbols both ways, and shards the subscriptions over connections.
- :class:`FeedProtocol` (one per connection *attempt*): the sans-I/O state of one connection.
  ``on_message`` decodes a frame, appending records to ``out.records`` and requests for the
  actor (:class:`HttpGet`, :class:`Send`, :class:`Reconnect`, ...) to ``out.actions``. A new
  protocol object is made for every reconnect, so no state survives a broken connection.
  The actor hands it frames a batch at a time (``on_frames``, which calls ``on_message``
  for each unless a plugin gives a cheaper loop for its hot path).

Plugins are found through the ``streamkit.feeds`` entry-point group (see :mod:`streamkit.plugins`).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from streamkit.model import Record

if TYPE_CHECKING:
    from streamkit.config import FeedConfig
    from streamkit.transport.base import Frame


class DecodeError(ValueError):
    """A frame could not be understood. The actor counts it, logs one sample, publishes a
    ``decode_error`` status record and goes on with the next frame."""


DecodeFailed = Callable[[bytes, Exception, "Output"], None]
"""``failed(data, exc, out)``: how :meth:`FeedProtocol.on_frames` reports a frame whose
decoding raised (the actor counts it and appends a ``decode_error`` status record)."""


@dataclass(frozen=True)
class Limits:
    """What the exchange allows; the runtime shards and paces to stay inside it.

    max_streams_per_connection: subscriptions one connection may carry.
    max_streams_per_message: subscriptions one subscribe message may carry.
    max_messages_per_second: messages the client may send per connection.
    max_connects: connection attempts allowed per ``connect_window`` seconds (per process).
    max_connection_age: the venue drops connections after this many seconds; the actor
        reconnects shortly before (None: no such limit).
    """

    max_streams_per_connection: int = 100
    max_streams_per_message: int = 50
    max_messages_per_second: float = 5.0
    max_connects: int = 300
    connect_window: float = 300.0
    max_connection_age: float | None = None

    def __post_init__(self) -> None:
        # Refused here, where the plugin declares them: at run time a zero rate or count
        # divides by zero or spins in Pacer, ConnectLimiter and plan() on every connect.
        for name in (
            "max_streams_per_connection",
            "max_streams_per_message",
            "max_messages_per_second",
            "max_connects",
            "connect_window",
            "max_connection_age",
        ):
            value = getattr(self, name)
            if value is not None and not value > 0:  # `not >` also refuses NaN
                raise ValueError(f"Limits.{name} must be > 0, got {value!r}")


@dataclass(frozen=True)
class Heartbeat:
    """Client-side keepalive.

    interval: seconds between client heartbeats (None: the client sends none, e.g. when the
        server pings and libcurl answers its pings).
    payload: application-level heartbeat to send as a text message (``b"ping"``); None sends a
        WebSocket ping frame. The protocol's ``on_message`` reports the answer by setting
        ``out.pong = True``; no answer within the feed's ``pong_timeout`` kills the connection.
    """

    interval: float | None = None
    payload: bytes | None = None


@dataclass(frozen=True)
class Stream:
    """One subscription: a normalized (channel, symbol) and the exchange's name for it."""

    channel: str
    symbol: str
    name: str


@dataclass(frozen=True)
class ConnectionPlan:
    """The streams one connection carries. ``index`` numbers connections within a feed."""

    index: int
    streams: tuple[Stream, ...]


@dataclass(frozen=True)
class SubscribeRequest:
    """One subscribe message. ``key`` is what the exchange echoes in its ack (a request id);
    the actor's ledger marks ``streams`` confirmed when ``out.acks`` contains ``key``."""

    key: str
    streams: tuple[Stream, ...]
    payload: bytes


# --- actions a protocol asks of its actor --------------------------------------------------


@dataclass(frozen=True)
class HttpGet:
    """Fetch ``url``; the actor calls ``protocol.on_http(request, status, body, recv_ts, out)``
    with the answer (status 0 and an empty body when the request failed).

    ``delay`` (seconds) postpones the fetch: a protocol polls a REST-only endpoint by asking
    again, with a delay, from each answer. The request belongs to the connection: it is
    dropped when the connection ends, so polling stops and restarts with the connection."""

    url: str
    tag: str = ""
    delay: float = 0.0


@dataclass(frozen=True)
class Send:
    """Send a text message now (e.g. answering a server's test request)."""

    payload: bytes


@dataclass(frozen=True)
class Reconnect:
    """Drop this connection and reconnect (e.g. the server announced a shutdown).

    ``immediate``: reconnect without backoff, when the connection had been healthy for a
    while (one that asks to reconnect right after connecting always backs off, so a
    misbehaving venue cannot cause a reconnect loop); False: the usual backoff.
    """

    reason: str
    immediate: bool = True


@dataclass(frozen=True)
class ResyncBook:
    """A symbol's book failed verification: the actor calls ``protocol.resync(symbol)`` and
    performs the actions it returns (resubscribe that symbol, fetch a snapshot, or
    reconnect: the default)."""

    symbol: str
    reason: str


Action = HttpGet | Send | Reconnect | ResyncBook


@dataclass(slots=True)
class Output:
    """What decoding produced. The actor reuses one Output per batch of frames."""

    records: list[Record] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    acks: list[str] = field(default_factory=list)
    rejects: list[tuple[str, str]] = field(default_factory=list)
    pong: bool = False

    def clear(self) -> None:
        self.records.clear()
        self.actions.clear()
        self.acks.clear()
        self.rejects.clear()
        self.pong = False


class FeedProtocol(abc.ABC):
    """The sans-I/O state of one connection attempt. Subclass per exchange."""

    def __init__(self, feed: Feed, plan: ConnectionPlan, connection: str) -> None:
        self.feed = feed
        self.plan = plan
        self.connection = connection
        """Name of the connection (``<feed label>/<index>``) for status records and logs."""

    @property
    def exchange(self) -> str:
        return self.feed.id

    @abc.abstractmethod
    def url(self) -> str:
        """The WebSocket URL to connect to."""

    @abc.abstractmethod
    def subscriptions(self) -> list[SubscribeRequest]:
        """Every subscribe message for this connection, in order. Called once per connection;
        the actor paces them within ``feed.limits``."""

    def on_connected(self, recv_ts: int, out: Output) -> None:  # noqa: B027 - optional hook
        """Called once the WebSocket is open, before any subscription is sent."""

    @abc.abstractmethod
    def on_message(self, data: bytes, recv_ts: int, out: Output) -> bool:
        """Decode one frame into ``out``. Returns True when the frame carried market data
        (this is what keeps the staleness watchdog quiet; heartbeats and acks return False).
        Raises :class:`DecodeError` (or msgspec's errors) for a frame it cannot understand.
        Must not block and must not do I/O."""

    def on_frames(
        self, frames: Sequence[Frame], recv_ts: int, out: Output, failed: DecodeFailed
    ) -> bool:
        """Decode a batch of frames, in order, into ``out``: what the actor calls. Returns
        True when any frame carried market data. A frame whose decoding raises goes to
        ``failed(data, exc, out)`` and the batch goes on with the next one.

        The default calls :meth:`on_message` for each frame. A plugin may override it with a
        cheaper loop for its hot path (one call per batch instead of one per frame), never
        with different results: every frame must leave ``out`` exactly as ``on_message``
        would have, and ``failed`` be called where ``on_message`` would have raised."""
        on_message = self.on_message
        saw_data = False
        for frame in frames:
            data = frame[0]
            try:
                if on_message(data, recv_ts, out):
                    saw_data = True
            except Exception as exc:
                failed(data, exc, out)
        return saw_data

    def on_http(  # noqa: B027 - optional hook
        self, request: HttpGet, status: int, body: bytes, recv_ts: int, out: Output
    ) -> None:
        """The answer to an :class:`HttpGet` this protocol asked for."""

    def resync(self, symbol: str, reason: str) -> list[Action]:
        """How to resynchronise one symbol's book after a verification failure. The default
        reconnects (always correct, but it disturbs every stream of the connection); plugins
        whose venue allows it resubscribe just that symbol (return :class:`Send` actions)."""
        return [Reconnect(f"book resync for {symbol}: {reason}")]

    def heartbeat_payload(self) -> bytes | None:
        """The application-level heartbeat to send (default: the feed's ``Heartbeat.payload``)."""
        return self.feed.heartbeat.payload


class Feed(abc.ABC):
    """Base class of exchange plugins. Subclass it, set the class attributes, implement
    ``exchange_symbol``/``normalize_symbol``/``stream_name``/``protocol``, and register the
    class under the ``streamkit.feeds`` entry-point group.
    """

    id: ClassVar[str]
    """Exchange id used in configs (``binance``)."""
    channels: ClassVar[frozenset[str]]
    """Normalized channel names this plugin supports."""
    default_url: ClassVar[str]
    default_rest_url: ClassVar[str | None] = None
    limits: ClassVar[Limits] = Limits()
    heartbeat: ClassVar[Heartbeat] = Heartbeat()

    def __init__(self, config: FeedConfig, *, url: str | None = None, rest_url: str | None = None):
        self.config = config
        self.url = url or config.url or self.default_url
        self.rest_url = rest_url or config.rest_url or self.default_rest_url
        self.label = config.label

    # --- symbols ---------------------------------------------------------------------------

    @abc.abstractmethod
    def exchange_symbol(self, symbol: str) -> str:
        """Normalized symbol (``BTC-USDT``) -> the exchange's (``BTCUSDT``). Raises ValueError
        for a symbol this venue cannot have."""

    @abc.abstractmethod
    def normalize_symbol(self, exchange_symbol: str) -> str:
        """The exchange's symbol -> normalized; the exact inverse of :meth:`exchange_symbol`."""

    @abc.abstractmethod
    def stream_name(self, channel: str, symbol: str) -> str:
        """The exchange's subscription name for a normalized channel and symbol."""

    # --- planning --------------------------------------------------------------------------

    def streams(self) -> list[Stream]:
        """Every (channel, symbol) subscription the config asks for, symbol-major so that one
        symbol's channels land on the same connection."""
        return [
            Stream(channel, symbol, self.stream_name(channel, symbol))
            for symbol in self.config.symbols
            for channel in self.config.channels
        ]

    def plan(self) -> list[ConnectionPlan]:
        """Shard the streams over connections, evenly, never splitting one symbol's channels
        across connections when they fit on one (that may take one more connection than the
        bare stream count would), and otherwise over as few connections as the limit allows."""
        streams = self.streams()
        if not streams:
            return []
        per_conn = self.limits.max_streams_per_connection
        per_symbol = len(self.config.channels)
        if per_symbol <= per_conn:
            # Shard by whole symbols (streams() is symbol-major). Rounding a stream-count
            # shard up to whole symbols could exceed the limit, and then split symbols.
            symbols = math.ceil(len(streams) / per_symbol)
            n = math.ceil(symbols / (per_conn // per_symbol))
            size = math.ceil(symbols / n) * per_symbol
        else:
            n = math.ceil(len(streams) / per_conn)
            size = math.ceil(len(streams) / n)
        return [
            ConnectionPlan(i, tuple(streams[start : start + size]))
            for i, start in enumerate(range(0, len(streams), size))
        ]

    @abc.abstractmethod
    def protocol(self, plan: ConnectionPlan, connection: str) -> FeedProtocol:
        """A fresh protocol state for one connection attempt."""

    def check(self) -> list[tuple[str, str]]:
        """Problems with the config for this plugin as ``(key, message)`` pairs (unknown
        channels, impossible symbols). The key is relative to the feed's config entry."""
        problems: list[tuple[str, str]] = []
        for i, channel in enumerate(self.config.channels):
            if channel not in self.channels:
                problems.append(
                    (
                        f"channels[{i}]",
                        f"{self.id} has no channel {channel!r} "
                        f"(it has: {', '.join(sorted(self.channels))})",
                    )
                )
        for i, symbol in enumerate(self.config.symbols):
            try:
                self.exchange_symbol(symbol)
            except ValueError as exc:
                problems.append((f"symbols[{i}]", str(exc)))
        return problems


def chunked(items: Sequence[Stream], size: int) -> list[tuple[Stream, ...]]:
    """Split streams into tuples of at most ``size`` (for per-message subscription limits)."""
    return [tuple(items[i : i + size]) for i in range(0, len(items), size)]
