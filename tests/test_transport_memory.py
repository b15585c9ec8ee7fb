"""MemoryTransport / MemoryExchange: the in-process transport honours the Transport contract,
and the factory picks transports by kind."""

from __future__ import annotations

import asyncio

import pytest

from streamkit.errors import (
    ConfigError,
    ConnectError,
    ConnectionClosed,
    MessageTooLarge,
    TransportError,
)
from streamkit.transport.base import Frame, Transport, TransportState
from streamkit.transport.curl import CurlTransport
from streamkit.transport.factory import (
    make_transport,
    register_memory_exchange,
    unregister_memory_exchange,
)
from streamkit.transport.libcurl import LibcurlTransport
from streamkit.transport.memory import MemoryExchange, MemoryPeer, MemoryTransport
from streamkit.transport.options import TransportOptions

URL = "wss://memory.test/ws"


def opts(**kwargs: object) -> TransportOptions:
    return TransportOptions(kind="memory", **kwargs)  # type: ignore[arg-type]


async def open_pair(
    exchange: MemoryExchange | None = None, **kwargs: object
) -> tuple[MemoryTransport, MemoryPeer]:
    exchange = exchange or MemoryExchange()
    transport = exchange.transport_factory(URL, opts(**kwargs))
    await transport.connect()
    return transport, await exchange.next_connection(within=1)


async def test_round_trip_and_peer_view() -> None:
    t, peer = await open_pair(headers={"X-Key": "k"})
    assert isinstance(t, Transport)
    assert t.state is TransportState.OPEN and peer.is_open
    assert (peer.url, peer.headers) == (URL, {"X-Key": "k"})

    await t.send('{"op":"sub"}')
    await t.send(b'{"op":"sub2"}')
    assert await peer.received(within=1) == '{"op":"sub"}'
    assert await peer.received(within=1) == '{"op":"sub2"}'
    assert peer.inbox == ['{"op":"sub"}', '{"op":"sub2"}']
    with pytest.raises(TimeoutError):
        await peer.received(within=0.05)

    await peer.send_text("a")
    await peer.send_bytes(b"\x00b")
    assert await t.recv_batch() == [Frame(b"a"), Frame(b"\x00b", binary=True)]


async def test_recv_batch_waits_then_takes_what_is_buffered() -> None:
    t, peer = await open_pair()
    waiter = asyncio.create_task(t.recv_batch(3))
    await asyncio.sleep(0.01)
    assert not waiter.done()  # nothing to return yet: it waits
    for i in range(5):
        await peer.send_text(f"m{i}")
    assert [f.data for f in await waiter] == [b"m0", b"m1", b"m2"]
    assert [f.data for f in await t.recv_batch(3)] == [b"m3", b"m4"]


async def test_peer_close_delivers_buffered_frames_first() -> None:
    t, peer = await open_pair()
    await peer.send_text("last words")
    peer.close(1013, "try again later")
    assert not peer.is_open
    assert await t.recv_batch() == [Frame(b"last words")]
    with pytest.raises(ConnectionClosed) as info:
        await t.recv_batch()
    assert (info.value.code, info.value.reason) == (1013, "try again later")
    assert t.state is TransportState.CLOSED
    with pytest.raises(ConnectionClosed):
        await t.send("too late")


async def test_close_wakes_a_waiting_receiver() -> None:
    t, peer = await open_pair()
    waiter = asyncio.create_task(t.recv_batch())
    await asyncio.sleep(0.01)
    peer.close(1001, "going away")
    with pytest.raises(ConnectionClosed) as info:
        await asyncio.wait_for(waiter, 1)
    assert info.value.code == 1001


@pytest.mark.parametrize("drain", [False, True])
async def test_peer_fail_respects_drain_on_error(drain: bool) -> None:
    t, peer = await open_pair(drain_on_error=drain)
    await peer.send_text("buffered")
    peer.fail()
    got: list[Frame] = []
    with pytest.raises(ConnectionClosed) as info:
        while True:
            got += await t.recv_batch()
    assert info.value.code == 1006
    assert got == ([Frame(b"buffered")] if drain else [])


async def test_peer_fail_with_custom_error() -> None:
    t, peer = await open_pair()
    peer.fail(TransportError("boom"))
    with pytest.raises(TransportError, match="boom"):
        await t.recv_batch()
    with pytest.raises(ConnectionClosed):  # the peer cannot push into a dead connection
        await peer.send_text("x")


