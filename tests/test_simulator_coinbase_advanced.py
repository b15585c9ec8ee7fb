"""The Coinbase Advanced Trade venue simulator: its protocol over a real WebSocket (plain
aiohttp client), then the real plugin through the real transport against it.

Expected frames come from the packaged capture (``data/coinbase.jsonl``, rows whose ``api`` is
Advanced Trade), read here with stdlib json independently of the simulator; expected protocol
replies from the live-copied frames of that capture and docs/exchange-protocols.md ("Advanced
Trade feed").
"""

from __future__ import annotations

import asyncio
import calendar
import itertools
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from decimal import Decimal
from importlib import resources
from typing import Any

import aiohttp
import pytest
from test_simulator_venues import client
from test_simulator_venues import venue as venues_venue

from streamkit.app import App
from streamkit.channel import Subscription
from streamkit.config import parse_config
from streamkit.model import BBO, Book, Record, Status, StatusEvent, Ticker, Trade
from streamkit.simulator import Fault, FaultError, VenueSimulator

RECV_TIMEOUT = 5.0
WITHIN = 20.0  # seconds any one wait may take before the test fails (never reached when green)
PERP = "BTC-PERP-INTX"  # the product of the captured level2 snapshot
SPOT = "BTC-USD"  # the product of the captured update, trades and ticker


# ----------------------------------------------------------------------- the capture


def capture() -> list[dict[str, Any]]:
    text = (resources.files("streamkit.simulator") / "data" / "coinbase.jsonl").read_text()
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [r for r in rows if r["api"].startswith("advanced-trade")]


def captured(kind: str) -> list[dict[str, Any]]:
    return [json.loads(r["raw"]) for r in capture() if r["kind"] == kind]


[SNAPSHOT] = captured("book_snapshot")
[UPDATE] = captured("book_delta")
[TRADES] = captured("trade")
[TICKER] = captured("ticker")


def as_sent(body: dict[str, Any], seq: int) -> dict[str, Any]:
    """A captured frame as the simulator sends it: the connection's ``sequence_num``."""
    return body | {"sequence_num": seq}


def readdressed_update() -> dict[str, Any]:
    """The captured (BTC-USD) update re-addressed to the captured snapshot's product."""
    [event] = UPDATE["events"]
    return UPDATE | {"events": [event | {"product_id": PERP}]}


def ns(iso: str) -> int:
    whole, _, frac = iso.rstrip("Z").partition(".")
    date, _, clock = whole.partition("T")
    fields = [int(x) for x in date.split("-") + clock.split(":")]
    return calendar.timegm((*fields, 0, 0, 0)) * 1_000_000_000 + int(frac.ljust(9, "0"))


def levels(event: dict[str, Any], side: str) -> list[tuple[Decimal, Decimal]]:
    return [
        (Decimal(u["price_level"]), Decimal(u["new_quantity"]))
        for u in event["updates"]
        if u["side"] == side
    ]


# ----------------------------------------------------------------------- wire harness


def venue(**options: Any) -> AbstractAsyncContextManager[VenueSimulator]:
    """The Coinbase Advanced Trade simulator (the venue tests' helper, for this exchange)."""
    return venues_venue("coinbase_advanced", **options)


