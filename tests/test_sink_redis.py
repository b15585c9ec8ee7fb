"""The Redis Streams sink against the real redis-server (never mocked)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from brokers import REDIS_URL, gap_status, publish_paced, redis_or_skip, trades, unique

from streamkit.channel import Bus
from streamkit.config import RedisSinkConfig, RetryOptions, parse_config
from streamkit.model import SCHEMA_VERSION, Record
from streamkit.sinks import build_sink
from streamkit.sinks.base import subscribe_sink
from streamkit.sinks.redis import RedisSink
from streamkit.sinks.wire import decode

pytest.importorskip("redis")


@pytest.fixture
async def client() -> AsyncIterator[Any]:
    c: Any = await redis_or_skip()
    yield c
    await c.aclose()


@pytest.fixture
async def prefix(client: Any) -> AsyncIterator[str]:
    """A unique key prefix; every key under it is deleted afterwards."""
    p = unique("sktest:")
    yield p
    keys = [k async for k in client.scan_iter(match=p + ":*")]
    if keys:
        await client.delete(*keys)


def sink_config(prefix: str, **kw: Any) -> RedisSinkConfig:
    return RedisSinkConfig(url=REDIS_URL, key=prefix + ":{type}:{exchange}:{symbol}", **kw)


async def run_sink(
    cfg: RedisSinkConfig, records: list[Record], *, chunk: int = 100
) -> tuple[RedisSink, Bus, asyncio.Task[None]]:
    bus = Bus()
    sink = build_sink("redis-test", cfg)
    assert isinstance(sink, RedisSink)
    sub = subscribe_sink(bus, sink.name, cfg)
    task = asyncio.create_task(sink.run(sub))
    await publish_paced(bus, records, chunk=chunk)
    return sink, bus, task


async def finish(bus: Bus, task: asyncio.Task[None]) -> None:
    bus.close()
    await asyncio.wait_for(task, 30)


def test_config_decodes_from_yaml() -> None:
    cfg = parse_config(
        """
feeds: [{exchange: binance, symbols: [BTC-USDT], channels: [trades]}]
sinks:
  - {type: redis, maxlen: 5000, encoding: json, key: "x:{exchange}:{symbol}"}
"""
    )
    sink = cfg.sinks[0]
    assert isinstance(sink, RedisSinkConfig)
    assert (sink.maxlen, sink.encoding, sink.key) == (5000, "json", "x:{exchange}:{symbol}")


async def test_every_record_arrives_in_order(client: Any, prefix: str) -> None:
    records: list[Record] = [*trades(3000), gap_status(), gap_status(symbol=None)]
    sink, bus, task = await run_sink(sink_config(prefix, batch_size=300), records)
    await finish(bus, task)
    assert sink.stats() == {"sent": 3002, "failed": 0, "retried": 0, "dropped": 0}

    entries = await client.xrange(f"{prefix}:trade:testex:BTC-USDT")
    assert len(entries) == 3000
    fields = entries[0][1]
    assert fields[b"type"] == b"trade"
    assert fields[b"schema"] == str(SCHEMA_VERSION).encode()
    assert fields[b"encoding"] == b"msgpack"
    decoded = [decode(f[b"data"], f[b"type"].decode(), f[b"encoding"].decode()) for _, f in entries]
    assert decoded == records[:3000]
    status_sym = await client.xrange(f"{prefix}:status:testex:BTC-USDT")
    status_null = await client.xrange(f"{prefix}:status:testex:_")
    assert [decode(f[b"data"], "status", None) for _, f in status_sym + status_null] == records[
        3000:
    ]


async def test_json_encoding(client: Any, prefix: str) -> None:
    records: list[Record] = list(trades(3))
    _, bus, task = await run_sink(sink_config(prefix, encoding="json"), records)
    await finish(bus, task)
    entries = await client.xrange(f"{prefix}:trade:testex:BTC-USDT")
    assert msgspec.json.decode(entries[0][1][b"data"])["price"] == "27000.10"
    assert [decode(f[b"data"], "trade", "json") for _, f in entries] == records


async def test_maxlen_trims_approximately(client: Any, prefix: str) -> None:
    n, cap = 5000, 1000
    sink, bus, task = await run_sink(sink_config(prefix, maxlen=cap), list(trades(n)))
    await finish(bus, task)
    assert sink.sent == n
    key = f"{prefix}:trade:testex:BTC-USDT"
    length = await client.xlen(key)
    # "~" trims whole macro nodes (100 entries by default): never below the cap, a bit above.
    assert cap <= length < cap + 200
    last = await client.xrevrange(key, count=1)
    assert decode(last[0][1][b"data"], "trade", None).id == str(n - 1)  # type: ignore[union-attr]


async def test_rejected_commands_are_dropped_and_counted(client: Any, prefix: str) -> None:
    # The key is a plain string, so XADD fails with WRONGTYPE: retrying cannot help.
    await client.set(f"{prefix}:trade:testex:BTC-USDT", "not a stream")
    records: list[Record] = [*trades(4), gap_status()]
    sink, bus, task = await run_sink(sink_config(prefix), records)
    await finish(bus, task)
    assert sink.stats() == {"sent": 1, "failed": 4, "retried": 0, "dropped": 4}


async def test_connection_killed_mid_stream_loses_nothing(client: Any, prefix: str) -> None:
    """Kill the sink's Redis connection repeatedly while it writes: every record ends up in
    the stream (at-least-once: a batch whose replies were lost may be written twice)."""
    n = 10_000
    records = trades(n)
    cfg = sink_config(prefix, batch_size=200, retry=RetryOptions(initial=0.01, max=0.05))
    sink, bus, task = await run_sink(cfg, records[:2000])
    kills = 0
    for i in range(2000, n, 500):
        await publish_paced(bus, records[i : i + 500], chunk=50)
        for info in await client.client_list():
            if info.get("name") == f"streamkit:{sink.name}":
                await client.client_kill_filter(_id=info["id"])
                kills += 1
    await finish(bus, task)
    assert kills > 0 and sink.retried > 0  # the kills did hit batches in flight
    assert sink.sent == n and sink.dropped == 0
    entries = await client.xrange(f"{prefix}:trade:testex:BTC-USDT")
    ids = [int(decode(f[b"data"], "trade", None).id) for _, f in entries]  # type: ignore[union-attr]
    assert set(ids) == set(range(n))
    # Duplicates only ever come from re-sent batches: consecutive runs, never reordering.
    seen: set[int] = set()
    first_seen = [x for x in ids if not (x in seen or seen.add(x))]  # type: ignore[func-returns-value]
    assert first_seen == list(range(n))
