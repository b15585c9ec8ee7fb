"""Coinbase Advanced Trade market data (``/``, as ``wss://advanced-trade-ws.coinbase.com``),
replaying the Advanced Trade frames of ``data/coinbase.jsonl``.

* Subscribe ``{"type":"subscribe","product_ids":[..],"channel":"level2"}``: **one channel per
  message** (``jwt`` is accepted and ignored: public channels only); unsubscribe has the same
  shape. Each request is answered by ``{"channel":"subscriptions","timestamp":..,
  "sequence_num":N,"events":[{"subscriptions":{<channel>:[<products>],..}}]}`` listing **all**
  the connection's current subscriptions, channels in name order (as the live acks list
  them; ``heartbeats`` lists the pseudo-product ``heartbeats``).
* Errors carry no ``sequence_num``: an unknown channel -> ``{"type":"error","message":
  "authentication failure"}`` (what the live venue answered for one, per the capturing author);
  a malformed request, missing or unknown ``product_ids`` -> ``{"type":"error","message":
  "failure to subscribe"}`` (``heartbeats`` needs no products: any are accepted). The socket
  stays open. No subscribe within 5 s of connecting -> the server closes the connection
  (1008; code and reason are a simulator choice).
* ``sequence_num`` numbers every enveloped message of the connection (acks, heartbeats and
  data of every channel) 0, 1, 2, ...: each replayed frame is sent with the connection's next
  number in place of the captured one, so the numbers stay consecutive however the replay
  loops. A ``gap`` fault withholds a book update after it took its number (the client sees
  ``sequence_num`` skip one); ``duplicate`` sends it twice with the same number.
* ``heartbeats``: once a second, ``{"channel":"heartbeats","timestamp":..,"sequence_num":N,
  "events":[{"current_time":"<Go time> m=+<uptime>","heartbeat_counter":K}]}`` in the layout
  of the live-copied heartbeat (no ``client_id``, integer counter), queued in order with data
  (their number must not overtake queued data's).
* Captured: ``level2`` for BTC-PERP-INTX (data on channel ``l2_data``): the live snapshot,
  sent as soon as the product is subscribed, *before* the ``subscriptions`` answer (the order
  of the live-copied session: snapshot ``sequence_num`` 0, ack 1). Its updates: the only
  captured update frame (a synthetic fixture, for BTC-USD, whose book was not captured)
  re-addressed to BTC-PERP-INTX, and repeated forever as Bybit's single delta is (its
  ``new_quantity`` values are absolute, so the book stays valid). Live Coinbase sends one
  snapshot per subscription: so does the replay; a client resyncs by unsubscribing and
  subscribing again. ``market_trades`` (BTC-USD, synthetic): looping moves the string
  ``trade_id`` values on by their span, so trades keep being new (live Coinbase first sends a
  ``snapshot`` event of recent trades; none was captured, so the replay starts with the
  ``update``). ``ticker`` (BTC-USD, synthetic): the captured ``snapshot`` event, then the same
  ticker as ``update`` events.
  Other public channels (``ticker_batch``, ``candles``, ``status``) and the other known
  products (ETH-PERP-INTX, ETH-USD, and channels of BTC-USD/BTC-PERP-INTX not listed) are
  acknowledged and stay silent. Captured timestamps are kept; no checksum, no shutdown
  message.

Why the adapter paces its own subscriptions instead of the server's cursors: a replayed frame
needs the connection's next ``sequence_num`` before the book faults act on it. Subscriptions
are still recorded with :meth:`Session.subscribe` (a key without a source: stats and
``is_subscribed``); the catalog is :attr:`CoinbaseAdvancedAdapter.replays`, kept out of
``sources`` so the server does not replay it a second time, and frames go out through
:meth:`Session.deliver` (book faults included).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

from streamkit.simulator.core import Pacer
from streamkit.simulator.venues.base import (
    BookKind,
    Session,
    VenueAdapter,
    VenueSimulatorHandle,
    load_rows,
    loop_position,
)

SUBSCRIBE_DEADLINE: Final = 5.0
HEARTBEAT_INTERVAL: Final = 1.0
HEARTBEATS: Final = "heartbeats"
CHANNELS: Final = frozenset(
    {HEARTBEATS, "level2", "market_trades", "ticker", "ticker_batch", "candles", "status"}
)
"""The public channels (no JWT needed). Any other name is answered with an error."""
UNKNOWN_CHANNEL_ERROR: Final = "authentication failure"
SUBSCRIBE_ERROR: Final = "failure to subscribe"
_API: Final = "advanced-trade"
_SEQUENCE_NUM: Final = re.compile(r'"sequence_num":\d+')
_TRADE_ID: Final = re.compile(r'"trade_id":"(\d+)"')
_PRODUCT_ID: Final = re.compile(r'"product_id":"([^"]+)"')
_EVENT_SNAPSHOT: Final = '"type":"snapshot"'


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def _rfc3339_now() -> str:
    """Now as the venue writes ``timestamp``: RFC 3339, nanosecond digits, ``Z``."""
    ns = time.time_ns()
    seconds, fraction = divmod(ns, 1_000_000_000)
    whole = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return f"{whole:%Y-%m-%dT%H:%M:%S}.{fraction:09d}Z"


def _go_time_now(uptime: float) -> str:
    """Now as a heartbeat's ``current_time``: Go's ``time.Time.String()`` with its monotonic
    reading (``2026-09-07 23:37:22.674409 +0000 UTC m=+139651.272674714``)."""
    now = datetime.datetime.now(datetime.UTC)
    return f"{now:%Y-%m-%d %H:%M:%S.%f} +0000 UTC m=+{uptime:.9f}"


def with_sequence_num(frame: str, number: int) -> str:
    """``frame`` with its (first) ``"sequence_num":N`` replaced by ``number``."""
    return _SEQUENCE_NUM.sub(f'"sequence_num":{number}', frame, count=1)


class AdvancedReplay:
    """The captured frames answering one ``channel:product`` subscription, played in loops.

    Step ``i`` < n is frame ``i``, as captured; later steps replay frames ``loop_from..n-1``
    (loop 1, 2, ...). In loop k every ``"trade_id":"N"`` becomes ``N + k * span`` (span: max -
    min + 1 over the looped frames' trade ids), so a product's trades stay new; with
    ``snapshot_once``, every step after the first renders its event type ``snapshot`` as
    ``update`` (a ticker subscription starts with one snapshot event). ``sequence_num`` is left
    as captured: the connection renders its own.
    """

    __slots__ = ("book_kinds", "key", "loop_from", "product", "snapshot_once", "span", "texts")

    def __init__(
        self,
        key: str,
        product: str,
        frames: Sequence[str],
        book_kinds: Sequence[BookKind | None] | None = None,
        *,
        loop_from: int = 0,
        snapshot_once: bool = False,
    ) -> None:
        if not frames:
            raise ValueError(f"replay {key!r} has no frames")
        if not 0 <= loop_from < len(frames):
            raise ValueError(f"replay {key!r}: loop_from must index one of its frames")
        self.key = key
        self.product = product
        self.texts = tuple(frames)
        self.book_kinds: tuple[BookKind | None, ...] = tuple(
            book_kinds if book_kinds is not None else [None] * len(frames)
        )
        self.loop_from = loop_from
        self.snapshot_once = snapshot_once
        ids = [int(m) for text in self.texts[loop_from:] for m in _TRADE_ID.findall(text)]
        self.span = max(ids) - min(ids) + 1 if ids else 0

    def __len__(self) -> int:
        return len(self.texts)

    def frame(self, step: int) -> tuple[str, BookKind | None]:
        """The text of step ``step`` (captured ``sequence_num``) and its book kind."""
        loop, index = loop_position(step, len(self.texts), self.loop_from)
        text = self.texts[index]
        if loop and self.span:
            shift = loop * self.span
            text = _TRADE_ID.sub(lambda m: f'"trade_id":"{int(m.group(1)) + shift}"', text)
        if step and self.snapshot_once:
            text = text.replace(_EVENT_SNAPSHOT, '"type":"update"', 1)
        return text, self.book_kinds[index]


class CoinbaseAdvancedAdapter(VenueAdapter):
    exchange = "coinbase_advanced"
    ws_path = "/"

    def __init__(self, *, time_scale: float = 1.0) -> None:
        super().__init__(time_scale=time_scale)
        rows = [r for r in load_rows("coinbase") if str(r.get("api", "")).startswith(_API)]
        self.replays: dict[str, AdvancedReplay] = {}
        """Catalog: ``channel:product`` -> its captured frames (see the module docstring)."""
        for replay in (*_level2_replays(rows), *_single_replays(rows)):
            self.replays[replay.key] = replay
        self.products = _known_products(rows)
        """Every product id the Advanced Trade rows name (the others are refused)."""
        self._sim: VenueSimulatorHandle | None = None
        self._started = time.monotonic()

    async def start(self, sim: VenueSimulatorHandle) -> None:
        self._sim = sim
        self._started = time.monotonic()

    # ----------------------------------------------------------------- requests

    def on_open(self, session: Session) -> None:
        session.state["channels"] = {}  # channel -> {product: None}, in subscription order
        session.state["cursors"] = {}  # replay key -> next step, in subscription order
        session.state["next_seq"] = 0
        session.state["subscribed"] = False
        session.state["heartbeat_counter"] = 0

    def on_text(self, session: Session, text: str) -> None:
        request = self._parse(text)
        if isinstance(request, str):
            session.send(_compact({"type": "error", "message": request}))
            return
        kind, channel, products = request
        if kind == "subscribe":
            self._subscribe(session, channel, products)
            session.state["subscribed"] = True
        else:
            self._unsubscribe(session, channel, products)
        self._ack(session)

    def _parse(self, text: str) -> tuple[str, str, list[str]] | str:
        """``(type, channel, products)`` of a valid request, or the error message."""
        try:
            request = json.loads(text)
        except ValueError:
            return SUBSCRIBE_ERROR
        if not isinstance(request, dict) or request.get("type") not in (
            "subscribe",
            "unsubscribe",
        ):
            return SUBSCRIBE_ERROR
        channel = request.get("channel")
        if not isinstance(channel, str):
            return SUBSCRIBE_ERROR
        if channel not in CHANNELS:
            return UNKNOWN_CHANNEL_ERROR
        products = request.get("product_ids", [])
        if not isinstance(products, list) or not all(isinstance(p, str) for p in products):
            return SUBSCRIBE_ERROR
        if channel == HEARTBEATS:
            return request["type"], channel, [HEARTBEATS]
        if not products or any(p not in self.products for p in products):
            return SUBSCRIBE_ERROR
        return request["type"], channel, products

    def _subscribe(self, session: Session, channel: str, products: list[str]) -> None:
        """Record the subscription; a level2 product's snapshot goes out at once (before the
        answer, as live), other replays start at the next pacing step."""
        current = session.state["channels"].setdefault(channel, {})
        for product in products:
            current[product] = None
            key = f"{channel}:{product}"
            if not session.subscribe(key) or channel == HEARTBEATS:
                continue  # an active replay goes on; heartbeats are produced here
            replay = self.replays.get(key)
            if replay is None:
                continue  # acknowledged, silent
            session.state["cursors"][key] = 0
            if channel == "level2":
                self._step(session, key)

    def _unsubscribe(self, session: Session, channel: str, products: list[str]) -> None:
        channels: dict[str, dict[str, None]] = session.state["channels"]
        current = channels.get(channel, {})
        for product in products:
            current.pop(product, None)
            session.unsubscribe(f"{channel}:{product}")
            session.state["cursors"].pop(f"{channel}:{product}", None)
        if not current:
            channels.pop(channel, None)

    def _ack(self, session: Session) -> None:
        channels: dict[str, dict[str, None]] = session.state["channels"]
        listed = {name: list(channels[name]) for name in sorted(channels)}
        self._send(
            session,
            {
                "channel": "subscriptions",
                "timestamp": _rfc3339_now(),
                "sequence_num": 0,
                "events": [{"subscriptions": listed}],
            },
        )

    # ----------------------------------------------------------------- outbound

    def _next_seq(self, session: Session) -> int:
        number: int = session.state["next_seq"]
        session.state["next_seq"] = number + 1
        return number

    def _send(self, session: Session, envelope: dict[str, Any]) -> None:
        """Queue a message produced here (ack, heartbeat) with the next ``sequence_num``."""
        envelope["sequence_num"] = self._next_seq(session)
        session.send(_compact(envelope))

    def _step(self, session: Session, key: str) -> None:
        """Send the next frame of subscription ``key`` with the next ``sequence_num``; the
        book faults act on it after it took its number."""
        cursors: dict[str, int] = session.state["cursors"]
        replay = self.replays[key]
        step = cursors[key]
        cursors[key] = step + 1
        text, book = replay.frame(step)
        session.deliver(with_sequence_num(text, self._next_seq(session)), book, replay.product)

    def _pace_all(self, session: Session, once: bool) -> None:
        """One pacing step: every subscription's next frame, in subscription order."""
        cursors: dict[str, int] = session.state["cursors"]
        for key, step in tuple(cursors.items()):
            if not (once and step >= len(self.replays[key])):
                self._step(session, key)

    # ----------------------------------------------------------------- connection tasks

    async def keepalive(self, session: Session) -> None:
        """Pacing, heartbeats and the subscribe deadline, for the connection's lifetime."""
        await asyncio.gather(
            self._pace(session), self._heartbeats(session), self._deadline(session)
        )

    async def _pace(self, session: Session) -> None:
        if self._sim is None:
            raise RuntimeError("the adapter was not started by a simulator")
        pacer = Pacer(self._sim.rate, asyncio.get_running_loop())
        once = self._sim.replay_once
        while True:
            for _ in range(pacer.due()):
                self._pace_all(session, once)
            await asyncio.sleep(pacer.tick)

    async def _heartbeats(self, session: Session) -> None:
        interval = self.scaled(HEARTBEAT_INTERVAL)
        while True:
            await asyncio.sleep(interval)
            if HEARTBEATS not in session.state["channels"]:
                continue
            session.state["heartbeat_counter"] += 1
            event = {
                "current_time": _go_time_now(time.monotonic() - self._started),
                "heartbeat_counter": session.state["heartbeat_counter"],
            }
            self._send(
                session,
                {
                    "channel": HEARTBEATS,
                    "timestamp": _rfc3339_now(),
                    "sequence_num": 0,
                    "events": [event],
                },
            )

    async def _deadline(self, session: Session) -> None:
        await asyncio.sleep(self.scaled(SUBSCRIBE_DEADLINE))
        if not session.state["subscribed"]:
            session.close(1008, "No subscribe message within 5 seconds")


