"""The Deribit plugin, sans-I/O: real captured frames in, normalized records out.

Frames come from the live capture shipped as simulator data (``deribit.jsonl``, 2021-2022);
the capture subscribed ``.raw`` channels, so the protocols here use ``options.interval: raw``.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from importlib import resources
from typing import Any

import msgspec
import pytest

from streamkit.actor import ConnectionActor
from streamkit.channel import Bus, Subscription
from streamkit.config import BackoffOptions, FeedConfig
from streamkit.feed import DecodeError, Output, ResyncBook, Send
from streamkit.model import (
    BBO,
    Book,
    Funding,
    OpenInterest,
    Record,
    Status,
    StatusEvent,
    Ticker,
    Trade,
)
from streamkit.pacing import ConnectLimiter
from streamkit.transport.memory import MemoryExchange
from streamkit_deribit import DeribitFeed
from streamkit_deribit import symbols as deribit_symbols
from streamkit_deribit.feed import DeribitProtocol

Rows = list[dict[str, Any]]
GROUP = "deribit-book-BTC-24SEP21-8000-P"
OPTION = "BTC-USD-210924-8000-P"


@pytest.fixture(scope="module")
def capture() -> Rows:
    text = (resources.files("streamkit.simulator") / "data" / "deribit.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def make_protocol(symbols: list[str], channels: list[str], **options: Any) -> DeribitProtocol:
    cfg = FeedConfig(exchange="deribit", symbols=symbols, channels=channels, options=options)
    feed = DeribitFeed(cfg)
    assert feed.check() == []
    [plan] = feed.plan()
    return feed.protocol(plan, "deribit/0")


def raw(row: dict[str, Any]) -> bytes:
    return str(row["raw"]).encode()


def book_frames(capture: Rows) -> list[bytes]:
    return [raw(r) for r in capture if r.get("group") == GROUP]


def sent(actions: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(a.payload) for a in actions if isinstance(a, Send)]


# --- symbols ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("venue", "normalized"),
    [
        ("BTC-PERPETUAL", "BTC-USD-PERP"),
        ("ETH-PERPETUAL", "ETH-USD-PERP"),
        ("BTC_USDC-PERPETUAL", "BTC-USDC-PERP"),
        ("BTC-24SEP21", "BTC-USD-210924"),
        ("BTC-2JUL21", "BTC-USD-210702"),  # Deribit writes the day without a leading zero
        ("BTC-24SEP21-8000-P", "BTC-USD-210924-8000-P"),
        ("BTC-31DEC21-300000-C", "BTC-USD-211231-300000-C"),
        ("XRP_USDC-30JUN23-0d625-C", "XRP-USDC-230630-0.625-C"),
        ("BTC_USDC", "BTC-USDC"),
    ],
)
def test_symbol_mapping_round_trips(venue: str, normalized: str) -> None:
    feed = make_protocol([normalized], ["trades"]).feed
    assert feed.normalize_symbol(venue) == normalized
    assert feed.exchange_symbol(normalized) == venue


@pytest.mark.parametrize("venue", ["BTC-02JUL21", "BTC-31FEB21", "BTC", "BTC-FS-24SEP21_PERP"])
def test_unsupported_or_irreversible_instruments_are_rejected(venue: str) -> None:
    with pytest.raises(ValueError):
        make_protocol(["BTC-USD-PERP"], ["trades"]).feed.normalize_symbol(venue)


@pytest.mark.parametrize(
    "normalized", ["BTC-USD", "BTC-USD-210931", "BTC-USD-210924-8000-X", "BTC-USDT-PERP-1"]
)
def test_symbols_deribit_cannot_list_are_rejected(normalized: str) -> None:
    with pytest.raises(ValueError):
        make_protocol(["BTC-USD-PERP"], ["trades"]).feed.exchange_symbol(normalized)


def test_config_check_flags_bad_options() -> None:
    cfg = FeedConfig(
        exchange="deribit",
        symbols=["BTC-USD-PERP"],
        channels=["trades"],
        options={"interval": "1s", "heartbeat_interval": 5},
    )
    keys = [key for key, _ in DeribitFeed(cfg).check()]
    assert keys == ["options.interval", "options.heartbeat_interval"]


# --- connect, subscribe, acks ------------------------------------------------------------------


def test_set_heartbeat_is_sent_on_connect(capture: Rows) -> None:
    [documented] = [json.loads(raw(r)) for r in capture if r["kind"] == "heartbeat_setup_request"]
    protocol = make_protocol(["BTC-USD-PERP"], ["trades"])
    out = Output()
    protocol.on_connected(0, out)
    [request] = sent(out.actions)
    assert request.keys() == documented.keys()
    assert (request["jsonrpc"], request["method"]) == ("2.0", "public/set_heartbeat")
    assert request["params"] == {"interval": 30}
    protocol = make_protocol(["BTC-USD-PERP"], ["trades"], heartbeat_interval=10)
    out.clear()
    protocol.on_connected(0, out)
    assert sent(out.actions)[0]["params"] == {"interval": 10}


def test_subscribe_is_a_json_rpc_call_with_channels() -> None:
    protocol = make_protocol(
        ["BTC-USD-PERP"], ["trades", "bbo", "l2_book", "ticker", "funding", "open_interest"]
    )
    [request] = protocol.subscriptions()
    body = json.loads(request.payload)
    assert body == {
        "jsonrpc": "2.0",
        "id": int(request.key),
        "method": "public/subscribe",
        "params": {
            # ticker, funding and open_interest share one ticker channel
            "channels": [
                "trades.BTC-PERPETUAL.100ms",
                "quote.BTC-PERPETUAL",
                "book.BTC-PERPETUAL.100ms",
                "ticker.BTC-PERPETUAL.100ms",
            ]
        },
    }
    assert len(request.streams) == 6


def capture_protocol(capture: Rows) -> DeribitProtocol:
    """Subscribed to what the captured client asked for (10 options, book/trades/ticker)."""
    [request] = [json.loads(raw(r)) for r in capture if r["kind"] == "subscribe_request"]
    instruments = sorted({c.split(".")[1] for c in request["params"]["channels"]})
    symbols = [deribit_symbols.to_normalized(i) for i in instruments]
    return make_protocol(symbols, ["l2_book", "trades", "ticker"], interval="raw")


def test_captured_ack_listing_every_channel_confirms_the_request(capture: Rows) -> None:
    [ack] = [raw(r) for r in capture if r["kind"] == "subscribe_ack" and b'"id":0' in raw(r)]
    protocol = capture_protocol(capture)
    [request] = protocol.subscriptions()
    # the capture's request had id 0; ours numbers from 1 (set_heartbeat shares the counter)
    reply = ack.replace(b'"id":0', b'"id":' + request.key.encode(), 1)
    out = Output()
    assert protocol.on_message(reply, 0, out) is False
    assert out.acks == [request.key] and out.rejects == []


def test_ack_missing_a_channel_or_an_error_rejects(capture: Rows) -> None:
    protocol = make_protocol(["BTC-USD-PERP"], ["trades", "l2_book"])
    [request] = protocol.subscriptions()
    rid = int(request.key)
    out = Output()
    partial = {"jsonrpc": "2.0", "id": rid, "result": ["trades.BTC-PERPETUAL.100ms"]}
    protocol.on_message(json.dumps(partial).encode(), 0, out)
    assert out.acks == []
    assert out.rejects == [(request.key, "not subscribed: book.BTC-PERPETUAL.100ms")]
    [error] = [raw(r) for r in capture if r["kind"] == "error"]  # id 1, code 10028
    out.clear()
    protocol.on_message(error.replace(b'"id":1', b'"id":' + request.key.encode()), 0, out)
    assert out.rejects == [(request.key, "code 10028: too_many_requests")]
    # an error answering anything else is reported as a status record
    out.clear()
    protocol.on_message(error.replace(b'"id":1', b'"id":999'), 4, out)
    [status] = out.records
    assert isinstance(status, Status) and status.event is StatusEvent.ERROR
    assert status.detail == "code 10028: too_many_requests"


def test_synthetic_ack_shape_with_timing_fields_is_accepted(capture: Rows) -> None:
    [ack] = [
        raw(r)
        for r in capture
        if r["kind"] == "subscribe_ack" and r["provenance"] == "synthetic_fixture"
    ]
    protocol = make_protocol(["BTC-USD-PERP"], ["trades", "l2_book"])
    [request] = protocol.subscriptions()
    assert request.key == "1"  # the synthetic fixture answers id 1
    out = Output()
    protocol.on_message(ack, 0, out)
    assert out.acks == ["1"]


# --- heartbeats -------------------------------------------------------------------------------


def test_test_request_is_answered_with_public_test(capture: Rows) -> None:
    [test_request] = [raw(r) for r in capture if r["kind"] == "heartbeat"]
    [documented] = [json.loads(raw(r)) for r in capture if r["kind"] == "pong"]
    protocol = make_protocol(["BTC-USD-PERP"], ["trades"])
    out = Output()
    assert protocol.on_message(test_request, 0, out) is False  # not market data
    [answer] = sent(out.actions)
    assert answer.keys() == documented.keys()
    assert (answer["method"], answer["params"]) == ("public/test", {})
    assert out.pong is True


def test_client_heartbeat_reply_is_the_pong() -> None:
    protocol = make_protocol(["BTC-USD-PERP"], ["trades"])
    first, second = protocol.heartbeat_payload(), protocol.heartbeat_payload()
    ping = json.loads(second)
    assert ping["method"] == "public/test" and json.loads(first)["id"] != ping["id"]
    out = Output()
    reply = {"jsonrpc": "2.0", "id": ping["id"], "result": {"version": "1.2.26"}}
    assert protocol.on_message(json.dumps(reply).encode(), 0, out) is False
    assert out.pong is True
    # the set_heartbeat "ok" is neither a pong nor an ack
    out.clear()
    protocol.on_message(b'{"jsonrpc":"2.0","id":424242,"result":"ok"}', 0, out)
    assert (out.pong, out.acks, out.records) == (False, [], [])


# --- books ------------------------------------------------------------------------------------


def expected_book(frames: list[bytes]) -> tuple[dict[str, dict[Decimal, Decimal]], int]:
    """The book Deribit's documented rules give, computed independently of the plugin."""
    book: dict[str, dict[Decimal, Decimal]] = {"bids": {}, "asks": {}}
    change_id = 0
    for frame in frames:
        data = json.loads(frame, parse_float=Decimal)["params"]["data"]
        if data["type"] == "snapshot":
            book = {"bids": {}, "asks": {}}
        for side in ("bids", "asks"):
            for action, price, amount in data[side]:
                if action == "delete":
                    book[side].pop(price, None)
                else:
                    book[side][price] = amount
        change_id = data["change_id"]
    return book, change_id