async def test_max_message_size() -> None:
    t, peer = await open_pair(max_message_size=1024)
    await peer.send_text("a" * 1024)  # at the limit: fine
    await peer.send_text("b" * 1025)
    with pytest.raises(MessageTooLarge):
        while True:
            await t.recv_batch()
    assert t.state is TransportState.CLOSED


async def test_full_receive_queue_blocks_the_peer() -> None:
    t, peer = await open_pair(recv_queue_size=2, block_on_full_recv_queue=True)
    await peer.send_text("1")
    await peer.send_text("2")
    third = asyncio.create_task(peer.send_text("3"))
    await asyncio.sleep(0.01)
    assert not third.done()  # backpressure
    assert [f.data for f in await t.recv_batch()] == [b"1", b"2"]
    await asyncio.wait_for(third, 1)
    assert [f.data for f in await t.recv_batch()] == [b"3"]


async def test_full_receive_queue_fails_when_not_blocking() -> None:
    t, peer = await open_pair(recv_queue_size=2, block_on_full_recv_queue=False)
    for i in range(3):
        await peer.send_text(str(i))
    with pytest.raises(TransportError, match="queue full"):
        await t.recv_batch()


async def test_pings_are_observable() -> None:
    t, peer = await open_pair()
    await t.ping(b"hb")
    await t.ping()
    assert await peer.wait_for_ping(2, within=1) == b""
    assert peer.pings == [b"hb", b""]
    with pytest.raises(ValueError):
        await t.ping(b"x" * 126)


async def test_client_close_is_seen_by_peer_and_idempotent() -> None:
    t, peer = await open_pair()
    await t.close(1000, "bye")
    await t.close(4000, "again")
    assert peer.client_close == (1000, "bye")
    assert not peer.is_open
    with pytest.raises(ConnectionClosed):
        await t.recv_batch()
    with pytest.raises(ConnectionClosed):
        await peer.send_text("x")
    with pytest.raises(ConnectError, match="single-use"):
        await t.connect()


async def test_refusals_and_reconnects_through_the_factory() -> None:
    exchange = MemoryExchange()
    exchange.refuse_next(status=429, retry_after=5)
    exchange.refuse_next()
    first = exchange.transport_factory(URL, opts())
    with pytest.raises(ConnectError) as info:
        await first.connect()
    assert (info.value.status, info.value.retry_after) == (429, 5)
    assert first.state is TransportState.CLOSED
    with pytest.raises(ConnectError) as info:
        await exchange.transport_factory(URL, opts()).connect()
    assert info.value.status is None

    # each reconnect builds a new transport and shows up as a new peer
    a, peer_a = await open_pair(exchange)
    peer_a.close(1001)
    with pytest.raises(ConnectionClosed):
        await a.recv_batch()
    b, peer_b = await open_pair(exchange)
    assert peer_a is not peer_b
    assert exchange.connections == [peer_a, peer_b] and exchange.latest is peer_b
    assert exchange.attempts == 4
    await peer_b.send_text("new")
    assert await b.recv_batch() == [Frame(b"new")]


async def test_stalled_connect_times_out() -> None:
    exchange = MemoryExchange()
    exchange.stall_next()
    t = exchange.transport_factory(URL, opts(connect_timeout=0.05))
    with pytest.raises(ConnectError, match="timed out"):
        await t.connect()
    assert exchange.connections == []


async def test_recv_before_connect_is_an_error() -> None:
    t = MemoryExchange().transport_factory(URL, opts())
    with pytest.raises(TransportError, match="not open"):
        await t.recv_batch()
    with pytest.raises(TransportError, match="not open"):
        await t.send("x")


# --- factory --------------------------------------------------------------------------------


def test_factory_builds_curl_by_default() -> None:
    t = make_transport("wss://example.test/ws", TransportOptions())
    assert isinstance(t, LibcurlTransport)  # kind "curl": streamkit's own libcurl read loop
    assert t.state is TransportState.NEW
    old = make_transport("wss://example.test/ws", TransportOptions(kind="curl_cffi"))
    assert isinstance(old, CurlTransport)


async def test_factory_memory_needs_a_registered_exchange() -> None:
    with pytest.raises(ConfigError, match="no MemoryExchange is registered"):
        make_transport(URL, opts())
    exchange = MemoryExchange()
    register_memory_exchange(URL, exchange)
    try:
        t = make_transport(URL, opts())
        assert isinstance(t, MemoryTransport)
        await t.connect()
        assert exchange.connections[0].url == URL
    finally:
        unregister_memory_exchange(URL)
    with pytest.raises(ConfigError):
        make_transport(URL, opts())
