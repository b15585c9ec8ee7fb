"""The fault matrix: every failure a market-data connection meets in production, injected into
the built-in simulator (or the chaos proxy in front of it) over real loopback WebSockets and
the real libcurl transport, with what the user sees asserted for each row: status records
with the right events and details, actor counters, data flowing again after recovery, and
no leaked asyncio task or file descriptor.

Keepalive note: Binance pings the client (libcurl answers on its own), so a Binance feed sends
no heartbeat and a half-open connection shows up as ``stale``. The pong-timeout row therefore
runs a Binance feed subclass with an application-level heartbeat (``LIST_SUBSCRIPTIONS``,
which the simulator answers) through a proxy that stops forwarding: that is the half-open case
for venues with client heartbeats (OKX, Bybit, Kraken, Deribit).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import pytest
import structlog
from faultkit import (
    LeakCheck,
    collect_until,
    events,
    feed_yaml,
    free_port,
    has_after,
    make_app,
    reconnect_delays,
    statuses,
)

from streamkit import plugins
from streamkit.app import App
from streamkit.channel import Subscription
from streamkit.feed import ConnectionPlan, Feed, Heartbeat, Output
from streamkit.model import BBO, Book, Record, StatusEvent, Trade
from streamkit.simulator import BinanceSimulator, Fault
from streamkit.simulator.chaos import OPCODE_BINARY, ChaosProxy
from streamkit.sinks import base as sinks_base
from streamkit.transport.curl_common import set_max_concurrent_connects
from streamkit.transport.libcurl import LibcurlTransport
from streamkit_binance.feed import BinanceFeed, BinanceProtocol

pytestmark = pytest.mark.timeout(60)

ST = StatusEvent


@pytest.fixture
async def sim() -> AsyncIterator[BinanceSimulator]:
    simulator = BinanceSimulator(rate=100.0, ping_interval=0.2)
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


@pytest.fixture
async def proxy(sim: BinanceSimulator) -> AsyncIterator[ChaosProxy]:
    async with ChaosProxy(sim.port) as p:
        yield p


async def run_and_check(
    app: App, sub: Subscription, body: Any, *, leaks: LeakCheck | None = None
) -> list[Record]:
    """Start ``app``, run ``body(seen)`` (which returns more records), stop, check for leaks."""
    leaks = leaks or LeakCheck.now()
    await app.start()
    try:
        seen = await collect_until(sub, lambda rs: any(isinstance(r, Trade) for r in rs))
        seen += await body(seen)
    finally:
        await app.stop()
    await leaks.assert_back()
    return seen


def recovered(rs: list[Record]) -> bool:
    return ST.DISCONNECTED in events(rs) and has_after(rs, ST.SUBSCRIBED, Trade)


def assert_reconnect_cycle(seen: list[Record]) -> None:
    ev = events(seen)
    i = ev.index(ST.DISCONNECTED)
    assert ev[i : i + 4] == [ST.DISCONNECTED, ST.RECONNECTING, ST.CONNECTED, ST.SUBSCRIBED]


# --- connection loss --------------------------------------------------------------------------


async def test_tcp_reset_mid_message(sim: BinanceSimulator, proxy: ChaosProxy) -> None:
    leaks = LeakCheck.now()
    app = make_app(feed_yaml(proxy.ws_url(), sim.rest_url))
    sub = app.stream(maxsize=100_000)

    async def body(_: list[Record]) -> list[Record]:
        assert proxy.reset_mid_frame() == 1
        return await collect_until(sub, recovered)

    seen = await run_and_check(app, sub, body, leaks=leaks)
    [lost] = statuses(seen, ST.DISCONNECTED)
    assert "1006" in lost.detail  # no close frame: abnormal closure
    assert_reconnect_cycle(seen)
    actor = app.actors[0]
    assert actor.counters.connects == 2 and actor.counters.decode_errors == 0


@pytest.mark.parametrize(
    ("code", "expect"),
    [
        (1000, "code 1000"),
        (1001, "code 1001"),
        (None, "code 1006"),  # abnormal: the TCP connection vanished without a close frame
        (1011, "code 1011"),
        (1013, "try again later"),
    ],
)
async def test_close_codes(sim: BinanceSimulator, code: int | None, expect: str) -> None:
    app = make_app(feed_yaml(sim.ws_url, sim.rest_url))
    sub = app.stream(maxsize=100_000)

    async def body(_: list[Record]) -> list[Record]:
        fault = Fault("drop") if code is None else Fault("close", code=code, reason="bye")
        assert sim.inject(fault) == 1
        return await collect_until(sub, recovered)

    seen = await run_and_check(app, sub, body)
    [lost] = statuses(seen, ST.DISCONNECTED)
    assert expect in lost.detail
    if code is not None:
        assert f"code {code} bye" in lost.detail
    assert_reconnect_cycle(seen)
    assert app.actors[0].counters.connects == 2


# --- refused handshakes and failed connects -----------------------------------------------------


async def test_429_retry_after_is_honoured(sim: BinanceSimulator) -> None:
    leaks = LeakCheck.now()
    sim.inject(Fault("reject", status=429, retry_after=1))
    app = make_app(feed_yaml(sim.ws_url, sim.rest_url))
    sub = app.stream(maxsize=100_000)
    seen = await run_and_check(app, sub, _nothing, leaks=leaks)
    [refused] = statuses(seen, ST.ERROR)
    assert "HTTP 429" in refused.detail and "Retry-After: 1s" in refused.detail
    [delay] = reconnect_delays(seen)
    assert delay >= 1.0
    [connected] = statuses(seen, ST.CONNECTED)
    assert connected.recv_ts - refused.recv_ts >= 1_000_000_000
    assert sim.stats.handshakes_rejected == 1


@pytest.mark.parametrize("status", [418, 403])
async def test_418_403_back_off_hard_and_report(sim: BinanceSimulator, status: int) -> None:
    sim.inject(Fault("reject", status=status))
    app = make_app(feed_yaml(sim.ws_url, sim.rest_url, reconnect="{initial: 0.01, max: 0.3}"))
    sub = app.stream(maxsize=100_000)
    with structlog.testing.capture_logs() as logs:
        seen = await run_and_check(app, sub, _nothing)
    [refused] = statuses(seen, ST.ERROR)
    assert f"HTTP {status}" in refused.detail
    # the hard backoff is the configured maximum, not the 0.01 s initial delay
    assert reconnect_delays(seen) == [0.3]
    assert app.actors[0].backoff.attempt >= 32
    assert any(e["event"] == "connect failed" and e.get("status") == status for e in logs)


async def test_5xx_refusals_back_off_and_recover(sim: BinanceSimulator) -> None:
    sim.inject(Fault("reject", status=503, count=2))
    app = make_app(feed_yaml(sim.ws_url, sim.rest_url))
    sub = app.stream(maxsize=100_000)
    seen = await run_and_check(app, sub, _nothing)
    errors = statuses(seen, ST.ERROR)
    assert len(errors) == 2 and all("HTTP 503" in e.detail for e in errors)
    assert all(0 <= d <= 0.2 for d in reconnect_delays(seen))
    assert app.actors[0].counters.connects == 1


async def test_connection_refused_then_server_appears(sim: BinanceSimulator) -> None:
    port = free_port()
    leaks = LeakCheck.now()
    app = make_app(feed_yaml(f"ws://127.0.0.1:{port}/stream", sim.rest_url))
    sub = app.stream(maxsize=100_000)
    await app.start()
    try:
        seen = await collect_until(sub, lambda rs: len(statuses(rs, ST.ERROR)) >= 3)
        assert all("connect failed" in s.detail for s in statuses(seen, ST.ERROR))
        detail = statuses(seen, ST.ERROR)[0].detail.lower()
        assert "refused" in detail or "could not connect" in detail, detail
        assert app.actors[0].counters.connects == 0
        async with ChaosProxy(sim.port, port=port):  # the venue comes back
            seen += await collect_until(sub, lambda rs: has_after(rs, ST.SUBSCRIBED, Trade))
            await app.stop()
    finally:
        await app.stop()
    await leaks.assert_back()
    assert app.actors[0].counters.connects == 1


async def test_dns_failure_is_reported_and_retried() -> None:
    leaks = LeakCheck.now()
    app = make_app(feed_yaml("ws://streamkit-fault-matrix.invalid/stream", "http://unused"))
    sub = app.stream(maxsize=100_000)
    await app.start()
    try:
        seen = await collect_until(sub, lambda rs: len(statuses(rs, ST.ERROR)) >= 2)
    finally:
        await app.stop()
    await leaks.assert_back()
    errors = statuses(seen, ST.ERROR)
    assert all("resolve" in e.detail.lower() for e in errors), errors[0].detail
    assert ST.RECONNECTING in events(seen)


async def test_connect_timeout_against_a_silent_listener(sim: BinanceSimulator) -> None:
    silent = socket.socket()
    silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # the kernel completes TCP handshakes; nobody ever answers
    port = silent.getsockname()[1]
    leaks = LeakCheck.now()
    app = make_app(
        feed_yaml(
            f"ws://127.0.0.1:{port}/stream",
            sim.rest_url,
            connect_timeout=0.5,
            transport="{connect_timeout: 0.5}",
        )
    )
    sub = app.stream(maxsize=100_000)
    await app.start()
    try:
        seen = await collect_until(sub, lambda rs: len(statuses(rs, ST.ERROR)) >= 2)
        silent.close()
        async with ChaosProxy(sim.port, port=port):
            seen += await collect_until(sub, lambda rs: has_after(rs, ST.SUBSCRIBED, Trade))
            await app.stop()
    finally:
        silent.close()
        await app.stop()
    await leaks.assert_back(within=8.0)  # abandoned handshake threads finish within ~1 s
    errors = statuses(seen, ST.ERROR)
    assert all("timed out" in e.detail for e in errors[:2]), errors[0].detail


# --- silence ---------------------------------------------------------------------------------


async def test_stall_with_pings_flowing_goes_stale_and_reconnects(sim: BinanceSimulator) -> None:
    app = make_app(feed_yaml(sim.ws_url, sim.rest_url, stale_after=0.5))
    sub = app.stream(maxsize=100_000)

    async def body(_: list[Record]) -> list[Record]:
        sim.inject(Fault("stall"))  # WS pings keep flowing, data stops
        return await collect_until(sub, lambda rs: has_after(rs, ST.SUBSCRIBED, Trade))

    seen = await run_and_check(app, sub, body)
    ev = events(seen)
    assert ev[ev.index(ST.STALE) :][:5] == [
        ST.STALE,
        ST.DISCONNECTED,
        ST.RECONNECTING,
        ST.CONNECTED,
        ST.SUBSCRIBED,
    ]
    [stale] = statuses(seen, ST.STALE)
    assert "no data for" in stale.detail
    assert app.actors[0].counters.stale == 1


HEARTBEAT_ID = 424242


class HeartbeatBinanceFeed(BinanceFeed):
    """Binance with an application-level heartbeat the simulator answers (a
    ``LIST_SUBSCRIPTIONS`` request), like the venues whose clients must ping."""

    heartbeat: ClassVar[Heartbeat] = Heartbeat(
        interval=0.3,
        payload=json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": HEARTBEAT_ID}).encode(),
    )

    def protocol(self, plan: ConnectionPlan, connection: str) -> BinanceProtocol:
        return _HeartbeatProtocol(self, plan, connection)


class _HeartbeatProtocol(BinanceProtocol):
    def on_message(self, data: bytes, recv_ts: int, out: Output) -> bool:
        if f'"id":{HEARTBEAT_ID}'.encode() in data:
            out.pong = True
            return False
        return super().on_message(data, recv_ts, out)


async def test_half_open_pong_timeout(
    sim: BinanceSimulator, proxy: ChaosProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    def load(exchange: str) -> type[Feed]:
        return HeartbeatBinanceFeed

    monkeypatch.setattr(plugins, "load", load)
    app = make_app(feed_yaml(proxy.ws_url(), sim.rest_url, pong_timeout=0.6, stale_after=10))
    sub = app.stream(maxsize=100_000)

    async def body(_: list[Record]) -> list[Record]:
        await asyncio.sleep(0.7)  # heartbeats are answered while the path is healthy
        assert app.actors[0].counters.pong_timeouts == 0
        assert proxy.blackhole() == 1
        return await collect_until(sub, recovered)

    seen = await run_and_check(app, sub, body)
    [lost] = statuses(seen, ST.DISCONNECTED)
    assert "no heartbeat answer within 0.6s" in lost.detail
    assert ST.STALE not in events(seen)
    assert app.actors[0].counters.pong_timeouts == 1
    assert_reconnect_cycle(seen)


# --- garbage ----------------------------------------------------------------------------------

TRADE_JSON = (
    b'{"stream":"nknusdt@aggTrade","data":{"e":"aggTrade","E":1,"s":"NKNUSDT","a":1,'
    b'"p":"0.1","q":"1","f":1,"l":1,"T":1,"m":true,"M":true}}'
)


def _raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-15)
    return c.compress(data) + c.flush()


GARBAGE: dict[str, tuple[str, Any]] = {
    "invalid_utf8": ("proxy", dict(payload=b'{"stream":"nknusdt@aggTrade","data":"\xff\xfe"}')),
    "not_json": ("sim", Fault("garbage", text="<html><h1>502 Bad Gateway</h1></html>")),
    "wrong_shape": ("sim", Fault("garbage", text='{"stream":"nknusdt@aggTrade","data":[1,2]}')),
    "wrong_type": (
        "sim",
        Fault("garbage", text=TRADE_JSON.decode().replace('"p":"0.1"', '"p":{"x":1}')),
    ),
    "binary": ("proxy", dict(payload=b"\x00\x01\x02\x03 binary", opcode=OPCODE_BINARY)),
    "zlib": ("proxy", dict(payload=zlib.compress(TRADE_JSON), opcode=OPCODE_BINARY)),
    "gzip": ("proxy", dict(payload=gzip.compress(TRADE_JSON), opcode=OPCODE_BINARY)),
}


@pytest.mark.parametrize("kind", list(GARBAGE))
async def test_garbage_is_reported_and_the_stream_goes_on(
    sim: BinanceSimulator, proxy: ChaosProxy, kind: str
) -> None:
    where, fault = GARBAGE[kind]
    app = make_app(feed_yaml(proxy.ws_url(), sim.rest_url))
    sub = app.stream(maxsize=100_000)

    async def body(_: list[Record]) -> list[Record]:
        if where == "sim":
            assert sim.inject(fault) == 1
        else:
            assert proxy.inject_frame(**fault) == 1
        return await collect_until(sub, lambda rs: has_after(rs, ST.DECODE_ERROR, Trade))

    seen = await run_and_check(app, sub, body)
    [err] = statuses(seen, ST.DECODE_ERROR)
    assert "sample:" in err.detail and err.connection == "binance/0"
    assert ST.DISCONNECTED not in events(seen)
    assert app.actors[0].counters.decode_errors == 1


async def test_compressed_frame_without_negotiation_kills_the_connection(
    sim: BinanceSimulator, proxy: ChaosProxy
) -> None:
    """RSV1 set (permessage-deflate) though no extension was negotiated: a protocol error
    (RFC 6455 5.2), so the connection is failed and replaced, never decoded as data."""
    app = make_app(feed_yaml(proxy.ws_url(), sim.rest_url))
    sub = app.stream(maxsize=100_000)

    async def body(_: list[Record]) -> list[Record]:
        assert proxy.inject_frame(_raw_deflate(TRADE_JSON), rsv1=True) == 1
        return await collect_until(
            sub, lambda rs: recovered(rs) or has_after(rs, ST.DECODE_ERROR, Trade)
        )

    seen = await run_and_check(app, sub, body)
    bad = statuses(seen, ST.DISCONNECTED) + statuses(seen, ST.DECODE_ERROR)
    assert len(bad) == 1, bad
    trades = [r for r in seen if isinstance(r, Trade)]
    assert all(t.id != "1" for t in trades), "the compressed trade must never be published"


async def test_oversize_frame_kills_the_connection_and_recovers(sim: BinanceSimulator) -> None:
    app = make_app(
        feed_yaml(sim.ws_url, sim.rest_url, transport="{max_message_size: 65536}"),
    )
    sub = app.stream(maxsize=100_000)

    async def body(_: list[Record]) -> list[Record]:
        sim.inject(Fault("oversize", size=200_000))
        return await collect_until(sub, recovered)

    seen = await run_and_check(app, sub, body)
    [lost] = statuses(seen, ST.DISCONNECTED)
    assert "too large" in lost.detail.lower() or "size" in lost.detail.lower(), lost.detail
    assert_reconnect_cycle(seen)


# --- books -----------------------------------------------------------------------------------


def rebuild(books: list[Record]) -> tuple[dict[Decimal, Decimal], dict[Decimal, Decimal], int]:
    """The book a consumer maintains from the published records: (bids, asks, snapshots)."""
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
        assert not bids or not asks or max(bids) < min(asks), "a crossed book was published"
    return bids, asks, snapshots


DEPTH = b"depthUpdate"


@pytest.mark.parametrize(
    "faults",
    [
        pytest.param(("gap", "duplicate"), id="gap+duplicate"),
        pytest.param(("reorder", "corrupt_price", "corrupt_seq"), id="reorder+corrupt"),
    ],
)
async def test_book_faults_resync_and_never_publish_a_wrong_book(
    faults: tuple[str, ...], binance_capture: list[dict[str, Any]]
) -> None:
    deltas = [r for r in binance_capture if r.get("group") == "binance-spot-depth-NKNUSDT"]
    final_u = max(json.loads(r["raw"])["data"]["u"] for r in deltas if r["kind"] == "book_delta")
    simulator = BinanceSimulator(rate=50.0, replay_once=True)
    await simulator.start()
    try:
        async with ChaosProxy(simulator.port) as chaos:
            await _book_faults(simulator, chaos, faults, final_u)
    finally:
        await simulator.stop()


async def _book_faults(
    sim: BinanceSimulator, chaos: ChaosProxy, faults: tuple[str, ...], final_u: int
) -> None:
    leaks = LeakCheck.now()
    app = make_app(feed_yaml(chaos.ws_url(), sim.rest_url, channels="[l2_book]"))
    books = app.stream(Book, maxsize=100_000)
    status = app.stream("status", maxsize=10_000)
    await app.start()
    seen_status: list[Record] = []
    try:
        got = await collect_until(books, lambda rs: len(rs) >= 8)
        for fault in faults:
            if fault == "gap":
                sim.inject(Fault("gap", symbol="NKNUSDT"))
            elif fault == "duplicate":
                assert chaos.duplicate_next(DEPTH) == 1
            elif fault == "reorder":
                assert chaos.swap_next(DEPTH) == 1
            elif fault == "corrupt_price":  # an extra bid far above every ask: it would cross
                assert chaos.rewrite_next(DEPTH, b'"b":[["', b'"b":[["99.0","1.0"],["') == 1
            elif fault == "corrupt_seq":  # a mangled first update id
                assert chaos.rewrite_next(DEPTH, b'"U":', b'"U":9') == 1
            if fault != "duplicate":
                seen_status += await collect_until(status, lambda rs: bool(statuses(rs, ST.GAP)))
            got += await collect_until(books, lambda rs: len(rs) >= 4)
        async with asyncio.timeout(15):
            while got[-1].seq != final_u:  # type: ignore[attr-defined]
                got += await books.get_batch()
    finally:
        await app.stop()
    await leaks.assert_back()
    seen_status += [r async for r in status]  # what was still queued at shutdown
    final = sim.book("NKNUSDT")
    assert final.last_update_id == final_u
    bids, asks, snapshots = rebuild(got)
    assert bids == {Decimal(p): Decimal(q) for p, q in final.bids.items()}
    assert asks == {Decimal(p): Decimal(q) for p, q in final.asks.items()}
    gaps = statuses(seen_status, ST.GAP)
    resyncs = statuses(seen_status, ST.RESYNC)
    expected_gaps = len([f for f in faults if f != "duplicate"])
    assert len(gaps) == expected_gaps, [g.detail for g in gaps]
    assert len(resyncs) >= expected_gaps
    assert snapshots == 1 + expected_gaps
    assert all(r.symbol == "NKN-USDT" for r in gaps)
    assert not statuses(seen_status, ST.DISCONNECTED)  # resync is per symbol, no reconnect
    # an impossible update id (U > u) is a decode error; the lost diff then shows as a gap
    assert len(statuses(seen_status, ST.DECODE_ERROR)) == ("corrupt_seq" in faults)


# --- many connections --------------------------------------------------------------------------


async def test_reconnect_storm_100_connections(
    sim: BinanceSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    n, cap = 100, 4
    in_flight = peak = 0
    lock = threading.Lock()
    original = LibcurlTransport._perform

    def counted(self: Any, *args: Any) -> None:  # runs in the handshake worker threads
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        try:
            original(self, *args)
        finally:
            with lock:
                in_flight -= 1

    monkeypatch.setattr(LibcurlTransport, "_perform", counted)
    set_max_concurrent_connects(cap)
    storm_sim = BinanceSimulator(rate=5.0, ping_interval=1.0)
    await storm_sim.start()
    try:
        feeds = [
            feed_yaml(
                storm_sim.ws_url,
                storm_sim.rest_url,
                name=f"b{i}",
                reconnect="{initial: 0.5, max: 1.0}",
                connect_timeout=10,
                transport="{connect_timeout: 10}",
            )
            for i in range(n)
        ]
        app = make_app(*feeds)
        sub = app.stream("status", maxsize=100_000)
        leaks = LeakCheck.now()
        await app.start()
        try:
            seen = await collect_until(
                sub, lambda rs: len(statuses(rs, ST.SUBSCRIBED)) >= n, within=30
            )
            peak = 0
            t0 = time.monotonic()
            assert storm_sim.inject(Fault("drop")) == n
            seen = await collect_until(
                sub, lambda rs: len(statuses(rs, ST.SUBSCRIBED)) >= n, within=30
            )
            took = time.monotonic() - t0
        finally:
            await app.stop()
        await leaks.assert_back(within=10)
    finally:
        await storm_sim.stop()
        set_max_concurrent_connects(8)
    assert {s.connection for s in statuses(seen, ST.SUBSCRIBED)} == {f"b{i}/0" for i in range(n)}
    assert all(a.counters.connects == 2 for a in app.actors)
    delays = reconnect_delays(seen)
    assert len(delays) == n
    # full jitter: delays spread over [0, 0.5] rather than all at once
    assert max(delays) - min(delays) >= 0.25 and len(set(delays)) >= 20
    assert 1 <= peak <= cap
    connected = sorted(s.recv_ts for s in statuses(seen, ST.CONNECTED))
    assert (connected[-1] - connected[0]) / 1e9 >= 0.2  # reconnects spread over time
    print(f"storm: {n} reconnected in {took:.2f}s, peak concurrent handshakes {peak}")


# --- consumers ---------------------------------------------------------------------------------


async def test_slow_consumers_per_policy(sim: BinanceSimulator) -> None:
    app = make_app(feed_yaml(sim.ws_url, sim.rest_url, channels="[trades, bbo]"))
    fast = app.stream(Trade, maxsize=1_000_000, name="fast")
    blocking = app.stream(Trade, maxsize=4, policy="block", name="block")
    dropping = app.stream(Trade, maxsize=4, policy="drop_oldest", name="drop")
    conflating = app.stream(BBO, maxsize=2, policy="conflate", name="conflate")
    bbo_all = app.stream(BBO, maxsize=1_000_000, name="bbo_all")
    cut = app.stream(Trade, maxsize=4, policy="disconnect", name="cut")
    got_block: list[Record] = []

    async def slow_reader() -> None:
        async for rec in blocking:
            got_block.append(rec)
            await asyncio.sleep(0.004)

    leaks = LeakCheck.now()
    await app.start()
    reader = asyncio.create_task(slow_reader())
    try:
        await collect_until(fast, lambda rs: len(rs) >= 100)
    finally:
        await app.stop()
        await asyncio.wait_for(reader, 10)
    await leaks.assert_back()
    fast_total = fast.delivered + fast.depth  # every trade the feed published
    ids = [int(r.id) for r in got_block if isinstance(r, Trade)]
    # block: nothing lost over a sequence-numbered stream (aggTrade ids are consecutive)
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    assert len(got_block) == fast_total and blocking.dropped == 0
    assert blocking.max_depth <= 4
    # drop_oldest: bounded, and every record is accounted for
    assert dropping.max_depth <= 4
    assert dropping.delivered + dropping.dropped + dropping.depth == fast_total
    assert dropping.dropped > 0
    # conflate: bounded, every replaced record counted
    bbo_total = bbo_all.delivered + bbo_all.depth
    assert conflating.max_depth <= 2
    assert conflating.delivered + conflating.dropped + conflating.depth == bbo_total
    # disconnect: cut off, counted, reported; the others were not affected
    assert cut.cut_off and cut.dropped > 0
    assert fast.dropped == 0
    assert app.actors[0].counters.stale == 0


class FlakySink(sinks_base.Sink):
    """A user's sink with a bug: it raises on its 5th record, once."""

    failures = 0

    async def run(self, subscription: Subscription) -> None:
        async for _ in subscription:
            self.written += 1
            if self.written == 5 and FlakySink.failures == 0:
                FlakySink.failures += 1
                raise RuntimeError("bug in user sink")