def test_captured_change_id_chain_applies_without_false_gaps(capture: Rows) -> None:
    frames = book_frames(capture)
    protocol = make_protocol([OPTION], ["l2_book"], interval="raw")
    out = Output()
    for i, frame in enumerate(frames):
        assert protocol.on_message(frame, i, out) is True
    assert [r for r in out.records if isinstance(r, Status)] == []
    assert out.actions == []
    books = [r for r in out.records if isinstance(r, Book)]
    assert len(books) == len(frames) == 31
    assert books[0].snapshot and not any(b.snapshot for b in books[1:])
    sync = protocol.books[OPTION]
    expected, last_change = expected_book(frames)
    assert sync.book.bids == expected["bids"] and sync.book.asks == expected["asks"]
    assert sync.book.seq == last_change == books[-1].seq
    assert sync.gaps == 0 and sync.duplicates == 0


def test_broken_prev_change_id_is_a_gap_and_resubscribes_the_book(capture: Rows) -> None:
    frames = book_frames(capture)
    protocol = make_protocol([OPTION], ["l2_book"], interval="raw")
    out = Output()
    for frame in frames[:10]:
        protocol.on_message(frame, 0, out)
    out.clear()
    # skip frame 10: frame 11's prev_change_id now points past the book
    protocol.on_message(frames[11], 1, out)
    gap, resync = out.records  # no Book record for the broken state
    assert isinstance(gap, Status) and gap.event is StatusEvent.GAP and gap.symbol == OPTION
    assert isinstance(resync, Status) and resync.event is StatusEvent.RESYNC
    [action] = out.actions
    assert isinstance(action, ResyncBook) and action.symbol == OPTION
    follow_up = sent(protocol.resync(OPTION, action.reason))
    assert [(m["method"], m["params"]) for m in follow_up] == [
        ("public/unsubscribe", {"channels": ["book.BTC-24SEP21-8000-P.raw"]}),
        ("public/subscribe", {"channels": ["book.BTC-24SEP21-8000-P.raw"]}),
    ]
    # later changes of the old subscription publish nothing until the new snapshot
    out.clear()
    for frame in frames[12:]:
        protocol.on_message(frame, 2, out)
    assert out.records == [] and out.actions == []
    out.clear()
    for frame in frames:  # the resubscription replays a snapshot and its chain
        protocol.on_message(frame, 3, out)
    assert all(isinstance(r, Book) for r in out.records) and len(out.records) == 31
    expected, _ = expected_book(frames)
    assert protocol.books[OPTION].book.bids == expected["bids"]


