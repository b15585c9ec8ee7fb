"""Review findings in the connection actor: status records when plugin code fails, and no
silent loss when a make-before-break handover meets a slow ``block`` consumer."""

from __future__ import annotations

import asyncio
import json

import pytest
from test_actor import ShortLivedFeed, TinyFeed, TinyProtocol, ack_all, trade

from streamkit.actor import ConnectionActor
from streamkit.channel import Bus
from streamkit.config import BackoffOptions, FeedConfig
from streamkit.feed import ConnectionPlan, HttpGet, Output
from streamkit.model import Record, Status, StatusEvent, Trade
from streamkit.pacing import ConnectLimiter
from streamkit.transport.memory import MemoryExchange


def actor_for(feed: TinyFeed, exchange: MemoryExchange, bus: Bus) -> ConnectionActor:
    [plan] = feed.plan()

    async def fetch(url: str) -> tuple[int, bytes]:
        return 200, b"{}"

    return ConnectionActor(
        feed,
        plan,
        bus,
        transport_factory=exchange.transport_factory,
        http_fetch=fetch,
        connect_limiter=ConnectLimiter(100, 1.0),
    )


class BrokenHttpProtocol(TinyProtocol):
    def on_http(
        self, request: HttpGet, status: int, body: bytes, recv_ts: int, out: Output
    ) -> None:
        raise KeyError("lastUpdateId")  # a plugin bug on an unexpected REST answer


class BrokenHttpFeed(TinyFeed):
    def protocol(self, plan: ConnectionPlan, connection: str) -> TinyProtocol:
        return BrokenHttpProtocol(self, plan, connection)


async def test_a_plugin_error_publishes_disconnected_before_the_actor_fails() -> None:
    # An exception from plugin code outside on_message (on_http, resync, on_connected)
    # ended the actor with no status record: consumers saw 'connected' and then nothing,
    # although the connection was gone and data was missing until the supervisor's restart.
    exchange = MemoryExchange()
    bus = Bus()
    sub = bus.subscribe(maxsize=1000)
    cfg = FeedConfig(exchange="tiny", symbols=["BTC-USD"], channels=["trades"])
    actor = actor_for(BrokenHttpFeed(cfg), exchange, bus)
    task = asyncio.create_task(actor.run())
    peer = await exchange.next_connection()
    await ack_all(peer, requests=1)
    await peer.send_text('{"kind":"fetch"}')
    with pytest.raises(KeyError):  # still a failure for the supervisor to handle
        async with asyncio.timeout(3):
            await task
    events = [r for r in sub.drain_nowait() if isinstance(r, Status)]
    assert [e.event for e in events][-1] is StatusEvent.DISCONNECTED
    assert "KeyError" in events[-1].detail and "lastUpdateId" in events[-1].detail
    assert peer.client_close is not None


async def test_handover_under_block_backpressure_loses_nothing() -> None:
    # The old connection marks a batch's trade ids as published *before* publish_many,
    # which blocks on a full 'block' subscriber; the handover then cancelled that publish
    # and the successor dropped its copies of those trades as duplicates: lost, uncounted.
    exchange = MemoryExchange()
    bus = Bus()
    sub = bus.subscribe(maxsize=2)  # block, no timeout: lossless by contract
    cfg = FeedConfig(
        exchange="tiny",
        symbols=["BTC-USD"],
        channels=["trades"],
        reconnect=BackoffOptions(initial=0.01, max=0.05),
    )
    actor = actor_for(ShortLivedFeed(cfg), exchange, bus)
    task = asyncio.create_task(actor.run())
    seen: list[Record] = []
    try:
        old = await exchange.next_connection()
        await ack_all(old, requests=1)
        for i in range(1, 6):  # connected + subscribed fill the queue: the reader blocks
            await old.send_text(trade(i))
        new = await exchange.next_connection(within=3)  # the successor, ~0.9 s in
        sent = json.loads(await new.received())
        await new.send_text(json.dumps({"kind": "ack", "id": sent["id"]}))
        for i in range(4, 8):  # 4 and 5 overlap with the old connection
            await new.send_text(trade(i))
        async with asyncio.timeout(3):
            # Start reading only once the successor is ready: it then either took over at
            # once (cancelling the blocked publish) or waits for that publish to complete.
            while old.client_close is None and getattr(actor, "_successor", None) is None:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            while not any(isinstance(r, Trade) and r.id == "7" for r in seen):
                seen.extend(await sub.get_batch())
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    ids = [r.id for r in seen if isinstance(r, Trade)]
    assert ids == ["1", "2", "3", "4", "5", "6", "7"]
    took_over = [r for r in seen if isinstance(r, Status) and "took over" in r.detail]
    assert len(took_over) == 1