async def recv(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await ws.receive(timeout=RECV_TIMEOUT)
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    body = json.loads(msg.data)
    assert isinstance(body, dict)
    return body


async def take(
    ws: aiohttp.ClientWebSocketResponse, n: int, keep: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while len(out) < n:
        body = await recv(ws)
        if keep(body):
            out.append(body)
    return out


def request(kind: str, channel: str, products: list[str]) -> str:
    return json.dumps({"type": kind, "product_ids": products, "channel": channel})


def ack(seq: int, subscriptions: dict[str, list[str]]) -> dict[str, Any]:
    return {"channel": "subscriptions", "sequence_num": seq, "subscriptions": subscriptions}


def summary(body: dict[str, Any]) -> dict[str, Any]:
    """An ack without its (wall-clock) timestamp."""
    [event] = body["events"]
    return {
        "channel": body["channel"],
        "sequence_num": body["sequence_num"],
        "subscriptions": event["subscriptions"],
    }


def on(channel: str) -> Callable[[dict[str, Any]], bool]:
    return lambda body: body.get("channel") == channel


# ---------------------------------------------------------------------- the protocol


def live_session() -> list[dict[str, Any]]:
    """The live-copied session, in ``sequence_num`` order: the level2 snapshot (0), the
    answers to level2 (1) and heartbeats (2), a heartbeat (3)."""
    rows = [r for r in capture() if r["source"].startswith("unattributed public code (Rust")]
    bodies = [json.loads(r["raw"]) for r in rows if '"sequence_num"' in r["raw"]]
    return sorted(bodies, key=lambda body: int(body["sequence_num"]))


async def test_reproduces_the_live_copied_session() -> None:
    # rate 1: no data step is due within the first second; heartbeats every 0.2 s
    async with venue(rate=1, time_scale=0.2) as sim, client(sim.ws_url) as ws:
        await ws.send_str(request("subscribe", "level2", [PERP, "ETH-PERP-INTX"]))
        await ws.send_str(request("subscribe", "heartbeats", [PERP, "ETH-PERP-INTX"]))
        got = [await recv(ws) for _ in range(4)]
    snapshot, level2_ack, heartbeats_ack, heartbeat = live_session()
    # the snapshot goes out as captured (it is the connection's first message: number 0),
    # before the answer to its subscription, as live
    assert got[0] == snapshot
    assert [summary(g) for g in got[1:3]] == [summary(level2_ack), summary(heartbeats_ack)]
    for frame in (*got[1:3], got[3]):
        ns(frame["timestamp"])  # RFC 3339 with nanoseconds, as live
    assert set(got[3]) == set(heartbeat) and got[3]["sequence_num"] == 3
    [event] = got[3]["events"]
    assert set(event) == set(heartbeat["events"][0]) and isinstance(event["heartbeat_counter"], int)
    assert " +0000 UTC m=+" in event["current_time"]


async def test_every_message_is_numbered_per_connection() -> None:
    async with venue(rate=200, time_scale=0.1) as sim, client(sim.ws_url) as ws:
        await ws.send_str(request("subscribe", "heartbeats", [SPOT]))
        await ws.send_str(request("subscribe", "level2", [PERP]))
        await ws.send_str(request("subscribe", "market_trades", [SPOT]))
        await ws.send_str(request("subscribe", "ticker", [SPOT]))
        frames: list[dict[str, Any]] = []
        while len(frames) < 60 or sum(f["channel"] == "heartbeats" for f in frames) < 3:
            frames.append(await recv(ws))
    # every message of the connection, on every channel, numbered one by one from 0
    assert [f["sequence_num"] for f in frames] == list(range(len(frames)))
    answers = [summary(f)["subscriptions"] for f in frames if f["channel"] == "subscriptions"]
    assert answers == [
        {"heartbeats": ["heartbeats"]},
        {"heartbeats": ["heartbeats"], "level2": [PERP]},
        {"heartbeats": ["heartbeats"], "level2": [PERP], "market_trades": [SPOT]},
        {"heartbeats": ["heartbeats"], "level2": [PERP], "market_trades": [SPOT], "ticker": [SPOT]},
    ]
    # level2: one snapshot per subscription (the captured one), then the captured update
    # re-addressed to its product, repeated
    first, *updates = [f for f in frames if f["channel"] == "l2_data"]
    assert first == as_sent(SNAPSHOT, first["sequence_num"])
    assert len(updates) > 10
    assert all(f == as_sent(readdressed_update(), f["sequence_num"]) for f in updates)
    # market_trades: the captured trades; each loop moves the ids on by their span (2)
    trades = [f for f in frames if f["channel"] == "market_trades"]
    assert trades[0] == as_sent(TRADES, trades[0]["sequence_num"])
    captured_ids = [int(t["trade_id"]) for t in TRADES["events"][0]["trades"]]
    for loop, frame in enumerate(trades):
        [event] = frame["events"]
        assert [int(t["trade_id"]) for t in event["trades"]] == [i + 2 * loop for i in captured_ids]
        without_ids = [{**t, "trade_id": ""} for t in event["trades"]]
        assert without_ids == [{**t, "trade_id": ""} for t in TRADES["events"][0]["trades"]]
    # ticker: the captured snapshot event first, then the same ticker as updates
    tickers = [f for f in frames if f["channel"] == "ticker"]
    assert tickers[0] == as_sent(TICKER, tickers[0]["sequence_num"])
    [event] = TICKER["events"]
    for frame in tickers[1:]:
        assert frame["events"] == [event | {"type": "update"}]
    # heartbeats: the live layout (no client_id, integer counter), one more each time
    beats = [f for f in frames if f["channel"] == "heartbeats"]
    assert all(set(b) == {"channel", "timestamp", "sequence_num", "events"} for b in beats)
    counters = [b["events"][0]["heartbeat_counter"] for b in beats]
    assert counters == list(range(counters[0], counters[0] + len(beats)))
    assert all(" +0000 UTC m=+" in b["events"][0]["current_time"] for b in beats)


async def test_errors_take_no_sequence_num_and_unsubscribe_stops_data() -> None:
    live_errors = {body["message"] for body in captured("error")}
    assert live_errors == {"authentication failure", "failure to subscribe"}
    async with venue() as sim, client(sim.ws_url) as ws:
        for bad, message in [
            (request("subscribe", "level3", [SPOT]), "authentication failure"),  # no channel
            (request("subscribe", "level2", ["DOGE-XYZ"]), "failure to subscribe"),
            (request("subscribe", "ticker", []), "failure to subscribe"),
            (json.dumps({"type": "subscribe", "channels": ["ticker"]}), "failure to subscribe"),
            ("not json", "failure to subscribe"),
        ]:
            await ws.send_str(bad)
            assert await recv(ws) == {"type": "error", "message": message}
        await ws.send_str(request("subscribe", "ticker", [SPOT, "ETH-USD"]))
        assert summary(await recv(ws)) == ack(0, {"ticker": [SPOT, "ETH-USD"]})
        await take(ws, 3, on("ticker"))
        await ws.send_str(request("unsubscribe", "ticker", [SPOT]))
        answer = await take(ws, 1, on("subscriptions"))
        assert answer[0]["events"] == [{"subscriptions": {"ticker": ["ETH-USD"]}}]
        await ws.send_str(request("subscribe", "heartbeats", []))
        # ETH-USD is acknowledged but silent: after the answers nothing more comes
        [heartbeats_ack] = await take(ws, 1, on("subscriptions"))
        assert heartbeats_ack["sequence_num"] == answer[0]["sequence_num"] + 1
        with pytest.raises(TimeoutError):
            await ws.receive(timeout=0.3)


async def test_gap_skips_one_sequence_num_duplicate_repeats_one() -> None:
    async with venue(rate=500) as sim, client(sim.ws_url) as ws:
        await ws.send_str(request("subscribe", "level2", [PERP]))
        await ws.send_str(request("subscribe", "market_trades", [SPOT]))
        await take(ws, 20, lambda _: True)
        assert sim.inject(Fault("gap", symbol=PERP)) == 1
        numbers = [f["sequence_num"] for f in await take(ws, 60, lambda _: True)]
        steps = [b - a for a, b in itertools.pairwise(numbers)]
        assert steps.count(2) == 1 and set(steps) == {1, 2}  # one number never sent
        assert sim.inject(Fault("duplicate")) == 1
        frames = await take(ws, 60, lambda _: True)
        numbers = [f["sequence_num"] for f in frames]
        steps = [b - a for a, b in itertools.pairwise(numbers)]
        assert steps.count(0) == 1 and set(steps) == {0, 1}  # one number sent twice
        twin = steps.index(0)
        assert frames[twin] == frames[twin + 1] and frames[twin]["channel"] == "l2_data"
        # no checksum and no server-shutdown message on this venue
        with pytest.raises(FaultError):
            sim.inject(Fault("bad_checksum"))
        with pytest.raises(FaultError):
            sim.inject(Fault("shutdown"))


async def test_replay_once_sends_each_frame_once_then_only_heartbeats() -> None:
    async with venue(replay_once=True, time_scale=0.02) as sim, client(sim.ws_url) as ws:
        await ws.send_str(request("subscribe", "heartbeats", []))
        await ws.send_str(request("subscribe", "level2", [PERP]))
        await ws.send_str(request("subscribe", "ticker", [SPOT]))
        frames: list[dict[str, Any]] = []
        while sum(f["channel"] == "heartbeats" for f in frames) < 10:
            frames.append(await recv(ws))
    assert [f["sequence_num"] for f in frames] == list(range(len(frames)))
    data = [f for f in frames if f["channel"] not in ("heartbeats", "subscriptions")]
    assert data == [
        as_sent(SNAPSHOT, data[0]["sequence_num"]),
        as_sent(readdressed_update(), data[1]["sequence_num"]),  # level2 was subscribed first
        as_sent(TICKER, data[2]["sequence_num"]),
    ]


async def test_closes_without_subscribe_within_5s() -> None:
    async with venue(time_scale=0.02) as sim, client(sim.ws_url) as ws:
        msg = await ws.receive(timeout=RECV_TIMEOUT)
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert msg.data == 1008


# ------------------------------------------------- the real plugin over the real transport


@asynccontextmanager
async def streaming(channels: str) -> AsyncIterator[tuple[VenueSimulator, Subscription]]:
    """An App running the simulator from its ``simulator:`` section (as a user's config
    does) and a coinbase_advanced feed at ``url: simulator``; yields (sim, every record)."""
    cfg = parse_config(
        f"""
simulator:
  exchange: coinbase_advanced
  rate: 100
  options: {{time_scale: 0.05}}
feeds:
  - exchange: coinbase_advanced
    url: simulator
    symbols: [BTC-USDC-PERP, BTC-USD]
    channels: [{channels}]
    stale_after: 10
    reconnect: {{initial: 0.05, max: 0.2}}
"""
    )
    app = App(cfg)
    sub = app.stream(maxsize=1_000_000)
    await app.start()
    try:
        sim = app.simulators["coinbase_advanced"]
        assert isinstance(sim, VenueSimulator) and sim.exchange == "coinbase_advanced"
        yield sim, sub
    finally:
        await app.stop()


async def collect_until(
    sub: Subscription, done: Callable[[list[Record]], bool], seen: list[Record] | None = None
) -> list[Record]:
    seen = [] if seen is None else seen
    try:
        async with asyncio.timeout(WITHIN):
            while not done(seen):
                seen.extend(await sub.get_batch())
    except TimeoutError:
        found = [(r.event.value, r.symbol) for r in seen if isinstance(r, Status)]
        pytest.fail(f"condition not met in {WITHIN} s; {len(seen)} records, statuses {found}")
    return seen


def books(records: list[Record]) -> list[Book]:
    return [r for r in records if isinstance(r, Book) and r.symbol == "BTC-USDC-PERP"]


def statuses(records: list[Record]) -> list[tuple[StatusEvent, str | None]]:
    return [(r.event, r.symbol) for r in records if isinstance(r, Status)]


def first_status(records: list[Record]) -> int:
    return next(i for i, r in enumerate(records) if isinstance(r, Status))


def strictly_increasing(seqs: list[int | None]) -> bool:
    numbers = [s for s in seqs if s is not None]
    return len(numbers) == len(seqs) and all(a < b for a, b in itertools.pairwise(numbers))


async def test_plugin_publishes_the_captured_values() -> None:
    def done(rs: list[Record]) -> bool:
        trades = [r for r in rs if isinstance(r, Trade)]
        kinds = {type(r) for r in rs}
        return len(books(rs)) >= 5 and len(trades) >= 6 and {Ticker, BBO} <= kinds

    async with streaming("l2_book, trades, ticker, bbo") as (_, sub):
        seen = await collect_until(sub, done)
    assert statuses(seen)[:2] == [(StatusEvent.CONNECTED, None), (StatusEvent.SUBSCRIBED, None)]
    assert {event for event, _ in statuses(seen)} == {
        StatusEvent.CONNECTED,
        StatusEvent.SUBSCRIBED,
    }
    # the book: the captured snapshot, then the captured update's levels, seq = sequence_num
    first, *deltas = books(seen)
    [snapshot_event] = SNAPSHOT["events"]
    assert first.snapshot and first.ts == ns(SNAPSHOT["timestamp"])
    assert sorted(first.bids, reverse=True) == sorted(levels(snapshot_event, "bid"), reverse=True)
    assert sorted(first.asks) == sorted(levels(snapshot_event, "offer"))
    [update_event] = UPDATE["events"]
    for delta in deltas:
        assert not delta.snapshot and delta.ts == ns(UPDATE["timestamp"])
        assert (delta.bids, delta.asks) == (
            levels(update_event, "bid"),
            levels(update_event, "offer"),
        )
    assert strictly_increasing([b.seq for b in books(seen)])
    # trades: the captured ones first (taker side), then the same trades with new ids
    trades = [r for r in seen if isinstance(r, Trade)]
    wire = TRADES["events"][0]["trades"]
    assert [(t.id, t.price, t.size, t.side, t.ts) for t in trades[:2]] == [
        (w["trade_id"], Decimal(w["price"]), Decimal(w["size"]), w["side"].lower(), ns(w["time"]))
        for w in wire
    ]
    assert all(t.symbol == SPOT for t in trades)
    ids = [int(t.id) for t in trades]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # no trade lost or repeated
    # ticker and BBO: the captured ticker's values
    [wire_ticker] = TICKER["events"][0]["tickers"]
    ticker = next(r for r in seen if isinstance(r, Ticker))
    assert (ticker.symbol, ticker.last, ticker.bid, ticker.ask, ticker.ts) == (
        SPOT,
        Decimal(wire_ticker["price"]),
        Decimal(wire_ticker["best_bid"]),
        Decimal(wire_ticker["best_ask"]),
        ns(TICKER["timestamp"]),
    )
    bbo = next(r for r in seen if isinstance(r, BBO))
    assert (bbo.bid_price, bbo.bid_size, bbo.ask_price, bbo.ask_size) == (
        Decimal(wire_ticker["best_bid"]),
        Decimal(wire_ticker["best_bid_quantity"]),
        Decimal(wire_ticker["best_ask"]),
        Decimal(wire_ticker["best_ask_quantity"]),
    )


async def test_sequence_gap_reports_gap_resyncs_and_the_book_recovers() -> None:
    def live(rs: list[Record]) -> bool:
        subscribed = (StatusEvent.SUBSCRIBED, None) in statuses(rs)
        return subscribed and len(books(rs)) >= 3

    async with streaming("l2_book, trades") as (sim, sub):
        seen = await collect_until(sub, live)
        assert sim.inject(Fault("gap", symbol=PERP)) == 1
        start = len(seen)

        def recovered(rs: list[Record]) -> bool:
            tail = rs[start:]
            if (StatusEvent.RESYNC, "BTC-USDC-PERP") not in statuses(tail):
                return False
            after = books(tail[first_status(tail) :])
            return bool(after) and after[0].snapshot and len(after) >= 4

        await collect_until(sub, recovered, seen)
        [conn] = sim.stats.connections
    tail = seen[start:]
    # connection-wide (any channel may have lost the message), then every book of the
    # connection (BTC-USD's level2 is subscribed too, and silent: its book was not captured)
    assert statuses(tail) == [
        (StatusEvent.GAP, None),
        (StatusEvent.GAP, "BTC-USDC-PERP"),
        (StatusEvent.RESYNC, "BTC-USDC-PERP"),
        (StatusEvent.GAP, SPOT),
        (StatusEvent.RESYNC, SPOT),
    ]
    [gap] = [r for r in tail if isinstance(r, Status) and r.symbol is None]
    assert gap.detail.endswith(": 1 lost") and gap.detail.startswith("sequence_num ")
    # nothing is published for the book between the gap and the fresh snapshot, which is
    # the captured one again, followed by the captured update
    fresh, *more = books(tail[first_status(tail) :])
    [snapshot_event] = SNAPSHOT["events"]
    assert fresh.snapshot
    assert sorted(fresh.asks) == sorted(levels(snapshot_event, "offer"))
    assert sorted(fresh.bids, reverse=True) == sorted(levels(snapshot_event, "bid"), reverse=True)
    assert more and not any(b.snapshot for b in more)
    assert strictly_increasing([b.seq for b in (fresh, *more)])
    assert StatusEvent.DISCONNECTED not in {e for e, _ in statuses(seen)}  # no reconnect
    # the resync was an unsubscribe + subscribe of level2 on the same connection
    # (requests: heartbeats, market_trades, level2, then level2 unsubscribe + subscribe)
    assert conn.open and conn.messages_received == 5
    # trades went on across the gap: ids only move forward (the withheld frame was a book's)
    ids = [int(r.id) for r in seen if isinstance(r, Trade)]
    assert ids == sorted(set(ids))