def test_tampered_prev_change_id_is_detected(capture: Rows) -> None:
    frames = book_frames(capture)
    protocol = make_protocol([OPTION], ["l2_book"], interval="raw")
    out = Output()
    for frame in frames[:5]:
        protocol.on_message(frame, 0, out)
    data = json.loads(frames[5])["params"]["data"]
    tampered = frames[5].replace(
        f'"prev_change_id":{data["prev_change_id"]}'.encode(),
        f'"prev_change_id":{data["prev_change_id"] - 1}'.encode(),
    )
    assert tampered != frames[5]
    out.clear()
    protocol.on_message(tampered, 0, out)
    assert [r.event for r in out.records if isinstance(r, Status)] == [
        StatusEvent.GAP,
        StatusEvent.RESYNC,
    ]
    assert not any(isinstance(r, Book) for r in out.records)


# --- trades, quotes, tickers -------------------------------------------------------------------


def test_captured_trades_normalize(capture: Rows) -> None:
    frames = {
        json.loads(raw(r))["params"]["channel"]: raw(r) for r in capture if r["kind"] == "trade"
    }
    protocol = make_protocol(["BTC-USD-PERP", "BTC-USD-210326"], ["trades"], interval="raw")
    out = Output()
    assert protocol.on_message(frames["trades.BTC-PERPETUAL.raw"], 5, out) is True
    protocol.on_message(frames["trades.BTC-26MAR21.raw"], 6, out)
    first, second, future = out.records
    assert first == Trade(
        exchange="deribit",
        symbol="BTC-USD-PERP",
        ts=1616321478553 * 1_000_000,
        recv_ts=5,
        price=Decimal("56168.0"),
        size=Decimal("5580.0"),
        side="buy",
        id="137487241",
    )
    assert (second.id, second.size) == ("137487242", Decimal("60.0"))  # type: ignore[attr-defined]
    assert future == Trade(
        exchange="deribit",
        symbol="BTC-USD-210326",
        ts=1616321287195 * 1_000_000,
        recv_ts=6,
        price=Decimal("56273.5"),
        size=Decimal("6000.0"),
        side="buy",
        id="137486952",
    )


