"""Behaviour of the fan-out Bus: routing, the four overflow policies, exact accounting."""

from __future__ import annotations

import asyncio
import random
import time
from decimal import Decimal

import pytest

from streamkit.channel import Bus, Policy, Subscription, SubscriptionClosed
from streamkit.errors import SlowConsumerError
from streamkit.model import BBO, Record, Status, StatusEvent, Trade, type_name

ONE = Decimal(1)


def trade(i: int, exchange: str = "binance", symbol: str = "BTC-USDT") -> Trade:
    return Trade(
        exchange=exchange,
        symbol=symbol,
        ts=i,
        recv_ts=i,
        price=ONE,
        size=ONE,
        side="buy",
        id=str(i),
    )


def bbo(i: int, exchange: str = "binance", symbol: str = "BTC-USDT") -> BBO:
    return BBO(
        exchange=exchange,
        symbol=symbol,
        ts=i,
        recv_ts=i,
        bid_price=Decimal(i),
        bid_size=ONE,
        ask_price=Decimal(i + 1),
        ask_size=ONE,
    )


def status(
    exchange: str = "binance", symbol: str | None = None, event: StatusEvent = StatusEvent.GAP
) -> Status:
    return Status(exchange=exchange, symbol=symbol, ts=None, recv_ts=0, event=event)


def ids(records: list[Record]) -> list[str]:
    return [r.id for r in records if isinstance(r, Trade)]


def assert_identity(sub: Subscription, routed: int) -> None:
    assert sub.delivered + sub.dropped + sub.depth == routed, sub.stats()


# -- routing ---------------------------------------------------------------------------------


async def test_wildcards_types_and_connection_wide_status() -> None:
    bus = Bus()
    btc_binance = bus.subscribe(None, "binance", "BTC-*", policy="drop_oldest")
    trades_any = bus.subscribe("trade", policy="drop_oldest")
    okx_trades_bbo = bus.subscribe([Trade, "bbo"], "okx", policy="drop_oldest")
    eth_exact = bus.subscribe(exchange="*", symbol="ETH-USDT", policy="drop_oldest")
    bbo_only = bus.subscribe(BBO, "bin*", policy="drop_oldest")

    records: list[Record] = [
        trade(1, "binance", "BTC-USDT"),
        trade(2, "binance", "ETH-USDT"),
        trade(3, "okx", "BTC-USDT"),
        bbo(4, "binance", "BTC-USD"),
        bbo(5, "okx", "ETH-USDT"),
        status("binance", None),  # connection-wide: every binance symbol pattern
        status("binance", "ETH-USDT"),  # per-symbol: symbol patterns apply
        status("okx", None),
    ]
    await bus.publish_many(records)

    def got(sub: Subscription) -> list[Record]:
        return sub.drain_nowait()

    assert got(btc_binance) == [records[0], records[3], records[5]]
    assert got(trades_any) == records[0:3]
    assert got(okx_trades_bbo) == [records[2], records[4]]  # status not in its types
    assert got(eth_exact) == [records[1], records[4], records[5], records[6], records[7]]
    assert got(bbo_only) == [records[3]]


async def test_patterns_are_case_sensitive_and_full_match() -> None:
    bus = Bus()
    sub = bus.subscribe(symbol="BTC-*", policy="drop_oldest")
    await bus.publish_many([trade(1, symbol="btc-usdt"), trade(2, symbol="XBTC-USDT")])
    await bus.publish(trade(3, symbol="BTC-"))
    assert ids(sub.drain_nowait()) == ["3"]


async def test_route_cache_is_invalidated_on_subscribe_and_unsubscribe() -> None:
    bus = Bus()
    first = bus.subscribe("trade")
    await bus.publish(trade(1))  # caches the route for (Trade, binance, BTC-USDT)
    late = bus.subscribe("trade", "binance", "BTC-*")
    await bus.publish(trade(2))
    assert ids(late.drain_nowait()) == ["2"]
    late.close()
    await bus.publish(trade(3))
    assert late.depth == 0 and late not in bus.subscriptions
    assert ids(first.drain_nowait()) == ["1", "2", "3"]


