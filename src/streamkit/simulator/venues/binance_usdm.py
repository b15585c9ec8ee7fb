"""Binance USD-M futures market streams (``/stream``, ``/ws``) and ``GET /fapi/v1/depth``,
replaying ``data/binance_usdm.jsonl``.

Control messages (``SUBSCRIBE`` / ``UNSUBSCRIBE`` / ``LIST_SUBSCRIPTIONS`` / ``SET_PROPERTY`` /
``GET_PROPERTY``), their replies and errors are the spot protocol's (:mod:`..binance`); the
futures limits differ: 10 incoming messages per second, a WS ping every 3 minutes and a
10-minute pong timeout (set by :func:`streamkit.simulator.make_simulator`).

Book sync needs a REST snapshot consistent with the diff stream, so unlike the snapshot
venues every symbol has one *shared* stream here, produced whether or not anyone listens,
with an authoritative book behind ``/fapi/v1/depth`` (its ``lastUpdateId`` is straddled by
the next diff, see :meth:`DepthLoop.rest_last_update_id`). Loop 0 sends the captured diffs
byte-exact: the first three are older than the captured REST snapshot, as live.
Loop k >= 1 sends one *rewind* diff (the levels that take the book from the end of the
capture back to the snapshot) and then the captured diffs from the first one a client
applies, with ``U``/``u``/``pu`` shifted by ``k * span`` so that every ``pu`` equals the
previous ``u`` across loops, forever. ``aggTrade`` ids (``a``, ``f``/``l``) are shifted per
loop likewise; ``bookTicker`` and ``kline_1m`` frames loop byte-exact.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Sequence
from typing import Final

from aiohttp import web

from streamkit.simulator.binance import (
    ControlError,
    encode_result,
    parse_control,
    rest_error,
    split_streams,
    wrap_combined,
)
from streamkit.simulator.book import OrderBook
from streamkit.simulator.frames import FrameTemplate
from streamkit.simulator.venues.base import (
    BookKind,
    ReplaySource,
    Session,
    VenueAdapter,
    VenueSimulatorHandle,
    load_rows,
)

WS_PING_INTERVAL: Final = 180.0
WS_PONG_TIMEOUT: Final = 600.0
MAX_STREAMS: Final = 1024
REST_LIMITS: Final = (5, 10, 20, 50, 100, 500, 1000)
REST_DEFAULT_LIMIT: Final = 500
_SUFFIXES: Final = {
    "depth": "depth",
    "depth@100ms": "depth",
    "depth@500ms": "depth",
    "aggTrade": "aggTrade",
    "bookTicker": "bookTicker",
    "kline_1m": "kline_1m",
}
_MIN_TICK: Final = 0.005
_MISSING_SYMBOL: Final = "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."


def _unwrap(raw: str) -> tuple[str, str]:
    """``{"stream":"x","data":{..}}`` -> (``x``, the payload text, byte-exact)."""
    head = '{"stream":"'
    end = raw.index('","data":')
    return raw[len(head) : end], raw[end + len('","data":') : -1]


class DepthLoop:
    """One symbol's diff stream and authoritative book (see the module docstring)."""

    def __init__(self, symbol: str, snapshot: str, diffs: Sequence[str]) -> None:
        self.symbol = symbol
        self.book = OrderBook.from_rest(snapshot)
        start_id = self.book.last_update_id
        self._templates = [FrameTemplate(d, ["U", "u", "pu"]) for d in diffs]
        ids = [t.values for t in self._templates]
        # The first diff a client applies: the first not older than the snapshot.
        self._first = next(i for i, v in enumerate(ids) if v["u"] >= start_id)
        self._span = ids[-1]["u"] - ids[self._first]["pu"] + 1
        parsed = [json.loads(d) for d in diffs]
        self._levels = [(p["b"], p["a"]) for p in parsed]
        end = OrderBook.from_rest(snapshot)
        for v, (bids, asks) in zip(ids, self._levels, strict=True):
            end.apply(v["u"], bids, asks)
        self._rewind = _rewind_levels(OrderBook.from_rest(snapshot), end)
        self._key_order = parsed[0]
        self._snapshot_id = start_id
        self.loop = 0
        self._index = 0

    def rest_last_update_id(self) -> int:
        """The ``lastUpdateId`` a REST snapshot of :attr:`book` reports: the captured one
        until the capture's first applicable diff is sent, then the ``U`` of the next diff,
        so that the next diff straddles it (``U <= lastUpdateId <= u``) as the documented
        sync procedure requires, even for a client that subscribed just before the request.
        """
        ids = self._templates
        if self.loop == 0:
            if self._index <= self._first:
                return self._snapshot_id
            return ids[self._index].values["U"]
        shift = self.loop * self._span
        if self._index == 0:
            return ids[-1].values["u"] + shift - self._span + 1
        return ids[self._first + self._index - 1].values["U"] + shift

    def step(self) -> str:
        """The next diff (payload text), applied to :attr:`book` first."""
        ids = self._templates
        if self.loop == 0:
            text = ids[self._index].text
            bids, asks = self._levels[self._index]
            self.book.apply(ids[self._index].values["u"], bids, asks)
            self._advance(len(ids))
            return text
        shift = self.loop * self._span
        if self._index == 0:  # the rewind diff opens every later loop
            pu = ids[-1].values["u"] + shift - self._span
            u = ids[self._first].values["pu"] + shift
            bids, asks = self._rewind
            self.book.apply(u, bids, asks)
            self._advance(1 + len(ids) - self._first)
            return self._render_rewind(pu + 1, u, pu, bids, asks)
        template = ids[self._first + self._index - 1]
        bids, asks = self._levels[self._first + self._index - 1]
        changes = {f: v + shift for f, v in template.values.items()}
        self.book.apply(changes["u"], bids, asks)
        self._advance(1 + len(ids) - self._first)
        return template.render(changes)

    def _advance(self, length: int) -> None:
        self._index += 1
        if self._index >= length:
            self.loop, self._index = self.loop + 1, 0

    def _render_rewind(
        self, first: int, last: int, prev: int, bids: list[list[str]], asks: list[list[str]]
    ) -> str:
        event = dict(self._key_order)
        event.update(U=first, u=last, pu=prev, b=bids, a=asks)
        return json.dumps(event, separators=(",", ":"))