def test_captured_quote_normalizes_to_bbo(capture: Rows) -> None:
    [frame] = [raw(r) for r in capture if r["kind"] == "bbo" and b"quote.BTC-PERPETUAL" in raw(r)]
    protocol = make_protocol(["BTC-USD-PERP"], ["bbo"])
    out = Output()
    protocol.on_message(frame, 1, out)
    assert out.records == [
        BBO(
            exchange="deribit",
            symbol="BTC-USD-PERP",
            ts=1654012882984 * 1_000_000,
            recv_ts=1,
            bid_price=Decimal("32143.0"),
            bid_size=Decimal("179960.0"),
            ask_price=Decimal("32143.5"),
            ask_size=Decimal("20.0"),
        )
    ]


def test_captured_perpetual_ticker_gives_ticker_funding_and_open_interest(capture: Rows) -> None:
    [frame] = [
        raw(r) for r in capture if r["kind"] == "ticker" and b"BTC-PERPETUAL.100ms" in raw(r)
    ]
    protocol = make_protocol(["BTC-USD-PERP"], ["ticker", "funding", "open_interest"])
    out = Output()
    protocol.on_message(frame, 2, out)
    ticker, funding, oi = out.records
    ts = 1654161785818 * 1_000_000
    assert ticker == Ticker(
        exchange="deribit",
        symbol="BTC-USD-PERP",
        ts=ts,
        recv_ts=2,
        last=Decimal("29931.0"),
        bid=Decimal("29930.5"),
        ask=Decimal("29931.0"),
        high_24h=Decimal("31903.5"),
        low_24h=Decimal("29265.5"),
        volume_24h=Decimal("17945.19644566"),
        quote_volume_24h=Decimal("545442610.0"),
    )
    assert funding == Funding(
        exchange="deribit",
        symbol="BTC-USD-PERP",
        ts=ts,
        recv_ts=2,
        rate=Decimal("0.0"),
        mark_price=Decimal("29932.79"),
        index_price=Decimal("29930.44"),
    )
    assert oi == OpenInterest(
        exchange="deribit",
        symbol="BTC-USD-PERP",
        ts=ts,
        recv_ts=2,
        open_interest=Decimal(559791310),
    )


