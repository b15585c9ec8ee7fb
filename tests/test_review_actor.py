"""Review findings in the connection actor: status records when plugin code fails, and no
silent loss when a make-before-break handover meets a slow ``block`` consumer."""

from __future__ import annotations

import asyncio

import pytest
from test_actor import TinyFeed, TinyProtocol, ack_all

from streamkit.actor import ConnectionActor
from streamkit.channel import Bus
from streamkit.config import FeedConfig
from streamkit.feed import ConnectionPlan, HttpGet, Output
from streamkit.model import Status, StatusEvent
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
