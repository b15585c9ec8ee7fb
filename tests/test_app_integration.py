"""The whole pipeline against the built-in simulator over real loopback WebSockets:
libcurl transport -> actor -> Binance plugin -> bus -> consumers and sinks."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from streamkit.app import App
from streamkit.channel import Subscription
from streamkit.config import AppConfig, parse_config
from streamkit.errors import ConfigError
from streamkit.model import BBO, Book, Record, Status, StatusEvent, Trade, decode_json
from streamkit.simulator import BinanceSimulator, Fault


def config(text: str) -> AppConfig:
    return parse_config(text)


def feed_yaml(
    url: str, rest_url: str, *, channels: str = "[trades, bbo, l2_book]", extra: str = ""
) -> str:
    return f"""
feeds:
  - exchange: binance
    url: {url}
    rest_url: {rest_url}
    symbols: [NKN-USDT]
    channels: {channels}
    stale_after: 5
    reconnect: {{initial: 0.05, max: 0.2}}
{extra}
"""


@pytest.fixture
async def sim() -> AsyncIterator[BinanceSimulator]:
    simulator = BinanceSimulator(rate=100.0, ping_interval=0.5)
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


async def collect_until(
    sub: Subscription, done: Callable[[list[Record]], bool], within: float = 10.0
) -> list[Record]:
    seen: list[Record] = []
    async with asyncio.timeout(within):
        while not done(seen):
            seen.extend(await sub.get_batch())
    return seen


def events(records: list[Record]) -> list[StatusEvent]:
    return [r.event for r in records if isinstance(r, Status)]


def has_after(records: list[Record], event: StatusEvent, kind: type[Record]) -> bool:
    """True once a ``kind`` record arrived after the last ``event`` status."""
    idx = [i for i, r in enumerate(records) if isinstance(r, Status) and r.event is event]
    return bool(idx) and any(isinstance(r, kind) for r in records[idx[-1] + 1 :])


async def test_demo_config_streams_typed_records(tmp_path: Path) -> None:
    cfg = config(
        f"""
simulator: {{rate: 100}}
feeds:
  - exchange: binance
    url: simulator
    symbols: [NKN-USDT, LRC-BTC]
    channels: [trades, bbo, l2_book]
sinks:
  - type: jsonl
    path: {tmp_path / "out.jsonl"}