def test_subscribe_validates_arguments() -> None:
    bus = Bus()
    with pytest.raises(ValueError, match="unknown record type"):
        bus.subscribe("trades")
    with pytest.raises(ValueError, match="empty"):
        bus.subscribe([])
    with pytest.raises(ValueError):
        bus.subscribe(policy="sometimes")
    with pytest.raises(ValueError, match="maxsize"):
        bus.subscribe(maxsize=0)
    with pytest.raises(ValueError, match="block_timeout"):
        bus.subscribe(policy=Policy.DROP_OLDEST, block_timeout=1.0)
    assert bus.subscriptions == []


async def test_fan_out_to_several_subscribers() -> None:
    bus = Bus()
    subs = [bus.subscribe("trade", maxsize=100, policy=p) for p in Policy]
    await bus.publish_many([trade(i) for i in range(50)])
    for sub in subs:
        records = sub.drain_nowait()
        if sub.policy is Policy.CONFLATE:  # one key: only the latest survives
            assert ids(records) == ["49"]
            assert sub.dropped == 49
        else:
            assert ids(records) == [str(i) for i in range(50)]
            assert sub.dropped == 0
        assert_identity(sub, 50)


# -- block -----------------------------------------------------------------------------------


async def test_block_is_lossless_and_in_order_with_a_slow_consumer() -> None:
    bus = Bus()
    sub = bus.subscribe("trade", maxsize=16, policy="block")
    n = 5_000
    received: list[str] = []

    async def consume() -> None:
        async for record in sub:
            assert isinstance(record, Trade)
            received.append(record.id)
            if len(received) % 3 == 0:
                await asyncio.sleep(0)  # slower than the publisher

    consumer = asyncio.create_task(consume())
    for start in range(0, n, 50):
        await bus.publish_many([trade(i) for i in range(start, start + 50)])
    bus.close()
    await asyncio.wait_for(consumer, 2)

    assert received == [str(i) for i in range(n)]
    assert sub.delivered == n and sub.dropped == 0 and sub.depth == 0
    assert sub.max_depth == 16  # the queue really filled up, and never beyond maxsize


async def test_block_publisher_waits_for_room() -> None:
    bus = Bus()
    sub = bus.subscribe(maxsize=2, policy="block")
    await bus.publish_many([trade(0), trade(1)])  # fills the queue without waiting

    publisher = asyncio.create_task(bus.publish_many([trade(2), trade(3)]))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not publisher.done()  # waits for room
    assert sub.depth == 2

    assert ids([await sub.get()]) == ["0"]  # room for "2" only
    for _ in range(5):
        await asyncio.sleep(0)
    assert not publisher.done()
    assert ids(sub.drain_nowait()) == ["1", "2"]
    await asyncio.wait_for(publisher, 1)
    assert ids(sub.drain_nowait()) == ["3"]
    assert sub.dropped == 0


async def test_block_waiting_publishers_are_served_in_order() -> None:
    bus = Bus()
    sub = bus.subscribe(maxsize=1, policy="block")
    await bus.publish(trade(0))
    first = asyncio.create_task(bus.publish(trade(1)))
    await asyncio.sleep(0)
    second = asyncio.create_task(bus.publish(trade(2)))
    await asyncio.sleep(0)
    received = [await sub.get() for _ in range(3)]
    await asyncio.gather(first, second)
    assert ids(received) == ["0", "1", "2"]


async def test_block_timeout_cuts_off_a_consumer_that_stopped_reading() -> None:
    cut: list[Subscription] = []
    bus = Bus(on_cutoff=cut.append)
    dead = bus.subscribe("trade", maxsize=4, policy="block", block_timeout=0.05, name="dead")
    healthy = bus.subscribe("trade", maxsize=100, policy="block")

    started = time.monotonic()
    await asyncio.wait_for(bus.publish_many([trade(i) for i in range(10)]), 1)
    waited = time.monotonic() - started

    assert 0.04 <= waited < 0.9
    assert cut == [dead]
    assert dead.closed and dead.cut_off and "0.05" in (dead.reason or "")
    assert dead not in bus.subscriptions
    # 4 queued + the one the publisher waited with; later records were never routed to it.
    assert dead.dropped == 5 and dead.delivered == 0 and dead.depth == 0
    with pytest.raises(SlowConsumerError, match="dead"):
        await dead.get()
    with pytest.raises(SlowConsumerError):
        async for _ in dead:
            pass
    assert ids(healthy.drain_nowait()) == [str(i) for i in range(10)]