def test_option_ticker_has_no_funding_and_empty_sides_are_null(capture: Rows) -> None:
    [frame] = [
        raw(r) for r in capture if r["kind"] == "ticker" and b"ETH-27AUG21-4000-P.raw" in raw(r)
    ]
    protocol = make_protocol(["ETH-USD-210827-4000-P"], ["ticker", "funding"], interval="raw")
    out = Output()
    protocol.on_message(frame, 2, out)
    [ticker] = out.records  # options have no funding
    assert isinstance(ticker, Ticker)
    assert (ticker.bid, ticker.ask) == (None, None)  # both sides empty (price and amount 0)
    assert ticker.last == Decimal("1.0165") and ticker.volume_24h is None


# --- malformed frames -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        b"{",
        b'{"jsonrpc":"2.0"}',
        b'{"jsonrpc":"2.0","method":"subscription","params":{"channel":"book.BTC-PERPETUAL.100ms"}}',
        # a channel this connection never subscribed
        b'{"jsonrpc":"2.0","method":"subscription","params":{"channel":"trades.ETH-PERPETUAL.100ms",'
        b'"data":[]}}',
        # a change without prev_change_id
        b'{"jsonrpc":"2.0","method":"subscription","params":{"channel":"book.BTC-PERPETUAL.100ms",'
        b'"data":{"type":"change","timestamp":1,"instrument_name":"BTC-PERPETUAL","change_id":5,'
        b'"bids":[],"asks":[]}}}',
        b'{"jsonrpc":"2.0","method":"subscription","params":{"channel":"book.BTC-PERPETUAL.100ms",'
        b'"data":{"type":"snapshot","timestamp":1,"instrument_name":"BTC-PERPETUAL","change_id":5,'
        b'"bids":[["add",1.0,2.0]],"asks":[]}}}',
        b'{"jsonrpc":"2.0","method":"subscription","params":{"channel":"trades.BTC-PERPETUAL.100ms",'
        b'"data":[{"trade_id":"1","trade_seq":1,"timestamp":1,"instrument_name":"BTC-PERPETUAL",'
        b'"price":"x","amount":1,"direction":"buy"}]}}',
        b'{"jsonrpc":"2.0","id":7}',
    ],
)
def test_malformed_frames_raise(frame: bytes) -> None:
    protocol = make_protocol(["BTC-USD-PERP"], ["trades", "l2_book"])
    with pytest.raises((DecodeError, msgspec.DecodeError)):
        protocol.on_message(frame, 0, Output())