async def test_consumer_that_raises_is_isolated_restarted_and_reported(
    sim: BinanceSimulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real_build = sinks_base.build_sink
    flaky: list[FlakySink] = []

    def build(name: str, config: Any) -> sinks_base.Sink:
        if config.path.endswith("flaky.jsonl"):
            flaky.append(FlakySink(name))
            return flaky[-1]
        return real_build(name, config)

    monkeypatch.setattr("streamkit.app.build_sink", build)
    FlakySink.failures = 0
    sinks = f"""
sinks:
  - type: jsonl
    path: {tmp_path / "flaky.jsonl"}
  - type: jsonl
    path: {tmp_path / "good.jsonl"}
"""
    app = make_app(feed_yaml(sim.ws_url, sim.rest_url), extra=sinks)
    sub = app.stream(Trade, maxsize=100_000)
    with structlog.testing.capture_logs() as logs:
        await app.start()
        try:
            await collect_until(sub, lambda rs: len(rs) >= 5)
            await collect_until(sub, lambda rs: flaky[0].written >= 20 and len(rs) >= 20)
        finally:
            await app.stop()
    failed = [e for e in logs if e["event"] == "child failed"]
    assert len(failed) == 1 and "sink[0]" in failed[0]["child"]
    assert "bug in user sink" in repr(failed[0]["exc_info"])
    assert app._sinks_sup is not None and app._sinks_sup.restarts[flaky[0].name] == 1
    assert app.failure is None
    # the other sink and the feed went on: the good file has every trade the app saw
    good = (tmp_path / "good.jsonl").read_text().splitlines()
    assert sum('"type":"trade"' in line for line in good) >= 20
    assert app.actors[0].counters.connects == 1


def test_restart_intensity_exceeded_exits_3_with_a_clear_message(tmp_path: Path) -> None:
    """A feed that can never run (``transport.kind: memory`` with no in-memory exchange
    registered: a ConfigError on every start, which reconnecting cannot fix) is restarted
    twice, then the feeds supervisor gives up and ``streamkit run`` exits 3."""
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        """
simulator: {rate: 20}
feeds:
  - exchange: binance
    url: simulator
    symbols: [NKN-USDT]
    channels: [trades]
    transport: {kind: memory}
supervision: {max_restarts: 2, within: 60}
"""
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "streamkit.cli", "run", str(cfg), "--duration", "30"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3, result.stderr[-3000:]
    assert time.monotonic() - started < 25  # it gave up; it did not run out the duration
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: supervisor 'feeds' gave up: child 'binance/0'"), last
    assert "no MemoryExchange is registered" in last
    assert result.stderr.count("child failed") == 3
    assert "supervisor escalated; shutting down" in result.stderr


async def _nothing(_: list[Record]) -> list[Record]:
    return []