async def test_closing_a_full_block_subscription_releases_the_publisher() -> None:
    bus = Bus()
    sub = bus.subscribe(maxsize=3, policy="block")
    publisher = asyncio.create_task(bus.publish_many([trade(i) for i in range(5)]))
    await asyncio.sleep(0)
    assert not publisher.done()
    sub.close()
    await asyncio.wait_for(publisher, 1)
    # 3 queued + 1 pending were discarded; the last record was not routed to it.
    assert sub.dropped == 4
    assert_identity(sub, 4)
    assert sub.reason == "unsubscribed"
    with pytest.raises(SubscriptionClosed):
        sub.get_nowait()


async def test_cancelled_block_publisher_withdraws_its_record() -> None:
    bus = Bus()
    sub = bus.subscribe(maxsize=1, policy="block")
    await bus.publish(trade(0))
    publisher = asyncio.create_task(bus.publish(trade(1)))
    await asyncio.sleep(0)
    publisher.cancel()
    with pytest.raises(asyncio.CancelledError):
        await publisher
    assert ids([await sub.get()]) == ["0"]
    await asyncio.wait_for(bus.publish(trade(2)), 1)  # not stuck behind the cancelled one
    assert ids(sub.drain_nowait()) == ["2"]
    assert_identity(sub, 2)


# -- drop_oldest / conflate ------------------------------------------------------------------


async def test_drop_oldest_keeps_the_newest_and_counts_drops() -> None:
    bus = Bus()
    sub = bus.subscribe(maxsize=10, policy=Policy.DROP_OLDEST)
    await bus.publish_many([trade(i) for i in range(95)])
    for i in range(95, 100):
        await bus.publish(trade(i))  # never waits
    assert sub.dropped == 90 and sub.depth == 10 and sub.max_depth == 10
    assert ids(sub.drain_nowait()) == [str(i) for i in range(90, 100)]
    assert_identity(sub, 100)


async def test_conflate_keeps_the_latest_per_symbol_in_place() -> None:
    bus = Bus()
    sub = bus.subscribe("bbo", maxsize=10, policy="conflate")
    symbols = ["BTC-USDT", "ETH-USDT", "SOL-USDT"]
    for i in range(50):
        await bus.publish_many([bbo(i, symbol=s) for s in symbols])
    assert sub.depth == 3 and sub.dropped == 147
    latest = sub.drain_nowait()
    # order is that of each key's first arrival; the value is the latest
    assert [(r.symbol, r.ts) for r in latest] == [(s, 49) for s in symbols]
    assert_identity(sub, 150)


async def test_conflate_drops_oldest_key_when_full_and_never_merges_status() -> None:
    bus = Bus()
    sub = bus.subscribe(maxsize=3, policy="conflate")
    await bus.publish_many([bbo(1, symbol="A"), bbo(1, symbol="B"), bbo(1, symbol="C")])
    await bus.publish(bbo(1, symbol="D"))  # distinct key, queue full: A goes
    await bus.publish(bbo(2, symbol="C"))  # same key: replaces C in place
    assert [(r.symbol, r.ts) for r in sub.drain_nowait()] == [("B", 1), ("C", 2), ("D", 1)]
    assert sub.dropped == 2

    gap, resync = status(event=StatusEvent.GAP), status(event=StatusEvent.RESYNC)
    await bus.publish_many([gap, resync])
    assert sub.drain_nowait() == [gap, resync]
    assert_identity(sub, 7)


# -- disconnect ------------------------------------------------------------------------------


