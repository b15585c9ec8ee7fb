"""The built-in Binance spot simulator, exercised over the wire with a plain aiohttp client.

The expected values come from the packaged capture, read here independently of the
simulator's own loader, and from Binance's documented protocol.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType

from streamkit.simulator import BinanceSimulator, Fault, FaultError
from streamkit.simulator.binance import Channel
from streamkit.simulator.book import OrderBook
from streamkit.simulator.capture import load_capture
from streamkit.simulator.replay import SymbolFeed

DEPTH = "nknusdt@depth@100ms"
GROUP = "binance-spot-depth-NKNUSDT"


# ---------------------------------------------------------------------------------- helpers


def capture_rows() -> list[dict[str, Any]]:
    text = (resources.files("streamkit.simulator") / "data" / "binance_spot.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class ClientBook:
    """A client-side book following Binance's documented sync procedure, on plain dicts."""

    def __init__(self, snapshot: dict[str, Any]) -> None:
        self.last: int = snapshot["lastUpdateId"]
        self.bids = {p: q for p, q in snapshot["bids"]}
        self.asks = {p: q for p, q in snapshot["asks"]}
        self.synced = False

    def apply(self, diff: dict[str, Any]) -> bool:
        """Apply one diff; False when it is stale. Asserts the update-id chain."""
        if diff["u"] <= self.last:
            return False
        if self.synced:
            assert diff["U"] == self.last + 1, "gap in the diff stream"
        else:
            assert diff["U"] <= self.last + 1 <= diff["u"], "first diff does not straddle"
            self.synced = True
        for side, levels in ((self.bids, diff["b"]), (self.asks, diff["a"])):
            for price, qty in levels:
                if float(qty) == 0:
                    side.pop(price, None)
                else:
                    side[price] = qty
        self.last = diff["u"]
        return True


async def recv_json(ws: aiohttp.ClientWebSocketResponse, within: float = 2.0) -> Any:
    """The next text frame, decoded (pings, seen when autoping is off, are answered)."""
    async with asyncio.timeout(within):
        while (msg := await ws.receive()).type is WSMsgType.PING:
            await ws.pong(msg.data)
    assert msg.type is WSMsgType.TEXT, msg
    return json.loads(msg.data)


async def recv_reply(ws: aiohttp.ClientWebSocketResponse, within: float = 2.0) -> str:
    """The next control reply (a frame with an ``id``), skipping market data."""
    async with asyncio.timeout(within):
        while True:
            msg = await ws.receive()
            assert msg.type is WSMsgType.TEXT, msg
            if '"id":' in msg.data and not msg.data.startswith('{"stream"'):
                return str(msg.data)


async def send(ws: aiohttp.ClientWebSocketResponse, method: str, params: Any, rid: Any) -> str:
    await ws.send_str(json.dumps({"method": method, "params": params, "id": rid}))
    return await recv_reply(ws)


async def recv_until_closed(
    ws: aiohttp.ClientWebSocketResponse, within: float = 3.0
) -> aiohttp.WSMessage:
    """Read (and discard) until the connection ends; returns the final message."""
    async with asyncio.timeout(within):
        while True:
            msg = await ws.receive()
            if msg.type not in (WSMsgType.TEXT, WSMsgType.PING, WSMsgType.PONG):
                return msg


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def sim() -> AsyncIterator[BinanceSimulator]:
    async with BinanceSimulator(rate=200, max_incoming_per_second=100) as s:
        yield s


# ---------------------------------------------------------------------------------- protocol


