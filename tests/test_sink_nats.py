"""The NATS JetStream sink against the real nats-server (never mocked)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from brokers import (
    NATS_URL,
    gap_status,
    nats_or_skip,
    nats_server_pid,
    publish_paced,
    restart_nats_server,
    trades,
    unique,
    wait_for_jetstream,
)

from streamkit.channel import Bus
from streamkit.config import NatsSinkConfig, NatsStreamConfig, RetryOptions, parse_config
from streamkit.model import SCHEMA_VERSION, Record, Trade, decode_json
from streamkit.sinks import build_sink
from streamkit.sinks.base import subscribe_sink
from streamkit.sinks.nats import NatsSink, SinkSetupError, subject_matches
from streamkit.sinks.wire import decode

nats = pytest.importorskip("nats")
nats_js_errors = pytest.importorskip("nats.js.errors")
from nats.js.api import DiscardPolicy, StorageType, StreamConfig  # noqa: E402


@pytest.fixture
async def nc() -> AsyncIterator[Any]:
    client: Any = await nats_or_skip()
    yield client
    await client.close()


@pytest.fixture
async def stream(nc: Any) -> AsyncIterator[tuple[str, str]]:
    """A unique (stream name, subject prefix); the stream is deleted afterwards."""
    name, prefix = unique("SKTEST_"), unique("sk")
    yield name, prefix
    # A fresh connection: the test may have restarted the server under ``nc``.
    cleanup: Any = await nats_or_skip()
    try:
        await cleanup.jetstream().delete_stream(name)
    except nats_js_errors.NotFoundError:
        pass
    finally:
        await cleanup.close()


def sink_config(name: str, prefix: str, **kw: Any) -> NatsSinkConfig:
    stream_kw = kw.pop("stream", {})
    return NatsSinkConfig(
        url=NATS_URL,
        subject=prefix + ".{type}.{exchange}.{symbol}",
        stream=NatsStreamConfig(name=name, subjects=[prefix + ".>"], **stream_kw),
        ack_timeout=kw.pop("ack_timeout", 2.0),
        **kw,
    )


async def run_sink(cfg: NatsSinkConfig, records: list[Record]) -> NatsSink:
    bus = Bus()
    sink = build_sink("nats-test", cfg)
    assert isinstance(sink, NatsSink)
    sub = subscribe_sink(bus, sink.name, cfg)
    task = asyncio.create_task(sink.run(sub))
    await publish_paced(bus, records)
    bus.close()
    await asyncio.wait_for(task, 30)
    return sink


async def read_stream(nc: Any, name: str, subject: str, n: int) -> list[Any]:
    js = nc.jetstream()
    psub = await js.pull_subscribe(subject, stream=name)
    msgs: list[Any] = []
    async with asyncio.timeout(15):
        while len(msgs) < n:
            try:
                got = await psub.fetch(min(500, n - len(msgs)), timeout=1)
            except nats.errors.TimeoutError:
                continue
            for m in got:
                await m.ack()
            msgs.extend(got)
    await psub.unsubscribe()
    return msgs


def test_config_decodes_from_yaml() -> None:
    cfg = parse_config(
        """
feeds: [{exchange: binance, symbols: [BTC-USDT], channels: [trades]}]
sinks:
  - type: nats
    subject: "md.{type}.{exchange}.{symbol}"
    encoding: json
    stream: {name: MD, max_age: 3600, storage: memory}
