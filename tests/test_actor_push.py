"""The actor's push mode: batches decoded and published from the transport's reader callback.

A push-capable in-memory transport (what LibcurlTransport does, without sockets) drives the
actor; the same observable contract as pull mode must hold: every record, in order, acks
settled, a full ``block`` subscriber loses nothing, decode errors reported, frames sent before
a close delivered before ``disconnected``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable

import pytest
from test_actor import TinyFeed, ack_all, until

from streamkit.actor import ConnectionActor
from streamkit.channel import Bus, Subscription
from streamkit.config import BackoffOptions, FeedConfig
from streamkit.model import Status, StatusEvent, Trade
from streamkit.pacing import ConnectLimiter
from streamkit.transport.base import Frame, PushTransport, TransportState
from streamkit.transport.memory import MemoryExchange, MemoryTransport
from streamkit.transport.options import TransportOptions


class PushMemoryTransport(MemoryTransport):
    """MemoryTransport plus push mode. Like LibcurlTransport it calls the receiver whenever
    frames arrive or the connection ends; unlike it, it also calls back from inside
    ``take_batch`` (room for a blocked peer), which the actor must tolerate."""

    receiver: Callable[[], None] | None = None
    pushes = 0

    def set_receiver(self, receiver: Callable[[], None] | None) -> None:
        self.receiver = receiver

    def take_batch(self, max_messages: int = 256) -> list[Frame]:
        if self._failure is not None and not (self.options.drain_on_error and self._frames):
            self._state = TransportState.CLOSED
            raise self._failure
        if self._frames:
            batch = [self._frames.popleft() for _ in range(min(max_messages, len(self._frames)))]
            self._signal()
            return batch
        if self._end is not None:
            self._state = TransportState.CLOSED
            raise self._end
        return []

    def _signal(self) -> None:
        super()._signal()
        if self.receiver is not None:
            self.pushes += 1
            self.receiver()


class PushExchange(MemoryExchange):
    def transport_factory(self, url: str, options: TransportOptions) -> MemoryTransport:
        return PushMemoryTransport(url, options, self)


@contextlib.asynccontextmanager
async def push_actor(
    maxsize: int = 10_000,
) -> AsyncIterator[tuple[PushExchange, Subscription, ConnectionActor]]:
    exchange = PushExchange()
    bus = Bus()
    sub = bus.subscribe(maxsize=maxsize)
    cfg = FeedConfig(
        exchange="tiny",
        symbols=["BTC-USD", "ETH-USD", "SOL-USD"],
        channels=["trades"],
        connect_timeout=1.0,
        reconnect=BackoffOptions(initial=0.01, max=0.05),
    )
    feed = TinyFeed(cfg)
    [plan] = feed.plan()

    async def fetch(url: str) -> tuple[int, bytes]:
        return 200, url.encode()

    actor = ConnectionActor(
        feed,
        plan,
        bus,
        transport_factory=exchange.transport_factory,
        http_fetch=fetch,
        connect_limiter=ConnectLimiter(100, 1.0),
    )
    task = asyncio.create_task(actor.run())
    try:
        yield exchange, sub, actor
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def trade(i: int) -> str:
    return json.dumps({"kind": "trade", "symbol": "BTCUSD", "price": f"{i}.5", "id": i})


async def test_push_mode_is_used_and_keeps_every_record_in_order() -> None:
    probe = PushMemoryTransport("ws://x", TransportOptions(), PushExchange())
    assert isinstance(probe, PushTransport)
    async with push_actor() as (exchange, sub, actor):
        peer = await exchange.next_connection()
        await ack_all(peer)
        await until(sub, StatusEvent.SUBSCRIBED)
        transport = peer._transport
        assert isinstance(transport, PushMemoryTransport)
        for i in range(1, 201):
            await peer.send_text(trade(i))
        await peer.send_text("{not json")
        await peer.send_text(trade(201))
        seen = await until(sub, Trade)
        async with asyncio.timeout(3):
            while not (isinstance(seen[-1], Trade) and seen[-1].id == "201"):
                seen.append(await sub.get())
        ids = [r.id for r in seen if isinstance(r, Trade)]
        assert ids == [str(i) for i in range(1, 202)]
        errors = [r for r in seen if isinstance(r, Status) and r.event is StatusEvent.DECODE_ERROR]
        assert len(errors) == 1 and actor.counters.decode_errors == 1
        assert actor.counters.records == 202  # 201 trades + the decode_error status
        assert transport.pushes > 0 and actor._push is not None


async def test_push_mode_full_block_subscriber_loses_nothing() -> None:
    async with push_actor(maxsize=3) as (exchange, sub, _actor):
        peer = await exchange.next_connection()
        await ack_all(peer)
        await until(sub, StatusEvent.SUBSCRIBED)

        async def send_all() -> None:
            for i in range(1, 101):
                await peer.send_text(trade(i))

        sender = asyncio.create_task(send_all())
        ids: list[str] = []
        async with asyncio.timeout(5):
            while len(ids) < 100:
                rec = await sub.get()
                if isinstance(rec, Trade):
                    ids.append(rec.id or "")
                await asyncio.sleep(0)  # a consumer slower than the feed
        await sender
        assert ids == [str(i) for i in range(1, 101)]
        assert sub.dropped == 0 and sub.max_depth <= 3


async def test_push_mode_delivers_frames_before_the_close() -> None:
    async with push_actor() as (exchange, sub, _actor):
        peer = await exchange.next_connection()
        await ack_all(peer)
        await until(sub, StatusEvent.SUBSCRIBED)
        for i in range(1, 6):
            await peer.send_text(trade(i))
        peer.close(1001, "going away")
        seen = await until(sub, StatusEvent.DISCONNECTED)
        assert [r.id for r in seen if isinstance(r, Trade)] == ["1", "2", "3", "4", "5"]
        # and it reconnects and resubscribes as in pull mode
        peer = await exchange.next_connection()
        await ack_all(peer)
        await peer.send_text(trade(6))
        after = await until(sub, Trade)
        assert isinstance(after[-1], Trade) and after[-1].id == "6"