async def test_subscribe_ack_then_combined_stream_events(
    sim: BinanceSimulator, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(sim.ws_url) as ws:
        await ws.send_str(
            '{"method":"SUBSCRIBE","params":["nknusdt@depth@100ms","lrcbtc@aggTrade"],"id":1}'
        )
        first = await ws.receive(timeout=2)
        assert first.data == '{"result":null,"id":1}'  # the ack precedes any data
        seen: set[str] = set()
        while seen != {DEPTH, "lrcbtc@aggTrade"}:
            frame = await recv_json(ws)
            assert set(frame) == {"stream", "data"}
            seen.add(frame["stream"])
            expected = (
                ("depthUpdate", "NKNUSDT") if frame["stream"] == DEPTH else ("aggTrade", "LRCBTC")
            )
            assert (frame["data"]["e"], frame["data"]["s"]) == expected


async def test_raw_endpoint_sends_unwrapped_payloads(
    sim: BinanceSimulator, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(f"{sim.raw_ws_url}/nknusdt@bookTicker") as ws:
        ticker = await recv_json(ws)
        assert list(ticker) == ["u", "s", "b", "B", "a", "A"]  # the captured spot layout
        assert ticker["s"] == "NKNUSDT"
        assert float(ticker["b"]) < float(ticker["a"])
        # bookTicker is read from the simulator's own book: same id space as the diffs
        assert ticker["u"] <= sim.book("NKNUSDT").last_update_id


async def test_list_unsubscribe_and_properties(
    sim: BinanceSimulator, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(f"{sim.ws_url}?streams={DEPTH}") as ws:
        assert await send(ws, "SUBSCRIBE", ["foousdt@trade", "lrcbtc@kline_1m"], 2) == (
            '{"result":null,"id":2}'
        )
        assert await send(ws, "LIST_SUBSCRIPTIONS", [], 3) == (
            '{"result":["nknusdt@depth@100ms","foousdt@trade","lrcbtc@kline_1m"],"id":3}'
        )
        assert await send(ws, "UNSUBSCRIBE", ["lrcbtc@kline_1m", DEPTH], "abc-1") == (
            '{"result":null,"id":"abc-1"}'
        )
        assert await send(ws, "LIST_SUBSCRIPTIONS", [], None) == (
            '{"result":["foousdt@trade"],"id":null}'
        )
        assert await send(ws, "GET_PROPERTY", ["combined"], 5) == '{"result":true,"id":5}'
        assert await send(ws, "SET_PROPERTY", ["combined", False], 6) == '{"result":null,"id":6}'
        assert await send(ws, "GET_PROPERTY", ["combined"], 7) == '{"result":false,"id":7}'
        assert await send(ws, "SUBSCRIBE", ["lrcbtc@aggTrade"], 8) == '{"result":null,"id":8}'
        event = await recv_json(ws)  # now a raw payload
        assert event["e"] == "aggTrade"
        assert sim.stats.connections[0].subscriptions == 2


async def test_unknown_symbol_is_acknowledged_and_silent(
    sim: BinanceSimulator, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(sim.ws_url) as ws:
        assert await send(ws, "SUBSCRIBE", ["foousdt@trade", "NKNUSDT@trade"], 1) == (
            '{"result":null,"id":1}'
        )
        with pytest.raises(TimeoutError):
            await ws.receive(timeout=0.2)


def documented_errors() -> list[dict[str, Any]]:
    return [json.loads(r["raw"]) for r in capture_rows() if r["kind"] == "error"]


@pytest.mark.parametrize(
    ("request_text", "expected", "reply_id"),
    [
        ("hello", {"code": 3, "msg": "Invalid JSON: expected value at line 1 column 1"}, None),
        (
            '{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1.5}',
            {"code": 2, "msg": "Invalid request: request ID must be an unsigned integer"},
            None,
        ),
        (
            '{"method":"LIST_SUBSCRIPTIONS","params":["x"],"id":1}',
            {"code": 2, "msg": "Invalid request: too many parameters"},
            1,
        ),
        (
            '{"method":"SET_PROPERTY","params":[1,true],"id":"a1"}',
            {"code": 2, "msg": "Invalid request: property name must be a string"},
            "a1",
        ),
        (
            '{"method":"SET_PROPERTY","params":["combined","yes"],"id":1}',
            {"code": 1, "msg": "Invalid value type: expected Boolean"},
            1,
        ),
    ],
)
async def test_malformed_control_gets_the_documented_error(
    sim: BinanceSimulator,
    session: aiohttp.ClientSession,
    request_text: str,
    expected: Any,
    reply_id: Any,
) -> None:
    if expected["code"] != 3:  # the table's JSON row has %s placeholders; not in the data
        assert expected in documented_errors()  # verbatim rows of Binance's error table
    async with session.ws_connect(sim.ws_url) as ws:
        await ws.send_str(request_text)
        reply = json.loads(await recv_reply(ws))
        assert reply == {"error": expected, "id": reply_id}  # Binance wraps the table row
        # the connection stays usable
        assert await send(ws, "LIST_SUBSCRIPTIONS", [], 9) == '{"result":[],"id":9}'


async def test_other_control_errors(sim: BinanceSimulator, session: aiohttp.ClientSession) -> None:
    async with session.ws_connect(sim.ws_url) as ws:
        await ws.send_str('{"params":[],"id":7}')
        assert await recv_reply(ws) == (
            '{"error":{"code":2,"msg":"Invalid request: missing field `method`'
            ' at line 1 column 20"},"id":7}'
        )
        await ws.send_str('{"method":"FOO","id":4}')
        assert json.loads(await recv_reply(ws))["error"]["msg"].startswith(
            "Invalid request: unknown variant `FOO`, expected one of `SUBSCRIBE`"
        )
        assert await send(ws, "GET_PROPERTY", ["foo"], 8) == (
            '{"error":{"code":0,"msg":"Unknown property"},"id":8}'
        )
        assert await send(ws, "SUBSCRIBE", ["not a stream"], 9) == (
            '{"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":9}'
        )


async def test_more_than_1024_streams_is_refused(session: aiohttp.ClientSession) -> None:
    async with BinanceSimulator() as sim, session.ws_connect(sim.ws_url) as ws:
        names = [f"s{i}usdt@trade" for i in range(1025)]
        assert await send(ws, "SUBSCRIBE", names, 1) == (
            '{"error":{"code":4,"msg":"Too many subscriptions"},"id":1}'
        )
        assert await send(ws, "SUBSCRIBE", names[:1024], 2) == '{"result":null,"id":2}'
        assert await send(ws, "SUBSCRIBE", ["x@trade"], 3) == (
            '{"error":{"code":4,"msg":"Too many subscriptions"},"id":3}'
        )


async def test_more_than_5_messages_per_second_closes(session: aiohttp.ClientSession) -> None:
    async with BinanceSimulator() as sim, session.ws_connect(sim.ws_url) as ws:
        for rid in range(5):  # 5 within a second are fine...
            assert await send(ws, "LIST_SUBSCRIPTIONS", [], rid) == f'{{"result":[],"id":{rid}}}'
        await ws.send_str('{"method":"LIST_SUBSCRIPTIONS","id":5}')  # ...the 6th is not
        msg = await recv_until_closed(ws)
        assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 1008, "Too many requests")
        assert sim.stats.connections[0].messages_received == 6


# ---------------------------------------------------------------------------------- order book


async def test_rest_snapshot_is_consistent_with_the_diff_stream(
    session: aiohttp.ClientSession,
) -> None:
    # 1000 steps/s: the 150-diff capture loops several times during the test.
    async with (
        BinanceSimulator(rate=1000) as sim,
        session.ws_connect(f"{sim.ws_url}?streams={DEPTH}") as ws,
    ):
        buffered = [(await recv_json(ws))["data"]]
        async with session.get(f"{sim.rest_url}/api/v3/depth?symbol=NKNUSDT&limit=5000") as r:
            book = ClientBook(await r.json())
        assert book.last >= buffered[0]["U"]
        applied = sum(book.apply(d) for d in buffered)
        while applied < 500 or book.last != sim.book("NKNUSDT").last_update_id:
            applied += book.apply((await recv_json(ws))["data"])
        state = sim.book("NKNUSDT")
        assert (book.bids, book.asks) == (state.bids, state.asks)
        best_bid = max(map(float, book.bids))
        assert best_bid < min(map(float, book.asks)), "looping must never cross the book"


async def test_replay_once_reproduces_the_captured_book(session: aiohttp.ClientSession) -> None:
    rows = [r for r in capture_rows() if r.get("group") == GROUP]
    snapshot = json.loads(next(r["raw"] for r in rows if r["kind"] == "rest_book_snapshot"))
    captured = [r["raw"] for r in rows if r["kind"] == "book_delta"]
    assert len(captured) == 150
    expected = ClientBook(snapshot)
    assert [expected.apply(json.loads(raw)["data"]) for raw in captured].count(True) == 149

    async with (
        BinanceSimulator(rate=500, replay_once=True) as sim,
        session.ws_connect(f"{sim.ws_url}?streams={DEPTH}") as ws,
    ):
        frames = [(await ws.receive(timeout=2)).data]
        async with session.get(f"{sim.rest_url}/api/v3/depth?symbol=NKNUSDT&limit=5000") as r:
            book = ClientBook(await r.json())
        while len(frames) < 150:
            frames.append((await ws.receive(timeout=2)).data)
        assert frames == captured  # byte-exact, file order, first (stale) diff included
        for frame in frames:
            book.apply(json.loads(frame)["data"])
        assert (book.bids, book.asks) == (expected.bids, expected.asks)
        state = sim.book("NKNUSDT")
        assert (state.bids, state.asks, state.last_update_id) == (
            expected.bids,
            expected.asks,
            expected.last,
        )
        with pytest.raises(TimeoutError):  # exactly once
            await ws.receive(timeout=0.1)


def test_looping_keeps_ids_increasing_and_the_book_uncrossed() -> None:
    capture = load_capture().symbols["NKNUSDT"]
    feed = SymbolFeed("NKNUSDT", capture)
    book = feed.book
    assert book is not None
    wanted = {Channel.DEPTH, Channel.AGG_TRADE, Channel.TRADE, Channel.KLINE_1M}
    last: dict[Channel, dict[str, Any]] = {}
    for step in range(5 * len(capture.depth)):  # five loops
        events = {ch: json.loads(p) for ch, p in feed.step(1_700_000_000_000 + step, wanted)}
        diff, agg, trade = events[Channel.DEPTH], events[Channel.AGG_TRADE], events[Channel.TRADE]
        if last:
            assert diff["U"] == last[Channel.DEPTH]["u"] + 1
            assert (
                agg["a"] > last[Channel.AGG_TRADE]["a"] and agg["f"] > last[Channel.AGG_TRADE]["l"]
            )
            assert trade["t"] > last[Channel.TRADE]["t"]
        assert diff["E"] == agg["T"] == 1_700_000_000_000 + step
        last = events
        bid, ask = book.best_bid(), book.best_ask()
        assert bid is not None and ask is not None and float(bid[0]) < float(ask[0])
    assert book.last_update_id == last[Channel.DEPTH]["u"]


def test_untouched_snapshot_renders_byte_exact() -> None:
    raw = next(r["raw"] for r in capture_rows() if r["kind"] == "rest_book_snapshot")
    assert OrderBook.from_rest(raw).rest_body(1000).decode() == raw


async def test_rest_depth_errors_and_limit(
    sim: BinanceSimulator, session: aiohttp.ClientSession
) -> None:
    async def get(query: str) -> tuple[int, Any]:
        async with session.get(f"{sim.rest_url}/api/v3/depth?{query}") as r:
            return r.status, await r.json()

    status, body = await get("symbol=NKNUSDT&limit=5")
    assert status == 200 and len(body["bids"]) == len(body["asks"]) == 5
    assert [float(p) for p, _ in body["bids"]] == sorted(
        (float(p) for p, _ in body["bids"]), reverse=True
    )
    assert await get("symbol=FOOUSDT") == (400, {"code": -1121, "msg": "Invalid symbol."})
    assert (await get("limit=5"))[1]["code"] == -1102
    assert (await get("symbol=NKNUSDT&limit=x"))[1]["code"] == -1100


async def test_alias_symbol_reuses_a_captured_source(session: aiohttp.ClientSession) -> None:
    async with (
        BinanceSimulator(rate=200, aliases={"BTCUSDT": "NKNUSDT"}) as sim,
        session.ws_connect(f"{sim.ws_url}?streams=btcusdt@depth/btcusdt@kline_1m") as ws,
    ):
        frames: dict[str, Any] = {}
        while len(frames) < 2:
            frame = await recv_json(ws)
            frames[frame["stream"]] = frame["data"]
        assert frames["btcusdt@depth"]["s"] == "BTCUSDT"
        assert frames["btcusdt@kline_1m"]["k"]["s"] == "BTCUSDT"
        async with session.get(f"{sim.rest_url}/api/v3/depth?symbol=BTCUSDT") as r:
            assert r.status == 200
        assert "BTCUSDT" in sim.symbols


# ---------------------------------------------------------------------------------- faults


async def test_drop_ends_the_connection_without_a_close_frame(
    sim: BinanceSimulator, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(f"{sim.ws_url}?streams={DEPTH}") as ws:
        await recv_json(ws)
        assert sim.inject(Fault("drop", conn=0)) == 1
        last = await recv_until_closed(ws)
        assert last.type in (WSMsgType.CLOSED, WSMsgType.ERROR)  # no CLOSE frame


async def test_stall_stops_data_but_not_pings(session: aiohttp.ClientSession) -> None:
    async with (
        BinanceSimulator(rate=200, ping_interval=0.05) as sim,
        session.ws_connect(f"{sim.ws_url}?streams={DEPTH}", autoping=False) as ws,
    ):
        await recv_json(ws)
        sim.inject(Fault("stall", seconds=0.6))
        pings = data = 0
        started = time.monotonic()
        while time.monotonic() - started < 0.5:
            msg = await ws.receive(timeout=1)
            if msg.type is WSMsgType.PING:
                pings += 1
                await ws.pong(msg.data)
            elif time.monotonic() - started > 0.05:  # frames already in flight may arrive
                data += 1
        assert data == 0
        assert pings >= 5
        frame = await recv_json(ws)  # data resumes after the stall, queued data first
        assert frame["stream"] == DEPTH


async def test_garbage_and_oversize_frames(
    sim: BinanceSimulator, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(sim.ws_url, max_msg_size=8 << 20) as ws:
        sim.inject(Fault("garbage"))
        msg = await ws.receive(timeout=2)
        with pytest.raises(json.JSONDecodeError):
            json.loads(msg.data)
        sim.inject(Fault("oversize", size=3_000_000))
        msg = await ws.receive(timeout=2)
        assert msg.type is WSMsgType.TEXT and len(msg.data) == 3_000_000


async def test_gap_skips_exactly_one_diff(
    sim: BinanceSimulator, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(f"{sim.ws_url}?streams={DEPTH}") as ws:
        previous = (await recv_json(ws))["data"]["u"]
        sim.inject(Fault("gap", symbol="NKNUSDT"))
        jumps = []
        for _ in range(20):
            diff = (await recv_json(ws))["data"]
            if diff["U"] != previous + 1:
                jumps.append(diff["U"] - previous - 1)
            previous = diff["u"]
        assert len(jumps) == 1 and jumps[0] > 0


async def test_close_with_code_and_reason(
    sim: BinanceSimulator, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(sim.ws_url) as ws:
        sim.inject(Fault("close", code=4001, reason="bye"))
        msg = await recv_until_closed(ws)
        assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 4001, "bye")


async def test_reject_refuses_handshakes_with_retry_after(
    sim: BinanceSimulator, session: aiohttp.ClientSession
) -> None:
    assert sim.inject(Fault("reject", status=429, retry_after=7, count=2)) == 2
    for _ in range(2):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(sim.ws_url)
        assert refused.value.status == 429
        assert refused.value.headers is not None
        assert refused.value.headers["Retry-After"] == "7"
    sim.inject(Fault("reject", status=403))
    with pytest.raises(aiohttp.WSServerHandshakeError) as forbidden:
        await session.ws_connect(sim.ws_url)
    assert forbidden.value.status == 403
    async with session.ws_connect(sim.ws_url) as ws:
        assert await send(ws, "LIST_SUBSCRIPTIONS", [], 1) == '{"result":[],"id":1}'
    assert sim.stats.handshakes_rejected == 3


async def test_shutdown_sends_server_shutdown_then_closes(
    sim: BinanceSimulator, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(sim.ws_url) as ws:
        sim.inject(Fault("shutdown"))
        event = await recv_json(ws)
        assert event["stream"] == "!serverShutdown"
        assert event["data"]["e"] == "serverShutdown"
        assert abs(event["data"]["E"] - time.time() * 1000) < 5000
        msg = await recv_until_closed(ws)
        assert (msg.type, msg.data) == (WSMsgType.CLOSE, 1001)


async def test_faults_over_http(sim: BinanceSimulator, session: aiohttp.ClientSession) -> None:
    async with session.ws_connect(sim.ws_url) as ws:
        async with session.post(f"{sim.rest_url}/_sim/fault", json={"kind": "nope"}) as r:
            assert r.status == 400
        fault = {"kind": "close", "conn": 0, "code": 4002, "reason": "from http"}
        async with session.post(f"{sim.rest_url}/_sim/fault", json=fault) as r:
            assert (r.status, await r.json()) == (200, {"affected": 1})
        msg = await recv_until_closed(ws)
        assert (msg.data, msg.extra) == (4002, "from http")
    async with session.get(f"{sim.rest_url}/_sim/stats") as r:
        stats = await r.json()
    assert stats["faults_injected"] == {"close": 1}
    assert stats["connections"][0]["close_code"] == 4002


def test_fault_validation() -> None:
    with pytest.raises(FaultError):
        Fault("close", code=1006)
    with pytest.raises(FaultError):
        Fault("oversize", size=3)


# ---------------------------------------------------------------------------------- session


async def test_pings_every_interval_and_close_when_pongs_stop(
    session: aiohttp.ClientSession,
) -> None:
    async with (
        BinanceSimulator(ping_interval=0.1, pong_timeout=0.35) as sim,
        session.ws_connect(sim.ws_url, autoping=False) as ws,
    ):
        opened = time.monotonic()
        pings: list[float] = []
        while (msg := await ws.receive(timeout=2)).type is WSMsgType.PING:
            pings.append(time.monotonic() - opened)
            assert msg.data.isdigit()  # Binance's payload: the time in ms
        assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 1008, "Pong timeout")
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert len(pings) >= 3 and all(0.05 < g < 0.2 for g in gaps)
        assert 0.4 <= time.monotonic() - opened < 0.8  # first ping at 0.1 + 0.35 timeout


async def test_answered_pings_keep_the_connection_open(session: aiohttp.ClientSession) -> None:
    async with (
        BinanceSimulator(ping_interval=0.05, pong_timeout=0.15) as sim,
        session.ws_connect(sim.ws_url) as ws,  # autoping answers
    ):
        with pytest.raises(TimeoutError):  # nothing but pings (swallowed) for 0.5 s
            async with asyncio.timeout(0.5):
                await ws.receive()
        stats = sim.stats.connections[0]
        assert stats.open and stats.pings_sent >= 5 and stats.pongs_received >= 5


async def test_connection_lifetime_expires(session: aiohttp.ClientSession) -> None:
    async with (
        BinanceSimulator(max_lifetime=0.3) as sim,
        session.ws_connect(sim.ws_url) as ws,
    ):
        opened = time.monotonic()
        msg = await recv_until_closed(ws)
        assert (msg.type, msg.data) == (WSMsgType.CLOSE, 1001)
        assert 0.25 < time.monotonic() - opened < 1.0


async def test_stats_count_connections_messages_and_subscriptions(
    sim: BinanceSimulator, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(f"{sim.ws_url}?streams={DEPTH}/lrcbtc@aggTrade") as ws:
        for _ in range(10):
            await recv_json(ws)
        sim.inject(Fault("stall", conn=0, seconds=0.01))
        stats = sim.stats
        assert stats.connections_accepted == stats.connections_open == 1
        assert stats.faults_injected == {"stall": 1}
        (conn,) = stats.connections
        assert conn.subscriptions == 2 and conn.messages_sent >= 10 and conn.open
    await asyncio.sleep(0.05)
    assert sim.stats.connections_open == 0


def test_looped_trades_print_at_the_touch_and_vary() -> None:
    """In loop mode a symbol with a book trades at its current best bid/ask, both ways, with
    varying sizes, instead of repeating the one captured print."""
    capture = load_capture().symbols["NKNUSDT"]
    feed = SymbolFeed("NKNUSDT", capture)
    book = feed.book
    assert book is not None
    sides, sizes = set(), set()
    for step in range(40):
        events = dict(feed.step(1_700_000_000_000 + step, {Channel.DEPTH, Channel.AGG_TRADE}))
        trade = json.loads(events[Channel.AGG_TRADE])
        bid, ask = book.best_bid(), book.best_ask()
        assert bid is not None and ask is not None
        touch = bid if trade["m"] else ask  # m=true: the buyer was the maker, a taker sold
        assert trade["p"] == touch[0]
        assert 0 < float(trade["q"]) <= float(touch[1])
        sides.add(trade["m"])
        sizes.add(trade["q"])
    assert sides == {True, False} and len(sizes) > 3
