"""Typed remote streams over the real NATS and Redis servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from brokers import (
    NATS_URL,
    REDIS_URL,
    gap_status,
    nats_or_skip,
    publish_paced,
    redis_or_skip,
    take,
    trades,
    unique,
)

from streamkit import remote
from streamkit.app import App
from streamkit.channel import Bus
from streamkit.config import NatsSinkConfig, NatsStreamConfig, RedisSinkConfig, parse_config
from streamkit.model import BBO, Record, Status, Trade
from streamkit.simulator import BinanceSimulator
from streamkit.sinks import build_sink
from streamkit.sinks.base import subscribe_sink

pytest.importorskip("nats")


@pytest.fixture
async def jetstream() -> AsyncIterator[tuple[str, str]]:
    """A unique (stream, subject prefix) on the real server; deleted afterwards."""
    nc: Any = await nats_or_skip()
    name, prefix = unique("SKREMOTE_"), unique("rm")
    yield name, prefix
    try:
        await nc.jetstream().delete_stream(name)
    finally:
        await nc.close()


def nats_sink(name: str, prefix: str) -> NatsSinkConfig:
    return NatsSinkConfig(
        url=NATS_URL,
        subject=prefix + ".{type}.{exchange}.{symbol}",
        stream=NatsStreamConfig(name=name, subjects=[prefix + ".>"], storage="memory"),
    )


async def publish_through_sink(
    cfg: NatsSinkConfig | RedisSinkConfig, records: list[Record]
) -> None:
    bus = Bus()
    sink = build_sink("remote-test", cfg)
    sub = subscribe_sink(bus, sink.name, cfg)
    task = asyncio.create_task(sink.run(sub))
    await publish_paced(bus, records)
    bus.close()
    await asyncio.wait_for(task, 30)


def bbo(symbol: str) -> BBO:
    return BBO(
        exchange="testex",
        symbol=symbol,
        ts=1,
        recv_ts=2,
        bid_price=trades(1)[0].price,
        bid_size=trades(1)[0].size,
        ask_price=trades(1)[0].price,
        ask_size=trades(1)[0].size,
    )


def test_filter_subjects() -> None:
    t = "md.{type}.{exchange}.{symbol}"
    assert remote.stream("nats://x", Trade, "binance", "BTC-USDT").subject == (
        "md.trade.binance.BTC-USDT"
    )
    assert remote.stream("nats://x", Trade, "binance", "BTC-*").subject == "md.trade.binance.*"
    # Status records with a null symbol must get through a symbol filter.
    assert remote.stream("nats://x", None, "binance", "BTC-USDT").subject == "md.*.binance.*"
    assert remote.stream("nats://x", [Trade, BBO], subject=t).subject == "md.*.*.*"


class SwallowingFetch:
    """A pull subscription whose fetch loses a cancel the way nats-py's does on CPython 3.11
    (asyncio.wait_for returning the message that arrived as the cancel landed)."""

    def __init__(self, msgs: list[object]) -> None:
        self.msgs = msgs
        self.calls = 0

    async def fetch(self, batch: int, timeout: float) -> list[object]:  # noqa: ASYNC109 (nats-py's signature)
        self.calls += 1
        if self.calls > 1:
            raise AssertionError("fetched again after the reader was cancelled")
        try:
            await asyncio.sleep(timeout)
        except asyncio.CancelledError:
            return self.msgs
        return []


async def test_a_cancel_lost_inside_fetch_still_ends_the_read() -> None:
    rs = remote.stream("nats://x", Trade)
    fetched = [object(), object()]
    rs._nc, rs._psub = object(), SwallowingFetch(fetched)  # open() then does nothing
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await rs.__anext__()
    assert rs._psub.calls == 1
    # What the lost fetch returned is kept, for close() to hand back (nak) to the server.
    assert list(rs._buffer) == fetched


class SwallowingXread:
    """A Redis client whose XREAD loses a cancel, as redis-py's does under a live stream."""

    def __init__(self) -> None:
        self.calls = 0

    async def xread(self, positions: dict[bytes, bytes], count: int, block: int) -> object:
        self.calls += 1
        if self.calls > 1:
            raise AssertionError("read again after the reader was cancelled")
        try:
            await asyncio.sleep(block / 1000)
        except asyncio.CancelledError:
            return [[b"md:trade:binance:BTC-USDT", [(b"7-0", {b"data": b"x"})]]]
        return []


async def test_a_cancel_lost_inside_xread_still_ends_the_read() -> None:
    rs = remote.stream_redis("redis://x", Trade)
    rs._client = SwallowingXread()
    rs._positions = {b"md:trade:binance:BTC-USDT": b"5-0"}
    rs._scanned_at = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await rs.__anext__()
    assert rs._client.calls == 1
    # The dropped reply moved no position: the next read asks for the same entries again.
    assert rs._positions == {b"md:trade:binance:BTC-USDT": b"5-0"}