# --------------------------------------------------------------------------- catalog


def _level2_replays(rows: Sequence[Mapping[str, Any]]) -> list[AdvancedReplay]:
    """Per captured snapshot: the snapshot, then that product's captured updates, or, when it
    has none, every captured update re-addressed to it (see the module docstring)."""
    deltas = [r["raw"] for r in rows if r["kind"] == "book_delta"]
    replays = []
    for row in rows:
        if row["kind"] != "book_snapshot":
            continue
        product = _first_product(row["raw"])
        own = [d for d in deltas if _first_product(d) == product]
        updates = own or [_readdress(d, product) for d in deltas]
        kinds: list[BookKind | None] = ["snapshot"]
        kinds += ["update"] * len(updates)
        replays.append(
            AdvancedReplay(
                f"level2:{product}",
                product,
                [row["raw"], *updates],
                kinds,
                loop_from=1 if updates else 0,
            )
        )
    return replays


def _single_replays(rows: Sequence[Mapping[str, Any]]) -> list[AdvancedReplay]:
    """``market_trades`` and ``ticker`` frames, per channel and product, in file order."""
    frames: dict[str, list[str]] = {}
    for row in rows:
        if row["kind"] not in ("trade", "ticker"):
            continue
        channel = json.loads(row["raw"])["channel"]
        frames.setdefault(f"{channel}:{_first_product(row['raw'])}", []).append(row["raw"])
    return [
        AdvancedReplay(key, key.partition(":")[2], texts, snapshot_once=key.startswith("ticker:"))
        for key, texts in frames.items()
    ]


def _first_product(raw: str) -> str:
    match = _PRODUCT_ID.search(raw)
    if match is None:
        raise ValueError(f"no product_id in {raw[:80]!r}")
    return match.group(1)


def _readdress(raw: str, product: str) -> str:
    return _PRODUCT_ID.sub(f'"product_id":"{product}"', raw)


def _known_products(rows: Sequence[Mapping[str, Any]]) -> frozenset[str]:
    """Product ids in data frames, in the captured acks and in the captured requests."""
    found: set[str] = set()
    for row in rows:
        raw = row["raw"]
        found.update(_PRODUCT_ID.findall(raw))
        body = json.loads(raw)
        found.update(body.get("product_ids", []))
        for event in body.get("events", []):
            for listed in event.get("subscriptions", {}).values():
                found.update(p for p in listed if p != HEARTBEATS)
    return frozenset(found)