async def test_disconnect_cuts_off_slow_consumer_but_not_others() -> None:
    cut: list[Subscription] = []
    bus = Bus(on_cutoff=cut.append)
    slow = bus.subscribe("trade", maxsize=5, policy="disconnect", name="slow")
    other = bus.subscribe("trade", maxsize=100, policy="disconnect")

    await bus.publish_many([trade(i) for i in range(3)])
    assert ids([await slow.get() for _ in range(3)]) == ["0", "1", "2"]
    await bus.publish_many([trade(i) for i in range(3, 30)])

    assert cut == [slow]
    assert slow.closed and slow.cut_off and "maxsize=5" in (slow.reason or "")
    assert bus.subscriptions == [other]
    # 5 queued + the one that did not fit; nothing after it was routed to it.
    assert slow.delivered == 3 and slow.dropped == 6 and slow.depth == 0
    assert_identity(slow, 9)
    received: list[Record] = []
    with pytest.raises(SlowConsumerError):
        async for record in slow:
            received.append(record)
    assert received == []  # no further records after the cut-off
    with pytest.raises(SlowConsumerError):
        slow.get_nowait()
    assert ids(other.drain_nowait()) == [str(i) for i in range(30)]


async def test_disconnect_wakes_a_waiting_reader_with_the_error() -> None:
    bus = Bus()
    sub = bus.subscribe(maxsize=1, policy="disconnect")
    reader = asyncio.create_task(sub.get_batch())
    await asyncio.sleep(0)
    await bus.publish_many([trade(0), trade(1), trade(2)])  # reader has not run: 1 fits
    with pytest.raises(SlowConsumerError):
        await asyncio.wait_for(reader, 1)


async def test_failing_on_cutoff_callback_does_not_break_the_publisher() -> None:
    def explode(sub: Subscription) -> None:
        raise RuntimeError("boom")

    bus = Bus(on_cutoff=explode)
    slow = bus.subscribe(maxsize=1, policy="disconnect")
    other = bus.subscribe(maxsize=10, policy="drop_oldest")
    await bus.publish_many([trade(i) for i in range(4)])
    assert slow.cut_off
    assert ids(other.drain_nowait()) == ["0", "1", "2", "3"]


# -- consumers that crash, close, end --------------------------------------------------------


async def test_crashing_consumer_does_not_stall_publishing() -> None:
    bus = Bus()
    watcher = bus.subscribe("trade", maxsize=2_000, policy="block")
    ready = asyncio.Event()
    crashed_sub: list[Subscription] = []

    async def buggy_consumer() -> None:
        async with bus.subscribe("trade", maxsize=4, policy="block") as sub:
            crashed_sub.append(sub)
            ready.set()
            seen = 0
            async for _ in sub:
                seen += 1
                if seen == 3:
                    raise ValueError("consumer bug")

    consumer = asyncio.create_task(buggy_consumer())
    await ready.wait()
    await asyncio.wait_for(bus.publish_many([trade(i) for i in range(1_000)]), 1)

    with pytest.raises(ValueError, match="consumer bug"):
        await consumer
    (sub,) = crashed_sub
    assert sub.closed and sub.reason == "unsubscribed" and sub not in bus.subscriptions
    assert sub.delivered == 3 and sub.depth == 0
    assert len(watcher.drain_nowait()) == 1_000


async def test_close_ends_iteration_after_drain() -> None:
    bus = Bus()
    sub = bus.subscribe(policy="block")
    idle = bus.subscribe("bbo", policy="block")
    await bus.publish_many([trade(i) for i in range(5)])
    waiting = asyncio.create_task(idle.get())  # waits on an empty queue
    await asyncio.sleep(0)

    bus.close()
    assert sub.closed and sub.reason == "bus closed" and bus.subscriptions == []
    received = [record async for record in sub]
    assert ids(received) == ["0", "1", "2", "3", "4"]
    with pytest.raises(SubscriptionClosed):
        await sub.get()
    with pytest.raises(SubscriptionClosed):
        await asyncio.wait_for(waiting, 1)  # a reader waiting on an empty queue ends too
    with pytest.raises(RuntimeError, match="closed"):
        await bus.publish(trade(5))
    with pytest.raises(RuntimeError, match="closed"):
        bus.subscribe()
    assert_identity(sub, 5)


@pytest.mark.parametrize("reader", ["get", "get_batch"])
async def test_reads_are_cancel_safe(reader: str) -> None:
    bus = Bus()
    sub = bus.subscribe(policy="block")

    async def read() -> list[Record]:
        return [await sub.get()] if reader == "get" else await sub.get_batch()

    for _ in range(3):
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(read(), 0.001)
    assert not sub._getters  # timed-out readers leave no dead waiters behind
    await bus.publish(trade(1))
    assert ids(await asyncio.wait_for(read(), 1)) == ["1"]
    assert sub.delivered == 1


