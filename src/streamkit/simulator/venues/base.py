"""What a venue adapter is, what it may do to a connection, and the captured frames it replays.

A venue adapter (one module per exchange in this package) knows only its protocol: which
WebSocket paths it serves, how subscribe/unsubscribe/ping messages look and what it answers,
its heartbeats, which captured frames answer which subscription, and its REST endpoints where
its book sync needs them. Everything else is shared by every venue: the outbound queues and
the replay loop live in :mod:`streamkit.simulator.venue_server`, and what every simulator
(Binance spot's included) shares, the aiohttp server, connection bookkeeping, pacing, faults,
stats and the ``/_sim/*`` control endpoints, in :mod:`streamkit.simulator.core`.

Replay model: a subscription to a topic with captured frames gets its own *cursor* over a
:class:`ReplaySource`, starting at the first captured frame (a book's snapshot), so every
subscriber sees a snapshot first, exactly as the venue sends one after subscribing. Frames are
sent byte-exact; to run indefinitely a source loops (snapshot, then its updates, again),
shifting only the integer id fields the venue's sequence rules need to stay monotonic.
Venues whose book sync uses a REST snapshot (Binance USD-M) instead keep one shared,
authoritative stream per symbol and deliver through :meth:`Session.deliver`.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias

from streamkit.simulator.frames import FrameTemplate

if TYPE_CHECKING:
    from aiohttp import web

BookKind: TypeAlias = Literal["snapshot", "update"]
"""How a frame relates to an order book: a full image, or an incremental update. Only
``update`` frames are subject to the ``gap`` / ``duplicate`` / ``bad_checksum`` faults."""

_CHECKSUM_FIELD = re.compile(r'"checksum":(-?\d+)')


def load_rows(name: str) -> tuple[dict[str, Any], ...]:
    """The records of the packaged capture ``data/<name>.jsonl`` (read once, in file order)."""
    return _load_rows(name)


@functools.cache
def _load_rows(name: str) -> tuple[dict[str, Any], ...]:
    path = resources.files("streamkit.simulator").joinpath("data", f"{name}.jsonl")
    text = path.read_text(encoding="utf-8")
    return tuple(json.loads(line) for line in text.splitlines() if line.strip())


def connection_id_hex(length: int = 8) -> str:
    """A random lowercase hex connection id, as OKX/Bybit put in their replies."""
    return secrets.token_hex((length + 1) // 2)[:length]


def shift_checksum(frame: str, *, signed: bool) -> str | None:
    """``frame`` with its ``"checksum":N`` replaced by another valid 32-bit value (N + 1,
    wrapped); None when the frame has no integer checksum. Levels are left untouched."""
    match = _CHECKSUM_FIELD.search(frame)
    if match is None:
        return None
    value = (int(match.group(1)) + 1) & 0xFFFFFFFF
    if signed and value >= 1 << 31:
        value -= 1 << 32
    return frame[: match.start(1)] + str(value) + frame[match.end(1) :]


def loop_position(step: int, size: int, loop_from: int) -> tuple[int, int]:
    """``(loop, index)`` of replay step ``step`` over ``size`` frames: steps below ``size``
    play every frame once (loop 0); later steps repeat frames ``loop_from..size-1`` in loops
    1, 2, ..."""
    if step < size:
        return 0, step
    later, offset = divmod(step - size, size - loop_from)
    return later + 1, loop_from + offset


class ReplaySource:
    """The captured frames answering one subscription topic, in file order, played in loops.

    Step ``i`` is frame ``i % n`` of loop ``i // n`` (with the default ``loop_from``). Loop 0
    is byte-exact. From loop 1 on, each field of ``id_groups`` moves on by its group's span
    (max - min + 1 over the looped frames) per loop, so the ids keep increasing and the
    venue's chain rules hold within each loop (a loop restarts with the source's snapshot,
    which resets a client's book). Fields
    missing from a frame (e.g. Deribit's first ``prev_change_id``) are simply not rendered.

    ``book_kinds[i]`` says whether frame ``i`` is a book snapshot, a book update or neither.

    ``loop_from`` (default 0): loops after the first replay only frames ``loop_from..n-1``,
    and the id spans are taken over those frames, so ids continue without a hole from one
    loop to the next. Venues that send a book snapshot only once per subscription (Bybit)
    use ``loop_from=1``: their deltas carry absolute sizes, so replaying them again keeps a
    client's book valid while the update-id chain goes on (a ``gap`` fault is then visible).
    """

    __slots__ = ("_shifts", "_templates", "book_kinds", "key", "loop_from", "symbol", "texts")

    def __init__(
        self,
        key: str,
        symbol: str,
        frames: Sequence[str],
        book_kinds: Sequence[BookKind | None] | None = None,
        id_groups: Sequence[Sequence[str]] = (),
        loop_from: int = 0,
    ) -> None:
        if not frames:
            raise ValueError(f"replay source {key!r} has no frames")
        if not 0 <= loop_from < len(frames):
            raise ValueError(f"replay source {key!r}: loop_from must index one of its frames")
        self.loop_from = loop_from
        self.key = key
        self.symbol = symbol
        self.texts = tuple(frames)
        self.book_kinds: tuple[BookKind | None, ...] = tuple(
            book_kinds if book_kinds is not None else [None] * len(frames)
        )
        fields = [f for group in id_groups for f in group]
        self._templates = tuple(
            FrameTemplate(text, [f for f in fields if re.search(rf'"{f}":-?\d', text)])
            for text in self.texts
        )
        self._shifts: dict[str, int] = {}
        for group in id_groups:
            looped = self._templates[loop_from:]
            values = [t.values[f] for t in looped for f in group if f in t.values]
            if values:
                span = max(values) - min(values) + 1
                self._shifts.update((f, span) for f in group)

    def __len__(self) -> int:
        return len(self.texts)

    def frame(self, step: int) -> tuple[str, BookKind | None]:
        """The text of step ``step`` and its book kind."""
        loop, index = loop_position(step, len(self.texts), self.loop_from)
        kind = self.book_kinds[index]
        if loop == 0 or not self._shifts:
            return self.texts[index], kind
        template = self._templates[index]
        changes = {
            f: value + loop * self._shifts[f]
            for f, value in template.values.items()
            if f in self._shifts
        }
        return template.render(changes), kind


@dataclass(frozen=True, slots=True)
class Relabel:
    """A literal substitution applied to every frame of one subscription (e.g. Deribit's
    ``"channel":"book.X.raw"`` -> ``"book.X.100ms"`` when the client asked for ``100ms``).
    Never used on book levels or checksums."""

    old: str
    new: str


class Session(Protocol):
    """What an adapter may do with one client connection (implemented by the server)."""

    @property
    def id(self) -> int: ...

    @property
    def path(self) -> str:
        """The request path the client connected to (e.g. ``/v5/public/spot``)."""
        ...

    @property
    def query(self) -> Mapping[str, str]: ...

    @property
    def state(self) -> dict[str, Any]:
        """Scratch space owned by the adapter (per connection)."""
        ...

    def send(self, frame: str | bytes) -> None:
        """Queue a reply/data frame in order with data (held back during a ``stall``)."""
        ...

    def send_control(self, frame: str | bytes) -> None:
        """Send a heartbeat/pong frame ahead of queued data, even during a ``stall``."""
        ...

    def deliver(self, frame: str | bytes, book: BookKind | None, symbol: str) -> None:
        """Queue a data frame produced outside this connection (shared streams); book
        updates go through the pending ``gap`` / ``duplicate`` / ``bad_checksum`` faults."""
        ...

    def subscribe(self, key: str, relabel: Relabel | None = None) -> bool:
        """Start replaying the catalog source ``key`` to this client from its first frame.
        False if already subscribed. A key without a source is recorded but stays silent."""
        ...

    def unsubscribe(self, key: str) -> bool:
        """Stop replaying ``key``; False if it was not subscribed."""
        ...

    def is_subscribed(self, key: str) -> bool: ...

    @property
    def subscriptions(self) -> Sequence[str]:
        """Subscribed keys, in subscription order."""
        ...

    def close(self, code: int, reason: str = "") -> None:
        """Start a closing handshake (idempotent)."""
        ...

    async def ws_ping(self, payload: bytes) -> None:
        """Send a WebSocket PING control frame."""
        ...

    def seconds_since_outbound(self) -> float:
        """Seconds since the last frame was written to the client."""
        ...

    def seconds_since_inbound(self) -> float:
        """Seconds since the last frame was read from the client."""
        ...


class VenueSimulatorHandle(Protocol):
    """What an adapter may see of the whole simulator (for shared streams and REST)."""

    @property
    def rate(self) -> float: ...

    @property
    def replay_once(self) -> bool: ...

    @property
    def time_scale(self) -> float: ...


class VenueAdapter:
    """Base class of the per-venue protocol adapters. Subclasses set the class attributes
    and implement :meth:`on_text`; every other hook has a do-nothing default.

    Time constants a venue defines (heartbeat periods, idle timeouts, subscribe deadlines)
    are multiplied by ``time_scale`` so tests can run the real protocol faster.
    """

    exchange: str = ""
    """The streamkit exchange id (``okx``, ``kraken``, ...)."""
    ws_path: str = "/"
    """The path of :attr:`~streamkit.simulator.venue_server.VenueSimulator.ws_url`."""
    ws_paths: tuple[str, ...] = ()
    """Every WebSocket path served (``ws_path`` included automatically)."""
    has_checksum: bool = False
    """Whether book updates carry a checksum (``bad_checksum`` is refused otherwise)."""
    max_incoming_per_second: int | None = None
    """Client frames per second before the venue closes the connection (None: no limit)."""
    observes_data: bool = False
    """Whether :meth:`on_data` wants to see every replayed data frame."""

    def __init__(self, *, time_scale: float = 1.0) -> None:
        self.time_scale = time_scale
        self.sources: dict[str, ReplaySource] = {}
        """Catalog: subscription key -> its captured frames."""

    # -- hooks -----------------------------------------------------------------------------

    def on_open(self, session: Session) -> None:
        """Called once the WebSocket is open (welcome / status messages)."""

    def on_text(self, session: Session, text: str) -> None:
        """Handle one text frame from the client."""
        raise NotImplementedError

    def on_data(self, session: Session, symbol: str, frame: str) -> None:
        """Called for every replayed frame queued to ``session`` (if :attr:`observes_data`)."""

    def on_close(self, session: Session) -> None:
        """Called once the connection is gone (forget shared-stream subscribers)."""

    async def keepalive(self, session: Session) -> None:
        """Runs for the connection's lifetime: app-level heartbeats, idle timeouts."""

    def corrupt_checksum(self, frame: str) -> str | None:
        """``frame`` with a wrong checksum value and levels untouched (None: cannot)."""
        return None

    def shutdown_frame(self) -> str | None:
        """The venue's "server going away" message, if it has one."""
        return None

    def reject_body(self, status: int) -> tuple[bytes, str]:
        """Body and content type of a refused WebSocket handshake."""
        return (f'{{"code":{status},"msg":"HTTP {status}"}}'.encode(), "application/json")

    def add_routes(self, app: web.Application) -> None:
        """Register the venue's REST endpoints (if its book sync needs any)."""

    async def start(self, sim: VenueSimulatorHandle) -> None:
        """Called when the server starts (start shared producers here)."""

    async def stop(self) -> None:
        """Called when the server stops."""

    def scaled(self, seconds: float) -> float:
        return seconds * self.time_scale

    # -- catalog helpers -------------------------------------------------------------------

    def add_source(self, source: ReplaySource) -> None:
        self.sources[source.key] = source


def group_rows(
    rows: Iterable[Mapping[str, Any]], *, api_prefix: str | None = None
) -> dict[str, list[Mapping[str, Any]]]:
    """Server->client rows of each book ``group``, in file order (optionally only rows whose
    ``api`` starts with ``api_prefix``)."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        group = row.get("group")
        if group is None or row.get("direction", "server->client") != "server->client":
            continue
        if api_prefix is not None and not str(row.get("api", "")).startswith(api_prefix):
            continue
        groups.setdefault(group, []).append(row)
    return groups


def book_kinds(rows: Iterable[Mapping[str, Any]]) -> list[BookKind | None]:
    """Map fixture kinds (``book_snapshot`` / ``book_delta``) to :data:`BookKind`."""
    kinds: list[BookKind | None] = []
    for row in rows:
        kind = row["kind"]
        if kind == "book_snapshot":
            kinds.append("snapshot")
        else:
            kinds.append("update" if kind == "book_delta" else None)
    return kinds


_ids = itertools.count(1)


def next_request_id() -> int:
    """A process-wide increasing integer (connection ids in welcome messages)."""
    return next(_ids)