def _rewind_levels(start: OrderBook, end: OrderBook) -> tuple[list[list[str]], list[list[str]]]:
    """Levels that take ``end`` back to ``start`` (absolute quantities, "0" removes)."""
    before, after = start.state(), end.state()

    def side(was: dict[str, str], now: dict[str, str], descending: bool) -> list[list[str]]:
        prices = [p for p in was.keys() | now.keys() if was.get(p) != now.get(p)]
        prices.sort(key=float, reverse=descending)
        return [[p, was.get(p, "0")] for p in prices]

    return side(before.bids, after.bids, True), side(before.asks, after.asks, False)


class BinanceUsdmAdapter(VenueAdapter):
    exchange = "binance_futures"
    ws_path = "/stream"
    ws_paths = ("/stream", "/ws", "/ws/{streams:.+}")
    max_incoming_per_second = 10

    def __init__(self, *, time_scale: float = 1.0) -> None:
        super().__init__(time_scale=time_scale)
        rows = load_rows("binance_usdm")
        snapshot = next(r for r in rows if r["kind"] == "rest_book_snapshot")
        diffs = [
            _unwrap(r["raw"])[1]
            for r in rows
            if r.get("group") == snapshot["group"] and r["kind"] == "book_delta"
        ]
        self.depth: dict[str, DepthLoop] = {
            snapshot["symbol"]: DepthLoop(snapshot["symbol"], snapshot["raw"], diffs)
        }
        streams: dict[str, list[str]] = {}
        for row in rows:
            if row.get("group") or not row["raw"].startswith('{"stream"'):
                continue
            name, payload = _unwrap(row["raw"])
            symbol, _, suffix = name.partition("@")
            channel = _SUFFIXES.get(suffix)
            if channel is not None:
                streams.setdefault(f"{symbol.upper()}@{channel}", []).append(payload)
        self.others: dict[str, ReplaySource] = {
            key: ReplaySource(key, key.partition("@")[0], frames, id_groups=[("a",), ("f", "l")])
            for key, frames in streams.items()
        }
        self.symbols = set(self.depth) | {s.symbol for s in self.others.values()}
        self._subscribers: dict[str, dict[int, Session]] = {}  # "SYM@channel" -> sessions
        self._producer: asyncio.Task[None] | None = None
        self._sim: VenueSimulatorHandle | None = None

    # ----------------------------------------------------------------- streams

    @staticmethod
    def _route(name: str) -> str | None:
        """Stream name -> ``SYMBOL@channel`` (None for names nothing is published under)."""
        symbol, sep, suffix = name.partition("@")
        channel = _SUFFIXES.get(suffix)
        if not sep or channel is None or symbol != symbol.lower():
            return None
        return f"{symbol.upper()}@{channel}"

    def _add(self, session: Session, names: Sequence[str]) -> None:
        streams: dict[str, None] = session.state["streams"]
        for name in names:
            streams[name] = None
            route = self._route(name)
            if route is not None:
                self._subscribers.setdefault(route, {})[session.id] = session

    def _remove(self, session: Session, names: Sequence[str]) -> None:
        streams: dict[str, None] = session.state["streams"]
        for name in names:
            streams.pop(name, None)
            route = self._route(name)
            if route is None:
                continue
            still = any(self._route(n) == route for n in streams)
            if not still:
                self._subscribers.get(route, {}).pop(session.id, None)

    def on_open(self, session: Session) -> None:
        if session.path == "/stream":
            combined, names = True, split_streams(session.query.get("streams", ""))
        else:
            combined, names = False, split_streams(session.path.removeprefix("/ws"))
        session.state.update(combined=combined, streams={})
        self._add(session, names)

    def on_close(self, session: Session) -> None:
        for subscribers in self._subscribers.values():
            subscribers.pop(session.id, None)

    def on_text(self, session: Session, text: str) -> None:
        request = parse_control(text)
        if isinstance(request, ControlError):
            session.send(request.encode())
            return
        streams: dict[str, None] = session.state["streams"]
        names = [p for p in dict.fromkeys(request.params) if isinstance(p, str)]
        if request.method == "SUBSCRIBE":
            new = [n for n in names if n not in streams]
            if len(streams) + len(new) > MAX_STREAMS:
                session.send(ControlError(4, "Too many subscriptions", request.id).encode())
                return
            session.send(encode_result(None, request.id))
            self._add(session, new)
        elif request.method == "UNSUBSCRIBE":
            self._remove(session, names)
            session.send(encode_result(None, request.id))
        elif request.method == "LIST_SUBSCRIPTIONS":
            session.send(encode_result(list(streams), request.id))
        elif request.method == "SET_PROPERTY":
            session.state["combined"] = bool(request.params[1])
            session.send(encode_result(None, request.id))
        else:
            session.send(encode_result(session.state["combined"], request.id))

    # ----------------------------------------------------------------- shared producer

    async def start(self, sim: VenueSimulatorHandle) -> None:
        self._sim = sim
        self._producer = asyncio.create_task(self._produce(sim.rate, sim.replay_once))

    async def stop(self) -> None:
        if self._producer is not None:
            self._producer.cancel()
            await asyncio.gather(self._producer, return_exceptions=True)
            self._producer = None

    async def _produce(self, rate: float, once: bool) -> None:
        loop = asyncio.get_running_loop()
        tick = max(1.0 / rate, _MIN_TICK)
        max_burst = max(1, math.ceil(rate))
        started, done, step = loop.time(), 0, 0
        while True:
            due = int((loop.time() - started) * rate) + 1 - done
            if due > max_burst:
                done += due - max_burst
                due = max_burst
            for _ in range(max(due, 0)):
                self._step(step, once)
                step += 1
            done += max(due, 0)
            await asyncio.sleep(tick)

    def _step(self, step: int, once: bool) -> None:
        for symbol, depth in self.depth.items():
            if once and depth.loop > 0:
                continue
            self._publish(f"{symbol}@depth", depth.step(), "update", symbol)
        for key, source in self.others.items():
            if once and step >= len(source):
                continue
            text, _ = source.frame(step)
            self._publish(key, text, None, source.symbol)

    def _publish(self, route: str, payload: str, book: BookKind | None, symbol: str) -> None:
        subscribers = self._subscribers.get(route)
        if not subscribers:
            return
        raw = payload.encode()
        for session in tuple(subscribers.values()):
            if not session.state["combined"]:
                session.deliver(raw, book, symbol)
                continue
            for name in session.state["streams"]:
                if self._route(name) == route:
                    session.deliver(wrap_combined(name, raw), book, symbol)

    # ----------------------------------------------------------------- REST

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/fapi/v1/depth", self._handle_depth)
        app.router.add_get("/fapi/v1/ping", self._handle_ping)
        app.router.add_get("/fapi/v1/time", self._handle_time)

    async def _handle_depth(self, request: web.Request) -> web.Response:
        symbol = request.query.get("symbol", "")
        raw_limit = request.query.get("limit", str(REST_DEFAULT_LIMIT))
        if not symbol:
            body = rest_error(-1102, _MISSING_SYMBOL)
            return web.Response(body=body, status=400, content_type="application/json")
        if not raw_limit.isdigit() or int(raw_limit) not in REST_LIMITS:
            body = rest_error(-1100, "Illegal characters found in parameter 'limit'.")
            return web.Response(body=body, status=400, content_type="application/json")
        depth = self.depth.get(symbol)
        if depth is None:
            body = rest_error(-1121, "Invalid symbol.")
            return web.Response(body=body, status=400, content_type="application/json")
        limit = int(raw_limit)
        state = depth.book.state()
        bids = sorted(state.bids.items(), key=lambda kv: float(kv[0]), reverse=True)[:limit]
        asks = sorted(state.asks.items(), key=lambda kv: float(kv[0]))[:limit]
        now = _now_ms()
        text = json.dumps(
            {
                "lastUpdateId": depth.rest_last_update_id(),
                "E": now,
                "T": now,
                "bids": [list(level) for level in bids],
                "asks": [list(level) for level in asks],
            },
            separators=(",", ":"),
        )
        return web.Response(text=text, content_type="application/json")

    async def _handle_ping(self, request: web.Request) -> web.Response:
        return web.Response(text="{}", content_type="application/json")

    async def _handle_time(self, request: web.Request) -> web.Response:
        return web.Response(text=f'{{"serverTime":{_now_ms()}}}', content_type="application/json")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