@pytest.mark.parametrize("reader", ["get", "get_batch"])
async def test_a_reader_cancelled_after_its_wake_up_passes_it_on(reader: str) -> None:
    bus = Bus()
    sub = bus.subscribe(policy="block")

    async def read() -> list[Record]:
        return [await sub.get()] if reader == "get" else await sub.get_batch()

    first = asyncio.create_task(read())
    second = asyncio.create_task(read())
    await asyncio.sleep(0)  # both wait, first in line
    await bus.publish(trade(1))  # wakes the first reader only
    first.cancel()  # before it runs: it leaves without the record
    assert ids(await asyncio.wait_for(second, 1)) == ["1"]  # the second got the wake-up
    assert first.cancelled()


async def test_get_batch_and_nowait_readers() -> None:
    bus = Bus()
    sub = bus.subscribe(policy="block")
    assert sub.get_nowait() is None and sub.drain_nowait() == []
    await bus.publish_many([trade(i) for i in range(7)])
    assert ids(await sub.get_batch(limit=3)) == ["0", "1", "2"]
    assert ids(sub.drain_nowait(limit=2)) == ["3", "4"]
    assert ids(await sub.get_batch()) == ["5", "6"]
    assert sub.stats() == {
        "name": sub.name,
        "policy": "block",
        "delivered": 7,
        "dropped": 0,
        "depth": 0,
        "max_depth": 7,
    }


# -- accounting ------------------------------------------------------------------------------


async def test_counters_identity_under_a_mixed_workload() -> None:
    rng = random.Random(7)
    bus = Bus()
    specs = [
        ("block", "*", "*"),
        ("drop_oldest", "*", "BTC-*"),
        ("drop_oldest", "okx", "*"),
        ("conflate", "*", "*"),
        ("conflate", "binance", "ETH-*"),
        ("disconnect", "*", "*"),
        ("disconnect", "binance", "*"),
    ]
    subs = [
        bus.subscribe(exchange=ex, symbol=sym, maxsize=rng.randint(1, 20), policy=p)
        for p, ex, sym in specs
    ]
    routed = dict.fromkeys(subs, 0)
    consumed = dict.fromkeys(subs, 0)
    reader = bus.subscribe(policy="block", maxsize=8)  # keeps the block subscriber honest

    for i in range(3_000):
        record: Record
        exchange = rng.choice(["binance", "okx"])
        symbol = rng.choice(["BTC-USDT", "ETH-USDT", "SOL-USDT"])
        if rng.random() < 0.05:
            record = status(exchange, None)
        elif rng.random() < 0.5:
            record = trade(i, exchange, symbol)
        else:
            record = bbo(i, exchange, symbol)
        for sub in subs:
            if not sub.closed and sub.matches(type_name(type(record)), exchange, record.symbol):
                routed[sub] += 1
        # consume from the block subscribers so that publishing can proceed
        while subs[0].depth >= subs[0].maxsize:
            consumed[subs[0]] += len(subs[0].drain_nowait())
        reader.drain_nowait()
        await bus.publish(record)
        for sub in subs[1:]:
            if not sub.closed and rng.random() < 0.3:
                consumed[sub] += len(sub.drain_nowait(limit=rng.randint(1, 5)))

    assert any(sub.cut_off for sub in subs)  # the workload exercised every branch
    assert all(sub.dropped > 0 for sub in subs[1:5])
    for sub in subs:
        assert sub.delivered == consumed[sub]
        assert_identity(sub, routed[sub])
        assert sub.max_depth <= sub.maxsize


# -- the whole-batch path ----------------------------------------------------------------------


def record_key(r: Record) -> str:
    return f"{type_name(type(r))}:{r.symbol}:{r.recv_ts}"