"""
    )
    sink = cfg.sinks[0]
    assert isinstance(sink, NatsSinkConfig)
    assert sink.encoding == "json" and sink.stream.max_age == 3600
    assert sink.stream.storage == "memory" and sink.policy == "block"


def test_subject_template_sanitizes_values() -> None:
    sink = NatsSink("s", NatsSinkConfig())
    t = trades(1, exchange="ex.ch", symbol="BTC.*>")[0]
    assert sink.subjects.render(t) == "md.trade.ex_ch.BTC___"
    assert sink.subjects.render(gap_status(symbol=None)) == "md.status.testex._"
    assert subject_matches("md.>", "md.trade.a.b")
    assert subject_matches("md.*.a.*", "md.trade.a.b")
    assert not subject_matches("md.*", "md.trade.a")
    assert not subject_matches("md.>", "md")


async def test_every_record_arrives_in_order_with_headers(nc: Any, stream: tuple[str, str]) -> None:
    name, prefix = stream
    records: list[Record] = [*trades(2000), gap_status(), gap_status(symbol=None)]
    sink = await run_sink(sink_config(name, prefix, batch_size=256), records)
    assert sink.stats() == {"sent": 2002, "failed": 0, "retried": 0, "dropped": 0}

    msgs = await read_stream(nc, name, prefix + ".>", 2002)
    assert len(msgs) == 2002
    decoded = [
        decode(m.data, m.headers["Streamkit-Type"], m.headers["Streamkit-Encoding"]) for m in msgs
    ]
    assert decoded == records  # every record, in publish order, equal Structs
    first = msgs[0]
    assert first.subject == f"{prefix}.trade.testex.BTC-USDT"
    assert first.headers["Streamkit-Type"] == "trade"
    assert first.headers["Streamkit-Schema"] == str(SCHEMA_VERSION)
    assert first.headers["Streamkit-Encoding"] == "msgpack"
    assert msgs[-1].subject == f"{prefix}.status.testex._"
    assert msgs[-1].headers["Streamkit-Type"] == "status"


async def test_json_encoding_is_the_design_json(nc: Any, stream: tuple[str, str]) -> None:
    name, prefix = stream
    records: list[Record] = list(trades(5))
    await run_sink(sink_config(name, prefix, encoding="json"), records)
    msgs = await read_stream(nc, name, prefix + ".>", 5)
    assert [decode_json(m.data) for m in msgs] == records
    assert msgspec.json.decode(msgs[0].data)["price"] == "27000.10"


async def test_creates_stream_with_retention(nc: Any, stream: tuple[str, str]) -> None:
    name, prefix = stream
    cfg = sink_config(
        name,
        prefix,
        stream={"max_age": 600.0, "max_msgs": 100, "max_bytes": 1_000_000, "storage": "memory"},
    )
    await run_sink(cfg, list(trades(150)))
    info = await nc.jetstream().stream_info(name)
    assert info.config.subjects == [prefix + ".>"]
    assert info.config.max_age == 600.0
    assert info.config.max_msgs == 100
    assert info.config.max_bytes == 1_000_000
    assert info.config.storage == StorageType.MEMORY
    assert info.state.messages == 100  # the limit trimmed the oldest 50
    assert info.state.last_seq == 150


async def test_existing_stream_must_capture_the_subjects(nc: Any, stream: tuple[str, str]) -> None:
    name, prefix = stream
    await nc.jetstream().add_stream(StreamConfig(name=name, subjects=[prefix + ".other.>"]))
    cfg = sink_config(name, prefix)
    cfg = msgspec.structs.replace(
        cfg, stream=msgspec.structs.replace(cfg.stream, subjects=[prefix + ".>"], create=False)
    )
    with pytest.raises(SinkSetupError, match="captures"):
        await run_sink(cfg, [])


async def test_existing_stream_is_updated_when_asked(nc: Any, stream: tuple[str, str]) -> None:
    name, prefix = stream
    await nc.jetstream().add_stream(StreamConfig(name=name, subjects=[prefix + ".>"]))
    await run_sink(sink_config(name, prefix, stream={"max_msgs": 10, "update": True}), [])
    info = await nc.jetstream().stream_info(name)
    assert info.config.max_msgs == 10


async def test_unacknowledged_records_are_counted_lost_at_shutdown(
    nc: Any, stream: tuple[str, str]
) -> None:
    """The server refuses records beyond the stream's limit (discard=new): the sink retries
    them until shutdown_timeout, then reports them lost; it never counts them sent."""
    name, prefix = stream
    await nc.jetstream().add_stream(
        StreamConfig(name=name, subjects=[prefix + ".>"], max_msgs=5, discard=DiscardPolicy.NEW)
    )
    cfg = sink_config(
        name,
        prefix,
        ack_timeout=0.5,
        shutdown_timeout=0.5,
        retry=RetryOptions(initial=0.05, max=0.1),
    )
    sink = await run_sink(cfg, list(trades(8)))
    assert sink.sent == 5
    assert sink.dropped == 3
    assert sink.failed >= 3 and sink.retried >= 3
    assert (await nc.jetstream().stream_info(name)).state.messages == 5


async def test_next_batches_publish_while_acks_are_outstanding(
    nc: Any, stream: tuple[str, str]
) -> None:
    """With records queued, the sink does not wait for one batch's acks before publishing the
    next: several batches are in flight at once, never more than max_in_flight records, and
    the stream still holds every record once, in queue order."""
    name, prefix = stream
    cfg = sink_config(name, prefix, batch_size=7, max_in_flight=20)
    records: list[Record] = list(trades(300))
    bus = Bus()
    sink = build_sink("nats-window", cfg)
    assert isinstance(sink, NatsSink)
    sub = subscribe_sink(bus, sink.name, cfg)
    await bus.publish_many(records)  # all queued before the sink starts: no timing involved
    bus.close()
    in_flight_at_collect: list[int] = []
    collect = sink._collect

    async def observe(flight: Any) -> Any:
        in_flight_at_collect.append(sum(len(f.batch) for f in sink._in_flight))
        return await collect(flight)

    sink._collect = observe  # type: ignore[method-assign]
    await asyncio.wait_for(sink.run(sub), 30)
    assert sink.stats() == {"sent": 300, "failed": 0, "retried": 0, "dropped": 0}
    # More than one batch of 7 awaiting acks, never more than 20 records (the last is 6 long).
    assert 7 < max(in_flight_at_collect) <= 20
    msgs = await read_stream(nc, name, prefix + ".>", 300)
    assert [decode(m.data, "trade", "msgpack") for m in msgs] == records


async def test_refused_records_in_a_full_window_are_retried_then_lost(
    nc: Any, stream: tuple[str, str]
) -> None:
    """Refusals spread over several in-flight batches: the acknowledged ones count as sent,
    the refused ones are retried and finally reported lost, none twice."""
    name, prefix = stream
    await nc.jetstream().add_stream(
        StreamConfig(name=name, subjects=[prefix + ".>"], max_msgs=5, discard=DiscardPolicy.NEW)
    )
    cfg = sink_config(
        name,
        prefix,
        batch_size=2,
        max_in_flight=6,
        ack_timeout=0.5,
        shutdown_timeout=0.5,
        retry=RetryOptions(initial=0.05, max=0.1),
    )
    bus = Bus()
    sink = build_sink("nats-window-lost", cfg)
    assert isinstance(sink, NatsSink)
    sub = subscribe_sink(bus, sink.name, cfg)
    await bus.publish_many(list(trades(9)))
    bus.close()
    await asyncio.wait_for(sink.run(sub), 30)
    assert sink.sent == 5 and sink.dropped == 4
    assert sink.failed >= 4 and sink.retried >= 4
    assert (await nc.jetstream().stream_info(name)).state.messages == 5


async def test_nats_restart_mid_stream_loses_nothing_acknowledged(
    nc: Any, stream: tuple[str, str]
) -> None:
    """Restart the real nats-server while the sink publishes: every record is acknowledged
    in the end, the file-backed stream holds each exactly once (Nats-Msg-Id dedup)."""
    pid = nats_server_pid()
    if pid is None:
        pytest.skip("no local nats-server process to restart (pgrep -x nats-server)")
    name, prefix = stream
    cfg = sink_config(
        name, prefix, batch_size=200, ack_timeout=1.0, retry=RetryOptions(initial=0.05, max=0.5)
    )
    records = trades(30_000)
    bus = Bus()
    sink = build_sink("nats-restart", cfg)
    assert isinstance(sink, NatsSink)
    sub = subscribe_sink(bus, sink.name, cfg)
    task = asyncio.create_task(sink.run(sub))
    await publish_paced(bus, records[:2000])
    async with asyncio.timeout(10):
        while sink.sent < 1000:  # noqa: ASYNC110 - polling a counter, no event to wait on
            await asyncio.sleep(0.01)
    # Keep publishing while the server goes down and comes back, then some more.
    n = 2000
    restart = asyncio.create_task(asyncio.to_thread(restart_nats_server, pid))
    while not restart.done() and n < 25_000:
        await bus.publish_many(records[n : n + 20])
        n += 20
        await asyncio.sleep(0.005)
    await restart
    await wait_for_jetstream()
    await publish_paced(bus, records[n : n + 1000])
    n += 1000
    bus.close()
    await asyncio.wait_for(task, 60)
    assert sink.sent == n and sink.dropped == 0

    check: Any = await nats_or_skip()
    try:
        info = await check.jetstream().stream_info(name)
        assert info.state.messages == n  # nothing lost, nothing stored twice
        msgs = await read_stream(check, name, prefix + ".>", n)
        ids = [int(decode(m.data, "trade", "msgpack").id) for m in msgs]  # type: ignore[union-attr]
        assert sorted(ids) == list(range(n))
        assert all(isinstance(decode(m.data, "trade", None), Trade) for m in msgs[:10])
    finally:
        await check.close()
