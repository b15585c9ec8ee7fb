"""Sink throughput: records/s into NATS JetStream and Redis Streams, with in-run baselines.

    python bench/sinks.py [--records 100000] [--nats URL] [--redis URL]

For each broker it measures, in the same run:

- baseline: the raw client writing pre-encoded payloads as fast as it can (nats-py
  ``publish_async`` + ack of every message; redis-py non-transactional ``XADD`` pipelines of
  512) — the ceiling for a Python producer on this machine;
- streamkit: the sink taking Trade records off a ``block`` subscription, encoding (msgpack),
  publishing with acks / pipelining, counting.

Every run checks that every record arrived (stream message count / XLEN and the last
record's id), and cleans up its stream/keys.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from decimal import Decimal
from typing import Any

import msgspec

from streamkit.channel import Bus
from streamkit.config import NatsSinkConfig, NatsStreamConfig, RedisSinkConfig
from streamkit.model import Record, Trade
from streamkit.sinks import build_sink
from streamkit.sinks.base import subscribe_sink


def make_trades(n: int) -> list[Record]:
    return [
        Trade(
            exchange="bench",
            symbol="BTC-USDT",
            ts=1_700_000_000_000_000_000 + i,
            recv_ts=1_700_000_000_000_000_000 + i,
            price=Decimal("27000.10"),
            size=Decimal("0.001"),
            side="buy",
            id=str(i),
        )
        for i in range(n)
    ]


async def through_sink(cfg: Any, records: list[Record]) -> tuple[float, Any]:
    bus = Bus()
    sink = build_sink("bench", cfg)
    sub = subscribe_sink(bus, sink.name, cfg)
    task = asyncio.create_task(sink.run(sub))
    await asyncio.sleep(0.2)  # connect + stream setup outside the timed part
    started = time.perf_counter()
    for i in range(0, len(records), 1000):
        await bus.publish_many(records[i : i + 1000])
    bus.close()
    await task
    return time.perf_counter() - started, sink


async def bench_nats(url: str, records: list[Record]) -> list[tuple[str, float]]:
    import nats
    from nats.js.api import StorageType, StreamConfig

    nc = await nats.connect(url)
    js = nc.jetstream(publish_async_max_pending=4096)
    results = []
    n = len(records)
    payload = msgspec.msgpack.encode(records[0])
    # baseline: raw publish_async of pre-encoded bytes, every ack awaited
    name, subj = f"BENCH_{uuid.uuid4().hex[:8]}", f"bench{uuid.uuid4().hex[:8]}"
    await js.add_stream(StreamConfig(name=name, subjects=[subj + ".>"], storage=StorageType.FILE))
    started = time.perf_counter()
    for i in range(0, n, 512):
        futs = [await js.publish_async(subj + ".x", payload) for _ in range(min(512, n - i))]
        await asyncio.gather(*futs)
    elapsed = time.perf_counter() - started
    assert (await js.stream_info(name)).state.messages == n, "baseline lost messages"
    await js.delete_stream(name)
    results.append(("nats raw publish_async (pre-encoded)", n / elapsed))

    name, subj = f"BENCH_{uuid.uuid4().hex[:8]}", f"bench{uuid.uuid4().hex[:8]}"
    cfg = NatsSinkConfig(
        url=url,
        subject=subj + ".{type}.{exchange}.{symbol}",
        stream=NatsStreamConfig(name=name, subjects=[subj + ".>"]),
    )
    elapsed, sink = await through_sink(cfg, records)
    info = await js.stream_info(name)
    assert sink.sent == n and info.state.messages == n, (sink.stats(), info.state.messages)
    last = await js.get_msg(name, info.state.last_seq)
    assert msgspec.msgpack.decode(last.data, type=Trade).id == str(n - 1)
    await js.delete_stream(name)
    results.append(("streamkit nats sink (encode + acked publish)", n / elapsed))
    await nc.close()
    return results


async def bench_redis(url: str, records: list[Record]) -> list[tuple[str, float]]:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    n = len(records)
    payload = msgspec.msgpack.encode(records[0])
    results = []
    key = f"bench:{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    for i in range(0, n, 512):
        pipe = client.pipeline(transaction=False)
        for _ in range(min(512, n - i)):
            pipe.xadd(key, {"type": "trade", "schema": "1", "data": payload})
        await pipe.execute()
    elapsed = time.perf_counter() - started
    assert await client.xlen(key) == n, "baseline lost entries"
    await client.delete(key)
    results.append(("redis raw XADD pipeline (pre-encoded)", n / elapsed))

    prefix = f"bench:{uuid.uuid4().hex[:8]}"
    cfg = RedisSinkConfig(url=url, key=prefix + ":{type}:{exchange}:{symbol}", maxlen=None)
    elapsed, sink = await through_sink(cfg, records)
    key = f"{prefix}:trade:bench:BTC-USDT"
    assert sink.sent == n and await client.xlen(key) == n
    last = await client.xrevrange(key, count=1)
    assert msgspec.msgpack.decode(last[0][1][b"data"], type=Trade).id == str(n - 1)
    await client.delete(key)
    results.append(("streamkit redis sink (encode + pipelined XADD)", n / elapsed))
    await client.aclose()
    return results


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument(
        "--nats", default=os.environ.get("STREAMKIT_NATS_URL", "nats://127.0.0.1:4222")
    )
    parser.add_argument(
        "--redis", default=os.environ.get("STREAMKIT_REDIS_URL", "redis://127.0.0.1:6379")
    )
    args = parser.parse_args()
    records = make_trades(args.records)
    rows = await bench_nats(args.nats, records) + await bench_redis(args.redis, records)
    print(f"{'scenario':<50} {'records/s':>12}   ({args.records} records, all checked)")
    for name, rate in rows:
        print(f"{name:<50} {rate:>12,.0f}")


if __name__ == "__main__":
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    asyncio.run(main())