@pytest.mark.parametrize("policy", ["block", "drop_oldest", "conflate", "disconnect"])
@pytest.mark.parametrize("path", ["whole batches", "runs of one route key"])
async def test_batch_paths_equal_record_by_record_offers(policy: str, path: str) -> None:
    # try_publish_many has two batch paths: whole batches when every subscription takes
    # every record, and runs of consecutive records that share a route key when some
    # subscription filters (every App has one: its monitor takes only Status records). A
    # twin bus with the same subscriptions gets the same batches record by record
    # (publish_many: one _offer per record and subscription). Every subscription must end
    # each step in the same state as its twin.
    rng = random.Random(11)
    fast, ref = Bus(), Bus()
    pairs: list[tuple[Subscription, Subscription]] = [
        (fast.subscribe(maxsize=20, policy=policy), ref.subscribe(maxsize=20, policy=policy))
    ]
    if path == "runs of one route key":
        pairs.append(  # matches part of the stream
            (
                fast.subscribe(Trade, symbol="BTC-*", maxsize=15, policy=policy),
                ref.subscribe(Trade, symbol="BTC-*", maxsize=15, policy=policy),
            )
        )
        pairs.append(  # matches nothing
            (
                fast.subscribe(symbol="NOTHING-*", maxsize=1_000),
                ref.subscribe(symbol="NOTHING-*", maxsize=1_000),
            )
        )
    assert (fast._everything is not None) == (path == "whole batches")
    n = accepted_batches = 0
    for _ in range(300):
        batch: list[Record] = []
        symbol = rng.choice(["BTC-USDT", "ETH-USDT", "SOL-USDT"])
        for i in range(rng.randint(1, 30)):
            if rng.random() < 0.2:  # runs of one and short runs as well as long ones
                symbol = rng.choice(["BTC-USDT", "ETH-USDT", "SOL-USDT"])
            make = trade if rng.random() < 0.8 else bbo
            batch.append(make(n + i, symbol=symbol))
        n += len(batch)
        if fast.try_publish_many(batch):
            accepted_batches += 1
            await ref.publish_many(batch)  # never waits: the batch fits, as checked above
        if rng.random() < 0.3:
            limit = rng.randint(1, 25)
            for mine, twin in pairs:
                got = [] if mine.cut_off else mine.drain_nowait(limit)
                want = [] if twin.cut_off else twin.drain_nowait(limit)
                assert [record_key(r) for r in got] == [record_key(r) for r in want]
        for mine, twin in pairs:
            assert mine.stats() | {"name": ""} == twin.stats() | {"name": ""}
            assert mine.cut_off == twin.cut_off
    first = pairs[0][0]
    assert accepted_batches > 0
    if policy == "block":
        assert accepted_batches < 300  # a full block subscriber refused some batches
    elif policy == "disconnect":
        assert first.cut_off
    else:
        assert first.dropped > 0
    assert all(mine.depth == 0 for mine, _ in pairs[2:])


async def test_whole_batches_wake_one_waiting_reader_per_record() -> None:
    bus = Bus()
    sub = bus.subscribe(maxsize=100)
    readers = [asyncio.create_task(sub.get()) for _ in range(3)]
    await asyncio.sleep(0)
    assert bus.try_publish_many([trade(1), trade(2)])
    done, pending = await asyncio.wait(readers, timeout=0.1)
    assert sorted(ids([t.result() for t in done])) == ["1", "2"]
    assert len(pending) == 1  # the third reader still waits: no record for it
    assert bus.try_publish_many([trade(3)])
    assert ids([await asyncio.wait_for(pending.pop(), 1)]) == ["3"]


def test_reader_asks_for_the_running_loop_once_per_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    # asyncio.get_running_loop() costs a getpid system call; a reader waiting once per
    # record (a paced stream) must not pay it per record. A new loop is still picked up.
    calls = 0
    real = asyncio.get_running_loop

    def counting() -> asyncio.AbstractEventLoop:
        nonlocal calls
        calls += 1
        return real()

    monkeypatch.setattr(asyncio, "get_running_loop", counting)
    bus = Bus()
    sub = bus.subscribe(maxsize=10)

    async def read(n: int, first: int) -> list[str]:
        got: list[str] = []
        for i in range(n):
            real().call_soon(bus.try_publish_many, [trade(first + i)])
            got += ids(await sub.get_batch()) if i % 2 else ids([await sub.get()])
        return got

    assert asyncio.run(read(50, 0)) == [str(i) for i in range(50)]
    assert calls == 1
    assert asyncio.run(read(5, 50)) == [str(i) for i in range(50, 55)]  # another loop
    assert calls == 2