# --- through the connection actor ---------------------------------------------------------------


async def test_actor_runs_heartbeat_subscribe_and_book_resync_on_the_wire(capture: Rows) -> None:
    """The wiring the unit tests above cannot see: set_heartbeat is the first message,
    the ack confirms the ledger, test_request is answered, and a broken chain resubscribes
    the book over the connection while the other streams stay up."""
    exchange = MemoryExchange()
    bus = Bus()
    sub = bus.subscribe(maxsize=10_000)
    cfg = FeedConfig(
        exchange="deribit",
        symbols=[OPTION],
        channels=["trades", "l2_book"],
        options={"interval": "raw"},
        connect_timeout=2.0,
        reconnect=BackoffOptions(initial=0.01, max=0.05),
    )
    feed = DeribitFeed(cfg, url="ws://sim/ws/api/v2")
    [plan] = feed.plan()
    actor = ConnectionActor(
        feed,
        plan,
        bus,
        transport_factory=exchange.transport_factory,
        http_fetch=_no_http,
        connect_limiter=ConnectLimiter(100, 1.0),
    )
    task = asyncio.create_task(actor.run())
    try:
        peer = await exchange.next_connection()
        first = json.loads(await peer.received())
        assert first["method"] == "public/set_heartbeat"
        await peer.send_text(json.dumps({"jsonrpc": "2.0", "id": first["id"], "result": "ok"}))
        subscribe = json.loads(await peer.received())
        assert subscribe["method"] == "public/subscribe"
        reply = {"jsonrpc": "2.0", "id": subscribe["id"], "result": subscribe["params"]["channels"]}
        await peer.send_text(json.dumps(reply))
        await _until(sub, StatusEvent.SUBSCRIBED)
        [test_request] = [raw(r) for r in capture if r["kind"] == "heartbeat"]
        await peer.send_text(test_request)
        assert json.loads(await peer.received())["method"] == "public/test"
        frames = book_frames(capture)
        for frame in frames[:3]:
            await peer.send_text(frame)
        await peer.send_text(frames[4])  # frames[3] lost
        seen = await _until(sub, StatusEvent.RESYNC)
        assert sum(isinstance(r, Book) for r in seen) == 3
        unsubscribe, resubscribe = (
            json.loads(await peer.received()),
            json.loads(await peer.received()),
        )
        channel = ["book.BTC-24SEP21-8000-P.raw"]
        assert (unsubscribe["method"], unsubscribe["params"]["channels"]) == (
            "public/unsubscribe",
            channel,
        )
        assert (resubscribe["method"], resubscribe["params"]["channels"]) == (
            "public/subscribe",
            channel,
        )
        await peer.send_text(frames[0])  # the fresh snapshot
        [*_, snapshot] = await _until(sub, Book)
        assert isinstance(snapshot, Book) and snapshot.snapshot
        assert actor.counters.reconnects == 0  # resynced without dropping the connection
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def _no_http(url: str) -> tuple[int, bytes]:
    raise AssertionError(f"Deribit needs no REST: {url}")


async def _until(sub: Subscription, what: type[Record] | StatusEvent) -> list[Record]:
    seen: list[Record] = []
    async with asyncio.timeout(5.0):
        while True:
            rec = await sub.get()
            seen.append(rec)
            if isinstance(what, StatusEvent):
                if isinstance(rec, Status) and rec.event is what:
                    return seen
            elif isinstance(rec, what):
                return seen