async def test_typed_records_with_filters(jetstream: tuple[str, str]) -> None:
    name, prefix = jetstream
    btc, eth = trades(50, symbol="BTC-USDT"), trades(20, symbol="ETH-USDT")
    records: list[Record] = [*btc[:25], *eth, bbo("BTC-USDT"), gap_status(symbol=None), *btc[25:]]
    await publish_through_sink(nats_sink(name, prefix), records)
    subject = prefix + ".{type}.{exchange}.{symbol}"

    async with remote.stream(
        NATS_URL, Trade, exchange="testex", symbol="BTC-*", stream=name, subject=subject
    ) as only_btc:
        assert await take(only_btc, 50) == btc

    async with remote.stream(NATS_URL, None, symbol="BTC-USDT", stream=name, subject=subject) as s:
        got = await take(s, 52)
    assert got == [*btc[:25], bbo("BTC-USDT"), gap_status(symbol=None), *btc[25:]]
    assert isinstance(got[26], Status) and got[26].symbol is None


async def test_durable_consumer_resumes_where_it_left_off(jetstream: tuple[str, str]) -> None:
    name, prefix = jetstream
    records: list[Record] = list(trades(300))
    await publish_through_sink(nats_sink(name, prefix), records)
    durable = unique("reader_")
    opts: dict[str, Any] = {
        "stream": name,
        "subject": prefix + ".{type}.{exchange}.{symbol}",
        "durable": durable,
        "batch": 64,
    }

    async with remote.stream(NATS_URL, Trade, **opts) as first:
        assert await take(first, 10) == records[:10]
    # Closed and reopened (a restarted process): continues after the last record it had.
    async with remote.stream(NATS_URL, Trade, **opts) as second:
        assert await take(second, 100) == records[10:110]
    # An exception inside the block leaves the record in hand unacknowledged: it comes back.
    with pytest.raises(RuntimeError):
        async with remote.stream(NATS_URL, Trade, **opts) as third:
            assert await take(third, 1) == records[110:111]
            raise RuntimeError("consumer crashed")
    async with remote.stream(NATS_URL, Trade, **opts) as fourth:
        assert await take(fourth, 190) == records[110:]


async def test_app_to_remote_consumer_every_record_in_order(jetstream: tuple[str, str]) -> None:
    """The whole path: simulator -> App -> NATS sink (block) -> remote consumer, compared
    with what a local subscriber of the same App saw."""
    name, prefix = jetstream
    sim = BinanceSimulator(rate=200.0)
    await sim.start()
    try:
        cfg = parse_config(
            f"""
feeds:
  - exchange: binance
    url: {sim.ws_url}
    rest_url: {sim.rest_url}
    symbols: [NKN-USDT]
    channels: [trades, bbo]
sinks:
  - type: nats
    url: {NATS_URL}
    subject: "{prefix}.{{type}}.{{exchange}}.{{symbol}}"
    stream: {{name: {name}, subjects: ["{prefix}.>"], storage: memory}}
"""
        )
        app = App(cfg)
        local = app.stream([Trade, BBO], maxsize=100_000)
        await app.run(duration=1.5)
    finally:
        await sim.stop()
    expected = local.drain_nowait()
    assert len(expected) > 50
    async with remote.stream(
        NATS_URL, [Trade, BBO], stream=name, subject=prefix + ".{type}.{exchange}.{symbol}"
    ) as s:
        assert await take(s, len(expected)) == expected
    assert app.sinks[0].written > len(expected)  # the status records went out too


async def test_redis_consumer_group_resumes() -> None:
    client: Any = await redis_or_skip()
    prefix = unique("skremote:")
    try:
        records: list[Record] = list(trades(200))
        key = prefix + ":{type}:{exchange}:{symbol}"
        await publish_through_sink(RedisSinkConfig(url=REDIS_URL, key=key), records)
        opts: dict[str, Any] = {"key": key, "group": unique("g"), "start": "all", "batch": 32}
        async with remote.stream_redis(REDIS_URL, Trade, symbol="BTC-*", **opts) as first:
            assert await take(first, 20) == records[:20]
        async with remote.stream_redis(REDIS_URL, Trade, symbol="BTC-*", **opts) as second:
            assert await take(second, 180) == records[20:]
        async with remote.stream_redis(REDIS_URL, Trade, key=key, start="all") as plain:
            assert await take(plain, 200) == records
    finally:
        keys = [k async for k in client.scan_iter(match=prefix + ":*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
