"""The connection actor against an in-memory exchange, with a tiny feed written the way a user
would write one (a Feed subclass with an application-level ping)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any, ClassVar

import msgspec
import pytest

from streamkit.actor import ActorState, ConnectionActor, SubState
from streamkit.channel import Bus, Subscription
from streamkit.config import BackoffOptions, FeedConfig
from streamkit.feed import (
    ConnectionPlan,
    Feed,
    FeedProtocol,
    Heartbeat,
    HttpGet,
    Limits,
    Output,
    Reconnect,
    ResyncBook,
    SubscribeRequest,
    chunked,
)
from streamkit.model import Record, Status, StatusEvent, Trade
from streamkit.pacing import ConnectLimiter
from streamkit.transport.memory import MemoryExchange, MemoryPeer


class Msg(msgspec.Struct):
    kind: str
    id: int | None = None
    symbol: str | None = None
    price: str | None = None
    reason: str | None = None


_decode = msgspec.json.Decoder(Msg)


class TinyFeed(Feed):
    """A toy venue: ``{"op":"sub","id":n,"args":[...]}`` acked by ``{"kind":"ack","id":n}``;
    trades ``{"kind":"trade","symbol":"BTCUSD","price":"1.5","id":7}``; text ping/pong."""

    id: ClassVar[str] = "tiny"
    channels: ClassVar[frozenset[str]] = frozenset({"trades"})
    default_url: ClassVar[str] = "ws://tiny.invalid/ws"
    limits: ClassVar[Limits] = Limits(
        max_streams_per_connection=10, max_streams_per_message=2, max_messages_per_second=100
    )
    heartbeat: ClassVar[Heartbeat] = Heartbeat(interval=0.1, payload=b"ping")

    def exchange_symbol(self, symbol: str) -> str:
        return symbol.replace("-", "")

    def normalize_symbol(self, exchange_symbol: str) -> str:
        return exchange_symbol[:3] + "-" + exchange_symbol[3:]

    def stream_name(self, channel: str, symbol: str) -> str:
        return f"{channel}:{self.exchange_symbol(symbol)}"

    def protocol(self, plan: ConnectionPlan, connection: str) -> TinyProtocol:
        return TinyProtocol(self, plan, connection)


class TinyProtocol(FeedProtocol):
    def url(self) -> str:
        return self.feed.url

    def subscriptions(self) -> list[SubscribeRequest]:
        return [
            SubscribeRequest(
                str(i),
                group,
                json.dumps({"op": "sub", "id": i, "args": [s.name for s in group]}).encode(),
            )
            for i, group in enumerate(chunked(self.plan.streams, 2), start=1)
        ]

    def on_message(self, data: bytes, recv_ts: int, out: Output) -> bool:
        if data == b"pong":
            out.pong = True
            return False
        msg = _decode.decode(data)
        if msg.kind == "ack":
            out.acks.append(str(msg.id))
        elif msg.kind == "nack":
            out.rejects.append((str(msg.id), msg.reason or ""))
        elif msg.kind == "trade":
            assert msg.symbol and msg.price
            out.records.append(
                Trade(
                    exchange=self.exchange,
                    symbol=self.feed.normalize_symbol(msg.symbol),
                    ts=None,
                    recv_ts=recv_ts,
                    price=Decimal(msg.price),
                    size=Decimal(1),
                    side="buy",
                    id=str(msg.id),
                )
            )
            return True
        elif msg.kind == "bye":
            out.actions.append(Reconnect("venue said bye"))
        elif msg.kind == "badbook":
            out.actions.append(ResyncBook("BTC-USD", "checksum"))
        elif msg.kind == "fetch":
            out.actions.append(HttpGet("http://tiny.invalid/snap", tag="x"))
        else:
            raise ValueError(f"unknown kind {msg.kind}")
        return False

    def on_http(
        self, request: HttpGet, status: int, body: bytes, recv_ts: int, out: Output
    ) -> None:
        out.records.append(
            Status(
                exchange=self.exchange,
                symbol=None,
                ts=None,
                recv_ts=recv_ts,
                event=StatusEvent.ERROR,
                detail=f"http {status} {body.decode()}",
            )
        )


def make_actor(
    exchange: MemoryExchange,
    bus: Bus,
    *,
    symbols: tuple[str, ...] = ("BTC-USD", "ETH-USD", "SOL-USD"),
    feed_cls: type[TinyFeed] = TinyFeed,
    **config: Any,
) -> ConnectionActor:
    """An actor for ``feed_cls`` on the in-memory exchange; ``config`` overrides FeedConfig
    keys (short timeouts and backoff by default, so tests run fast)."""
    settings: dict[str, Any] = {
        "stale_after": 5.0,
        "pong_timeout": 5.0,
        "connect_timeout": 1.0,
        "reconnect": BackoffOptions(initial=0.01, max=0.05),
        **config,
    }
    cfg = FeedConfig(exchange="tiny", symbols=list(symbols), channels=["trades"], **settings)
    feed = feed_cls(cfg)
    [plan] = feed.plan()

    async def fetch(url: str) -> tuple[int, bytes]:
        return 200, url.encode()

    return ConnectionActor(
        feed,
        plan,
        bus,
        transport_factory=exchange.transport_factory,
        http_fetch=fetch,
        connect_limiter=ConnectLimiter(100, 1.0),
    )


Running = tuple[MemoryExchange, Bus, Subscription, ConnectionActor]


@contextlib.asynccontextmanager
async def run_actor(**overrides: object) -> AsyncIterator[Running]:
    exchange = MemoryExchange()
    bus = Bus()
    sub = bus.subscribe(maxsize=10_000)
    actor = make_actor(exchange, bus, **overrides)
    task = asyncio.create_task(actor.run())
    try:
        yield exchange, bus, sub, actor
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    async with run_actor() as r:
        yield r


async def ack_all(peer: MemoryPeer, requests: int = 2) -> list[dict[str, object]]:
    sent = []
    for _ in range(requests):
        msg = json.loads(await peer.received())
        sent.append(msg)
        await peer.send_text(json.dumps({"kind": "ack", "id": msg["id"]}))
    return sent


async def until(
    sub: Subscription, predicate: type[Record] | StatusEvent, within: float = 3.0
) -> list[Record]:
    seen: list[Record] = []
    async with asyncio.timeout(within):
        while True:
            rec = await sub.get()
            seen.append(rec)
            if isinstance(predicate, StatusEvent):
                if isinstance(rec, Status) and rec.event is predicate:
                    return seen
            elif isinstance(rec, predicate):
                return seen


def status_events(records: list[Record]) -> list[StatusEvent]:
    return [r.event for r in records if isinstance(r, Status)]


async def test_subscribes_in_paced_batches_and_streams(running) -> None:  # type: ignore[no-untyped-def]
    exchange, _, sub, actor = running
    peer = await exchange.next_connection()
    sent = await ack_all(peer)
    assert [m["args"] for m in sent] == [["trades:BTCUSD", "trades:ETHUSD"], ["trades:SOLUSD"]]
    seen = await until(sub, StatusEvent.SUBSCRIBED)
    assert status_events(seen) == [StatusEvent.CONNECTED, StatusEvent.SUBSCRIBED]
    assert actor.state is ActorState.STREAMING
    assert set(actor.ledger.states.values()) == {SubState.CONFIRMED}
    await peer.send_text('{"kind":"trade","symbol":"BTCUSD","price":"1.50","id":9}')
    [trade] = await until(sub, Trade)
    assert isinstance(trade, Trade)
    assert (trade.symbol, trade.price, trade.id, trade.exchange) == (
        "BTC-USD",
        Decimal("1.50"),
        "9",
        "tiny",
    )


async def test_rejected_subscription_is_reported_not_retried(running) -> None:  # type: ignore[no-untyped-def]
    exchange, _, sub, actor = running
    peer = await exchange.next_connection()
    first = json.loads(await peer.received())
    await peer.send_text(
        json.dumps({"kind": "nack", "id": first["id"], "reason": "no such market"})
    )
    second = json.loads(await peer.received())
    await peer.send_text(json.dumps({"kind": "ack", "id": second["id"]}))
    seen = await until(sub, StatusEvent.SUBSCRIBED)
    [err] = [r for r in seen if isinstance(r, Status) and r.event is StatusEvent.ERROR]
    assert "no such market" in err.detail and "trades:BTCUSD" in err.detail
    assert actor.ledger.states == {"1": SubState.REJECTED, "2": SubState.CONFIRMED}
    assert len(exchange.connections) == 1


async def test_unacknowledged_subscription_reconnects_and_replays(running) -> None:  # type: ignore[no-untyped-def]
    exchange, _, sub, _ = running
    peer = await exchange.next_connection()
    await peer.received()
    await peer.received()  # never acked
    seen = await until(sub, StatusEvent.RECONNECTING, within=4)
    [gone] = [r for r in seen if isinstance(r, Status) and r.event is StatusEvent.DISCONNECTED]
    assert "not acknowledged" in gone.detail
    again = await exchange.next_connection()
    resent = await ack_all(again)
    assert [m["args"] for m in resent] == [["trades:BTCUSD", "trades:ETHUSD"], ["trades:SOLUSD"]]
    await until(sub, StatusEvent.SUBSCRIBED)


async def test_decode_error_is_counted_published_and_stream_goes_on(running) -> None:  # type: ignore[no-untyped-def]
    exchange, _, sub, actor = running
    peer = await exchange.next_connection()
    await ack_all(peer)
    await until(sub, StatusEvent.SUBSCRIBED)
    await peer.send_text("{{{ not json")
    await peer.send_text('{"kind":"mystery"}')
    await peer.send_bytes(b"\x00\xff binary")
    await peer.send_text('{"kind":"trade","symbol":"BTCUSD","price":"2","id":10}')
    seen = await until(sub, Trade)
    errors = [r for r in seen if isinstance(r, Status) and r.event is StatusEvent.DECODE_ERROR]
    assert len(errors) == 3 and actor.counters.decode_errors == 3
    assert "not json" in errors[0].detail and "mystery" in errors[1].detail
    assert len(exchange.connections) == 1


async def test_pong_timeout_reconnects() -> None:
    async with run_actor(pong_timeout=0.3) as (exchange, _, sub, actor):
        await _pong_timeout(exchange, sub, actor)


async def _pong_timeout(
    exchange: MemoryExchange, sub: Subscription, actor: ConnectionActor
) -> None:
    peer = await exchange.next_connection()
    await ack_all(peer)
    # answer the first ping, then go silent (a half-open connection)
    while (await peer.received()) != "ping":
        pass
    await peer.send_text("pong")
    seen = await until(sub, StatusEvent.RECONNECTING)
    [gone] = [r for r in seen if isinstance(r, Status) and r.event is StatusEvent.DISCONNECTED]
    assert "no heartbeat answer" in gone.detail
    assert actor.counters.pong_timeouts == 1
    await exchange.next_connection()


async def test_stale_when_no_data_even_with_pongs() -> None:
    async with run_actor(stale_after=0.4) as (exchange, _, sub, actor):
        await _stale(exchange, sub, actor)


async def _stale(exchange: MemoryExchange, sub: Subscription, actor: ConnectionActor) -> None:
    peer = await exchange.next_connection()
    await ack_all(peer)

    async def answer_pings() -> None:
        while True:
            if await peer.received() == "ping":
                await peer.send_text("pong")

    responder = asyncio.create_task(answer_pings())
    try:
        seen = await until(sub, StatusEvent.RECONNECTING)
    finally:
        responder.cancel()
    assert status_events(seen)[-3:] == [
        StatusEvent.STALE,
        StatusEvent.DISCONNECTED,
        StatusEvent.RECONNECTING,
    ]
    assert actor.counters.stale == 1 and actor.counters.pong_timeouts == 0


async def test_retry_after_is_honoured() -> None:
    exchange = MemoryExchange()
    exchange.refuse_next(status=429, retry_after=0.5)
    bus = Bus()
    sub = bus.subscribe()
    actor = make_actor(exchange, bus)
    task = asyncio.create_task(actor.run())
    try:
        seen = await until(sub, StatusEvent.RECONNECTING)
        peer = await exchange.next_connection()
        await ack_all(peer)
        await until(sub, StatusEvent.SUBSCRIBED)
    finally:
        task.cancel()
    err, again = [r for r in seen if isinstance(r, Status)]
    assert "429" in err.detail
    match = re.search(r"reconnecting in ([0-9.]+)s", again.detail)
    assert match and float(match.group(1)) >= 0.5


async def test_forbidden_backs_off_hard() -> None:
    exchange = MemoryExchange()
    exchange.refuse_next(status=403)
    bus = Bus()
    sub = bus.subscribe()
    actor = make_actor(exchange, bus)
    task = asyncio.create_task(actor.run())
    try:
        seen = await until(sub, StatusEvent.RECONNECTING)
    finally:
        task.cancel()
    match = re.search(
        r"reconnecting in ([0-9.]+)s", [r for r in seen if isinstance(r, Status)][-1].detail
    )
    assert match and float(match.group(1)) == pytest.approx(0.05)  # reconnect.max


async def test_venue_requested_reconnect_and_default_book_resync(running) -> None:  # type: ignore[no-untyped-def]
    exchange, _, sub, _ = running
    peer = await exchange.next_connection()
    await ack_all(peer)
    await until(sub, StatusEvent.SUBSCRIBED)
    await peer.send_text('{"kind":"bye"}')
    seen = await until(sub, StatusEvent.RECONNECTING)
    assert "venue said bye" in [r for r in seen if isinstance(r, Status)][-2].detail
    peer = await exchange.next_connection()
    await ack_all(peer)
    await until(sub, StatusEvent.SUBSCRIBED)
    await peer.send_text('{"kind":"badbook"}')  # the Feed default resyncs by reconnecting
    seen = await until(sub, StatusEvent.RECONNECTING)
    assert "book resync for BTC-USD" in [r for r in seen if isinstance(r, Status)][-2].detail
    assert peer.client_close is not None


async def test_http_requests_are_answered_to_the_protocol(running) -> None:  # type: ignore[no-untyped-def]
    exchange, _, sub, _ = running
    peer = await exchange.next_connection()
    await ack_all(peer)
    await until(sub, StatusEvent.SUBSCRIBED)
    await peer.send_text('{"kind":"fetch"}')
    seen = await until(sub, StatusEvent.ERROR)
    assert seen[-1].detail == "http 200 http://tiny.invalid/snap"  # type: ignore[attr-defined]


async def test_cancel_closes_the_transport() -> None:
    exchange = MemoryExchange()
    bus = Bus()
    actor = make_actor(exchange, bus)
    task = asyncio.create_task(actor.run())
    peer = await exchange.next_connection()
    await ack_all(peer)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert actor.state is ActorState.STOPPED
    assert peer.client_close is not None


class ShortLivedFeed(TinyFeed):
    """A venue that drops connections after one second (like Binance after 24 h)."""

    limits: ClassVar[Limits] = Limits(
        max_streams_per_connection=10,
        max_streams_per_message=2,
        max_messages_per_second=100,
        max_connection_age=1.0,
    )


async def wait_for_trade(seen: list[Record], trade_id: str, within: float = 3.0) -> None:
    async with asyncio.timeout(within):
        # polling a list another task fills
        while not any(isinstance(r, Trade) and r.id == trade_id for r in seen):  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def trade(i: int) -> str:
    return json.dumps({"kind": "trade", "symbol": "BTCUSD", "price": "1", "id": i})


async def test_lifetime_limit_hands_over_without_gap_or_duplicate() -> None:
    exchange = MemoryExchange()
    bus = Bus()
    sub = bus.subscribe(maxsize=10_000)
    actor = make_actor(exchange, bus, symbols=("BTC-USD",), feed_cls=ShortLivedFeed)
    seen: list[Record] = []

    def trade_ids() -> list[str]:
        return [r.id for r in seen if isinstance(r, Trade)]

    async def collect() -> None:
        async for record in sub:
            seen.append(record)

    collector = asyncio.create_task(collect())
    task = asyncio.create_task(actor.run())
    try:
        old = await exchange.next_connection()
        await ack_all(old, requests=1)
        for i in range(1, 6):
            await old.send_text(trade(i))
        # about 0.9 s in, the actor opens a successor while the old connection keeps streaming
        new = await exchange.next_connection(within=3)
        await ack_all(new, requests=1)
        # events after the successor subscribed reach both connections: 6 and 7 overlap;
        # 8 and 9 reach only the successor, which holds them back until it takes over
        for i in (6, 7):
            await old.send_text(trade(i))
            await new.send_text(trade(i))
        for i in (8, 9):
            await new.send_text(trade(i))
        await wait_for_trade(seen, "9")
        await new.send_text(trade(10))  # and it is the live connection now
        await wait_for_trade(seen, "10")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        collector.cancel()
    assert sorted(trade_ids(), key=int) == [str(i) for i in range(1, 11)]  # none lost, none twice
    events = status_events(seen)
    assert StatusEvent.DISCONNECTED not in events and StatusEvent.RECONNECTING not in events
    takeover = [r for r in seen if isinstance(r, Status) and "took over" in r.detail]
    assert len(takeover) == 1 and takeover[0].event is StatusEvent.CONNECTED
    assert old.client_close is not None  # the old connection was closed after the takeover
    assert actor.counters.reconnects == 0 and actor.state is ActorState.STOPPED


async def test_handover_falls_back_to_reconnect_when_successor_is_not_ready() -> None:
    exchange = MemoryExchange()
    bus = Bus()
    sub = bus.subscribe(maxsize=10_000)
    actor = make_actor(
        exchange, bus, symbols=("BTC-USD",), feed_cls=ShortLivedFeed, connect_timeout=0.3
    )
    task = asyncio.create_task(actor.run())
    try:
        old = await exchange.next_connection()
        await ack_all(old, requests=1)
        await exchange.next_connection(within=3)  # the successor never acks its subscription
        seen = await until(sub, StatusEvent.RECONNECTING, within=3)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    [gone] = [r for r in seen if isinstance(r, Status) and r.event is StatusEvent.DISCONNECTED]
    assert "planned reconnect" in gone.detail and "not ready" in gone.detail


async def test_connected_status_never_shows_url_credentials() -> None:
    exchange = MemoryExchange()
    bus = Bus()
    sub = bus.subscribe(maxsize=100)
    actor = make_actor(
        exchange,
        bus,
        symbols=("BTC-USD",),
        url="wss://user:hunter2@tiny.invalid/ws?listenKey=s3cret",
    )
    task = asyncio.create_task(actor.run())
    try:
        [connected] = await until(sub, StatusEvent.CONNECTED)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert isinstance(connected, Status)
    assert connected.detail == "wss://tiny.invalid/ws"
    assert "s3cret" not in connected.detail and "hunter2" not in connected.detail


async def test_planned_reconnect_after_a_healthy_session_skips_backoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import streamkit.actor as actor_module

    monkeypatch.setattr(actor_module, "MIN_HEALTHY_SESSION", 0.0)
    exchange = MemoryExchange()
    bus = Bus()
    sub = bus.subscribe(maxsize=100)
    actor = make_actor(exchange, bus, symbols=("BTC-USD",))
    # a long backoff that a planned reconnect must not wait for
    actor.backoff = actor_module.Backoff(BackoffOptions(initial=5.0, max=5.0))
    task = asyncio.create_task(actor.run())
    try:
        peer = await exchange.next_connection()
        await ack_all(peer, requests=1)
        await until(sub, StatusEvent.SUBSCRIBED)
        await peer.send_text('{"kind":"bye"}')
        seen = await until(sub, StatusEvent.RECONNECTING)
        await exchange.next_connection(within=1.0)  # well before any 5 s backoff
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert seen[-1].detail == "reconnecting in 0.00s"  # type: ignore[attr-defined]
    assert actor.backoff.attempt == 0