"""
    )
    app = App(cfg)
    sub = app.stream(maxsize=100_000)
    await app.start()
    try:
        seen = await collect_until(
            sub,
            lambda rs: (
                sum(isinstance(r, Trade) for r in rs) >= 5
                and sum(isinstance(r, Book) and not r.snapshot for r in rs) >= 5
            ),
        )
    finally:
        await app.stop()
    assert events(seen)[:2] == [StatusEvent.CONNECTED, StatusEvent.SUBSCRIBED]
    trades = [r for r in seen if isinstance(r, Trade)]
    assert {t.symbol for t in trades} <= {"NKN-USDT", "LRC-BTC"}
    assert all(t.side in ("buy", "sell") and t.price > 0 and t.size > 0 for t in trades)
    bbos = [r for r in seen if isinstance(r, BBO)]
    assert bbos and all(b.bid_price < b.ask_price for b in bbos)
    books = [r for r in seen if isinstance(r, Book) and r.symbol == "NKN-USDT"]
    assert books[0].snapshot, "a book starts with a verified snapshot"
    seqs = [b.seq for b in books]
    assert seqs == sorted(seqs)
    # the jsonl sink wrote every record the bus carried, in the DESIGN.md format
    lines = (tmp_path / "out.jsonl").read_bytes().splitlines()
    assert len(lines) >= len(seen)
    first = msgspec.json.decode(lines[0])
    assert set(first) >= {"type", "exchange", "symbol", "ts", "recv_ts"}
    written = [decode_json(line) for line in lines]
    assert [r for r in written if isinstance(r, Trade)][:5] == trades[:5]
    trade_json = msgspec.json.decode(next(line for line in lines if b'"type":"trade"' in line))
    assert isinstance(trade_json["price"], str) and Decimal(trade_json["price"]) > 0
    assert isinstance(trade_json["id"], str)


async def test_reconnect_after_drop_resubscribes(sim: BinanceSimulator) -> None:
    app = App(config(feed_yaml(sim.ws_url, sim.rest_url)))
    sub = app.stream(maxsize=100_000)
    await app.start()
    try:
        await collect_until(sub, lambda rs: any(isinstance(r, Trade) for r in rs))
        assert sim.inject(Fault("drop")) == 1
        seen = await collect_until(
            sub,
            lambda rs: (
                StatusEvent.RECONNECTING in events(rs)
                and has_after(rs, StatusEvent.SUBSCRIBED, Trade)
                and has_after(rs, StatusEvent.SUBSCRIBED, Book)
            ),
        )
    finally:
        await app.stop()
    ev = events(seen)
    i = ev.index(StatusEvent.DISCONNECTED)
    assert ev[i : i + 4] == [
        StatusEvent.DISCONNECTED,
        StatusEvent.RECONNECTING,
        StatusEvent.CONNECTED,
        StatusEvent.SUBSCRIBED,
    ]
    # after the reconnect the book starts again from a fresh verified snapshot
    assert has_after(seen, StatusEvent.SUBSCRIBED, Book)
    after = seen[[k for k, r in enumerate(seen) if isinstance(r, Status)][-1] :]
    first_book = next(r for r in after if isinstance(r, Book))
    assert first_book.snapshot
    assert app.actors[0].counters.connects == 2


async def test_stale_when_only_heartbeats_arrive(sim: BinanceSimulator) -> None:
    cfg = config(feed_yaml(sim.ws_url, sim.rest_url).replace("stale_after: 5", "stale_after: 1"))
    app = App(cfg)
    sub = app.stream(maxsize=100_000)
    await app.start()
    try:
        await collect_until(sub, lambda rs: any(isinstance(r, Trade) for r in rs))
        sim.inject(Fault("stall"))  # pings keep flowing, data stops
        stalled_at = time.monotonic()
        seen = await collect_until(sub, lambda rs: StatusEvent.STALE in events(rs))
        took = time.monotonic() - stalled_at
        seen += await collect_until(sub, lambda rs: has_after(rs, StatusEvent.SUBSCRIBED, Trade))
    finally:
        await app.stop()
    assert 0.9 <= took < 4.0
    ev = events(seen)
    assert ev[ev.index(StatusEvent.STALE) :][:3] == [
        StatusEvent.STALE,
        StatusEvent.DISCONNECTED,
        StatusEvent.RECONNECTING,
    ]
    assert app.actors[0].counters.stale == 1


def captured_final_book(capture: list[dict[str, Any]]) -> dict[str, Any]:
    """The book after the whole captured NKNUSDT sequence, computed from the package data."""
    rows = [r for r in capture if r.get("group") == "binance-spot-depth-NKNUSDT"]
    snap = json.loads(next(r["raw"] for r in rows if r["kind"] == "rest_book_snapshot"))
    bids = {Decimal(p): Decimal(q) for p, q in snap["bids"]}
    asks = {Decimal(p): Decimal(q) for p, q in snap["asks"]}
    last = snap["lastUpdateId"]
    for r in rows:
        if r["kind"] != "book_delta":
            continue
        d = json.loads(r["raw"])["data"]
        if d["u"] <= last:
            continue
        for side, key in ((bids, "b"), (asks, "a")):
            for p, q in d[key]:
                if Decimal(q) == 0:
                    side.pop(Decimal(p), None)
                else:
                    side[Decimal(p)] = Decimal(q)
        last = d["u"]
    return {"bids": bids, "asks": asks, "u": last}


async def test_gap_resyncs_book_to_the_captured_sequence(
    binance_capture: list[dict[str, Any]],
) -> None:
    want = captured_final_book(binance_capture)
    simulator = BinanceSimulator(rate=60.0, replay_once=True)
    await simulator.start()
    try:
        app = App(config(feed_yaml(simulator.ws_url, simulator.rest_url, channels="[l2_book]")))
        sub = app.stream(Book, maxsize=100_000)
        statuses = app.stream(Status, maxsize=1000)
        await app.start()
        try:
            books = await collect_until(sub, lambda rs: len(rs) >= 20)
            assert simulator.inject(Fault("gap", symbol="NKNUSDT")) >= 1
            books += await collect_until(
                sub,
                lambda rs: bool(rs) and rs[-1].seq == want["u"],  # type: ignore[attr-defined]
            )
        finally:
            await app.stop()
        status_events = events(statuses.drain_nowait())
    finally:
        await simulator.stop()
    assert StatusEvent.GAP in status_events and StatusEvent.RESYNC in status_events
    # rebuild the book a consumer sees: it must equal the captured sequence's final book
    bids: dict[Decimal, Decimal] = {}
    asks: dict[Decimal, Decimal] = {}
    snapshots = 0
    for b in books:
        assert isinstance(b, Book)
        if b.snapshot:
            snapshots += 1
            bids, asks = dict(b.bids), dict(b.asks)
            continue
        for side, levels in ((bids, b.bids), (asks, b.asks)):
            for p, q in levels:
                if q == 0:
                    side.pop(p, None)
                else:
                    side[p] = q
    assert snapshots == 2  # the initial sync and the resync after the gap
    assert bids == want["bids"] and asks == want["asks"]


async def test_decode_errors_are_counted_and_the_stream_goes_on(sim: BinanceSimulator) -> None:
    app = App(config(feed_yaml(sim.ws_url, sim.rest_url, channels="[trades]")))
    sub = app.stream(maxsize=100_000)
    await app.start()
    try:
        await collect_until(sub, lambda rs: any(isinstance(r, Trade) for r in rs))
        sim.inject(Fault("garbage", text="this is not json"))
        seen = await collect_until(sub, lambda rs: has_after(rs, StatusEvent.DECODE_ERROR, Trade))
    finally:
        await app.stop()
    [err] = [r for r in seen if isinstance(r, Status) and r.event is StatusEvent.DECODE_ERROR]
    assert "this is not json" in err.detail
    assert err.connection == "binance/0"
    assert StatusEvent.DISCONNECTED not in events(seen)
    assert app.actors[0].counters.decode_errors == 1


async def test_oversize_frame_kills_connection_and_recovers(sim: BinanceSimulator) -> None:
    extra_transport = "    transport: {max_message_size: 65536}"
    app = App(config(feed_yaml(sim.ws_url, sim.rest_url, channels="[trades]") + extra_transport))
    sub = app.stream(maxsize=100_000)
    await app.start()
    try:
        await collect_until(sub, lambda rs: any(isinstance(r, Trade) for r in rs))
        sim.inject(Fault("oversize", size=200_000))
        seen = await collect_until(sub, lambda rs: has_after(rs, StatusEvent.SUBSCRIBED, Trade))
    finally:
        await app.stop()
    disconnect = next(
        r for r in seen if isinstance(r, Status) and r.event is StatusEvent.DISCONNECTED
    )
    assert "large" in disconnect.detail.lower() or "size" in disconnect.detail.lower()


async def test_slow_consumers_under_each_policy(sim: BinanceSimulator) -> None:
    app = App(config(feed_yaml(sim.ws_url, sim.rest_url, channels="[trades, bbo]")))
    fast = app.stream(Trade, maxsize=100_000, name="fast")
    blocking = app.stream(Trade, maxsize=8, policy="block", name="block")
    dropping = app.stream(Trade, maxsize=8, policy="drop_oldest", name="drop")
    conflating = app.stream(BBO, maxsize=8, policy="conflate", name="conflate")
    cut = app.stream(Trade, maxsize=4, policy="disconnect", name="cut")
    got_block: list[Record] = []

    async def slow_reader() -> None:
        async for rec in blocking:
            got_block.append(rec)
            await asyncio.sleep(0.005)

    await app.start()
    reader = asyncio.create_task(slow_reader())
    try:
        fast_all = await collect_until(fast, lambda rs: len(rs) >= 60)
        await asyncio.sleep(0.3)
    finally:
        await app.stop()
        await asyncio.wait_for(reader, 5)
    fast_all += [rec async for rec in fast]  # what was still queued at shutdown
    # block: lossless and in order, even though the reader is slower than the feed
    assert got_block == fast_all
    assert blocking.dropped == 0 and blocking.max_depth <= 8
    # drop_oldest: never more than maxsize queued; every record delivered or counted
    assert dropping.max_depth <= 8
    assert dropping.delivered + dropping.dropped + dropping.depth == len(fast_all)
    assert dropping.dropped > 0
    # conflate: bounded, latest per symbol kept
    assert conflating.max_depth <= 8
    # disconnect: the slow subscriber was cut off, the others were not affected
    assert cut.cut_off
    assert fast.dropped == 0


async def test_unknown_channel_is_a_config_error_naming_the_key(sim: BinanceSimulator) -> None:
    app = App(config(feed_yaml(sim.ws_url, sim.rest_url, channels="[trades, orderbook]")))
    with pytest.raises(ConfigError) as info:
        await app.start()
    [(path, msg)] = info.value.problems
    assert path == "feeds[0].channels[1]"
    assert "orderbook" in msg


async def test_crashed_consumer_cannot_stall_the_feed_forever(sim: BinanceSimulator) -> None:
    app = App(config(feed_yaml(sim.ws_url, sim.rest_url, channels="[trades, bbo]")))
    healthy = app.stream(Trade, maxsize=100_000, name="healthy")
    # a consumer that took one record and then died without closing its subscription
    abandoned = app.stream(maxsize=4, name="abandoned", block_timeout=0.5)
    statuses = app.stream(Status, maxsize=1000, policy="drop_oldest", name="statuses")
    await app.start()
    try:
        await abandoned.get()
        got = await collect_until(healthy, lambda rs: len(rs) >= 40)
        cut = await collect_until(
            statuses,
            lambda rs: any(
                isinstance(r, Status) and "abandoned" in r.detail and "cut off" in r.detail
                for r in rs
            ),
        )
    finally:
        await app.stop()
    assert abandoned.cut_off and len(got) >= 40
    assert any(isinstance(r, Status) and r.event is StatusEvent.DISCONNECTED for r in cut)
