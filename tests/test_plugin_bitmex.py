"""The BitMEX plugin, sans-I/O: real captured frames in, normalized records out.

Frames come from the live capture shipped as simulator data (``bitmex.jsonl``, Jul 2021).
The instrument, funding and liquidation frames are written here in the documented layout
(the capture has none); they are marked as such where used.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from decimal import Decimal
from importlib import resources
from typing import Any

import msgspec
import pytest

from streamkit.actor import ConnectionActor
from streamkit.channel import Bus, Subscription
from streamkit.config import BackoffOptions, FeedConfig
from streamkit.feed import DecodeError, Heartbeat, Output, ResyncBook, Send
from streamkit.model import (
    BBO,
    Book,
    Funding,
    Liquidation,
    OpenInterest,
    Record,
    Status,
    StatusEvent,
    Ticker,
    Trade,
)
from streamkit.pacing import ConnectLimiter
from streamkit.transport.memory import MemoryExchange
from streamkit_bitmex import BitmexFeed
from streamkit_bitmex.feed import BitmexProtocol

Rows = list[dict[str, Any]]
BOOK_GROUPS = ("bitmex-orderBookL2-SOLUSDT", "bitmex-orderBookL2-TRXUSDT")


@pytest.fixture(scope="module")
def capture() -> Rows:
    text = (resources.files("streamkit.simulator") / "data" / "bitmex.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def make_protocol(symbols: list[str], channels: list[str]) -> BitmexProtocol:
    feed = BitmexFeed(FeedConfig(exchange="bitmex", symbols=symbols, channels=channels))
    [plan] = feed.plan()
    return feed.protocol(plan, "bitmex/0")


def book_protocol() -> BitmexProtocol:
    return make_protocol(["SOL-USDT-PERP", "TRX-USDT-PERP"], ["l2_book"])


def raw(row: dict[str, Any]) -> bytes:
    return str(row["raw"]).encode()


def group_frames(capture: Rows) -> list[bytes]:
    """Both captured books' frames, interleaved in arrival order."""
    return [raw(r) for r in capture if r.get("group") in BOOK_GROUPS]


def feed_all(protocol: BitmexProtocol, frames: list[bytes], out: Output) -> None:
    for i, frame in enumerate(frames):
        protocol.on_message(frame, i, out)


def l2_frame(action: str, *rows: dict[str, Any]) -> bytes:
    """An ``orderBookL2`` frame in the captured layout."""
    return json.dumps({"table": "orderBookL2", "action": action, "data": list(rows)}).encode()


def ns(iso: str) -> int:
    when = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000


# --- symbols ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("venue", "normalized"),
    [
        ("XBTUSD", "BTC-USD-PERP"),
        ("ETHUSD", "ETH-USD-PERP"),
        ("XBTUSDT", "BTC-USDT-PERP"),
        ("SOLUSDT", "SOL-USDT-PERP"),
        ("XBTZ21", "BTC-USD-211231"),  # last Friday of December 2021
        ("XRPU21", "XRP-BTC-210924"),  # bare altcoin futures are quoted in XBT
        ("ETHUSDH21", "ETH-USD-210326"),
        ("XBTF23", "BTC-USD-230127"),  # the capture's settlement print is on 2023-01-27
        ("XBT_USDT", "BTC-USDT"),
    ],
)
def test_symbol_mapping_round_trips(venue: str, normalized: str) -> None:
    feed = BitmexFeed(FeedConfig(exchange="bitmex", symbols=[normalized], channels=["trades"]))
    assert feed.normalize_symbol(venue) == normalized
    assert feed.exchange_symbol(normalized) == venue
    assert feed.check() == []


@pytest.mark.parametrize(
    "normalized",
    ["BTC-USD-211230", "BTC-USD-211301", "BTC-GBP-PERP", "btc-usd-perp", "BTC-USD-PERP-X"],
)
def test_symbols_bitmex_cannot_have_are_rejected(normalized: str) -> None:
    with pytest.raises(ValueError):
        book_protocol().feed.exchange_symbol(normalized)


def test_venue_names_without_a_reversible_mapping_are_rejected() -> None:
    feed = book_protocol().feed
    for venue in ["XBTUSDZ21", ".BXBT", "XBT"]:
        with pytest.raises(ValueError):
            feed.normalize_symbol(venue)


# --- subscriptions, acks, errors -------------------------------------------------------------


def test_subscribe_messages_carry_topics_in_venue_format() -> None:
    protocol = make_protocol(
        ["BTC-USD-PERP", "ETH-USD-PERP"], ["trades", "l2_book", "ticker", "funding"]
    )
    [request] = protocol.subscriptions()
    assert json.loads(request.payload) == {
        "op": "subscribe",
        # ticker and funding share the instrument topic: subscribed once
        "args": [
            "trade:XBTUSD",
            "orderBookL2:XBTUSD",
            "instrument:XBTUSD",
            "trade:ETHUSD",
            "orderBookL2:ETHUSD",
            "instrument:ETHUSD",
        ],
    }
    assert len(request.streams) == 8


def test_subscriptions_respect_the_per_message_limit() -> None:
    symbols = [f"S{i:02d}-USDT-PERP" for i in range(15)]
    protocol = make_protocol(symbols, ["trades", "bbo"])
    requests = protocol.subscriptions()
    per_message = protocol.feed.limits.max_streams_per_message
    assert [len(json.loads(r.payload)["args"]) for r in requests] == [per_message, 30 - per_message]
    assert len({r.key for r in requests}) == len(requests)


def test_per_topic_acks_confirm_the_request_once_all_arrived(capture: Rows) -> None:
    acks = [raw(r) for r in capture if r["kind"] == "subscribe_ack" and b"orderBookL2" in raw(r)]
    symbols = ["XRP-BTC-210924", "UNI-USDT-PERP", "BTC-USD-PERP"]
    symbols += ["ADA-USDT-PERP", "SOL-USDT-PERP", "TRX-USDT-PERP"]
    protocol = make_protocol(symbols, ["l2_book"])
    [request] = protocol.subscriptions()
    out = Output()
    for frame in acks[:-1]:
        assert protocol.on_message(frame, 0, out) is False
    assert out.acks == []  # five of six topics confirmed: the request is still pending
    protocol.on_message(acks[-1], 0, out)
    assert out.acks == [request.key]


def test_welcome_is_not_data(capture: Rows) -> None:
    [welcome] = [raw(r) for r in capture if r["kind"] == "info"]
    out = Output()
    assert book_protocol().on_message(welcome, 0, out) is False
    assert out.records == [] and out.acks == []


def test_error_for_a_subscribed_topic_rejects_its_request(capture: Rows) -> None:
    [captured] = [raw(r) for r in capture if r["kind"] == "subscribe_error"]
    protocol = book_protocol()
    [request] = protocol.subscriptions()
    out = Output()
    # The captured error is about topics this connection never asked for: reported as-is.
    protocol.on_message(captured, 5, out)
    [status] = out.records
    assert isinstance(status, Status) and status.event is StatusEvent.ERROR
    assert "Unknown table: tradeBin5dm" in status.detail
    # The same error about one of our topics rejects our request.
    ours = captured.replace(b'"tradeBin1m","tradeBin5dm"', b'"orderBookL2:SOLUSDT"')
    out.clear()
    protocol.on_message(ours, 5, out)
    assert out.rejects == [(request.key, "status 400: Unknown table: tradeBin5dm")]


# --- heartbeat ----------------------------------------------------------------------------------


def test_heartbeat_is_text_ping_answered_by_pong(capture: Rows) -> None:
    [ping] = [raw(r) for r in capture if r["kind"] == "ping"]
    [pong] = [raw(r) for r in capture if r["kind"] == "pong"]
    protocol = book_protocol()
    assert BitmexFeed.heartbeat == Heartbeat(interval=5.0, payload=ping)
    assert protocol.heartbeat_payload() == b"ping"
    out = Output()
    assert protocol.on_message(pong, 0, out) is False
    assert out.pong is True
    assert out.records == []


# --- order books ----------------------------------------------------------------------------------


def expected_books(frames: list[bytes]) -> dict[str, dict[str, dict[Decimal, Decimal]]]:
    """Final price-level books computed independently: BitMEX's id-keyed table, then
    aggregated by price."""
    tables: dict[str, dict[int, dict[str, Any]]] = {}
    for frame in frames:
        msg = json.loads(frame, parse_float=Decimal, parse_int=Decimal)
        if msg["action"] == "partial":
            symbol = msg["filter"]["symbol"]
            tables[symbol] = {int(r["id"]): dict(r) for r in msg["data"]}
            continue
        for row in msg["data"]:
            table = tables[row["symbol"]]
            if msg["action"] == "insert":
                table[int(row["id"])] = dict(row)
            elif msg["action"] == "update":
                table[int(row["id"])].update(row)
            else:
                del table[int(row["id"])]
    books = {}
    for symbol, table in tables.items():
        sides: dict[str, dict[Decimal, Decimal]] = {"Buy": {}, "Sell": {}}
        for row in table.values():
            sides[row["side"]][row["price"]] = row["size"]
        books[symbol] = {"bids": sides["Buy"], "asks": sides["Sell"]}
    return books


def replay_published(records: list[Any], symbol: str) -> dict[str, dict[Decimal, Decimal]]:
    """The book a consumer rebuilds from the published Book records alone."""
    book: dict[str, dict[Decimal, Decimal]] = {"bids": {}, "asks": {}}
    for rec in records:
        if not isinstance(rec, Book) or rec.symbol != symbol:
            continue
        if rec.snapshot:
            book = {"bids": {}, "asks": {}}
        for side, levels in (("bids", rec.bids), ("asks", rec.asks)):
            for price, size in levels:
                if size == 0:
                    book[side].pop(price, None)
                else:
                    book[side][price] = size
    return book


def test_captured_books_apply_without_false_gaps(capture: Rows) -> None:
    frames = group_frames(capture)
    protocol = book_protocol()
    out = Output()
    feed_all(protocol, frames, out)
    assert [r for r in out.records if isinstance(r, Status)] == []
    assert out.actions == []
    books = [r for r in out.records if isinstance(r, Book)]
    assert len(books) == len(frames)  # every captured message published, 2 of them images
    assert sum(b.snapshot for b in books) == 2
    expected = expected_books(frames)
    for venue, symbol in (("SOLUSDT", "SOL-USDT-PERP"), ("TRXUSDT", "TRX-USDT-PERP")):
        table = protocol.books[venue]
        assert table.gaps == 0
        assert table.book.bids == expected[venue]["bids"]
        assert table.book.asks == expected[venue]["asks"]
        assert replay_published(out.records, symbol) == expected[venue]
    assert len(protocol.books["SOLUSDT"].book) == 203  # what verify_checksums.py reports
    assert len(protocol.books["TRXUSDT"].book) == 169


def test_update_keeps_the_price_of_its_level_id(capture: Rows) -> None:
    frames = group_frames(capture)
    protocol = book_protocol()
    out = Output()
    feed_all(protocol, frames[:2], out)  # both partials
    update = l2_frame("update", {"symbol": "SOLUSDT", "id": 54899932000, "side": "Sell", "size": 7})
    out.clear()
    protocol.on_message(update, 9, out)
    [book] = out.records
    assert isinstance(book, Book) and not book.snapshot
    assert book.asks == [(Decimal("68"), Decimal("7"))]  # id 54899932000 is the 68 level
    assert book.bids == []


def test_delete_of_unknown_id_is_a_gap_and_resubscribes_that_symbol(capture: Rows) -> None:
    frames = group_frames(capture)
    protocol = book_protocol()
    out = Output()
    feed_all(protocol, frames[:2], out)
    out.clear()
    bad = l2_frame("delete", {"symbol": "SOLUSDT", "id": 1, "side": "Buy"})
    protocol.on_message(bad, 10, out)
    gap, resync = out.records
    assert isinstance(gap, Status) and gap.event is StatusEvent.GAP
    assert gap.symbol == "SOL-USDT-PERP" and "unknown level id 1" in gap.detail
    assert isinstance(resync, Status) and resync.event is StatusEvent.RESYNC
    assert [a for a in out.actions if isinstance(a, ResyncBook)] == [
        ResyncBook("SOL-USDT-PERP", out.actions[0].reason)  # type: ignore[union-attr]
    ]
    follow_up = protocol.resync("SOL-USDT-PERP", "gap")
    assert [json.loads(a.payload) for a in follow_up if isinstance(a, Send)] == [
        {"op": "unsubscribe", "args": ["orderBookL2:SOLUSDT"]},
        {"op": "subscribe", "args": ["orderBookL2:SOLUSDT"]},
    ]
    # Deltas still in flight from the old subscription are dropped quietly, no repeated gap;
    # the other symbol's book is untouched.
    out.clear()
    feed_all(protocol, frames[2:], out)
    assert [r for r in out.records if isinstance(r, Status)] == []
    assert {r.symbol for r in out.records if isinstance(r, Book)} == {"TRX-USDT-PERP"}
    assert protocol.books["SOLUSDT"].dropped > 0
    # The fresh partial makes the book live again.
    out.clear()
    protocol.on_message(frames[0], 20, out)
    [snapshot] = out.records
    assert isinstance(snapshot, Book) and snapshot.snapshot and snapshot.symbol == "SOL-USDT-PERP"
    assert protocol.books["SOLUSDT"].sync.live


@pytest.mark.parametrize(
    "frame",
    [
        l2_frame("update", {"symbol": "SOLUSDT", "id": 1, "side": "Buy", "size": 5}),
        l2_frame(
            "insert",
            {"symbol": "SOLUSDT", "id": 54899932000, "side": "Sell", "size": 5, "price": 68},
        ),
        # a known id on the wrong side is not that level
        l2_frame("delete", {"symbol": "SOLUSDT", "id": 54899932000, "side": "Buy"}),
    ],
)
def test_id_rule_violations_are_gaps(capture: Rows, frame: bytes) -> None:
    protocol = book_protocol()
    out = Output()
    feed_all(protocol, group_frames(capture)[:2], out)
    out.clear()
    protocol.on_message(frame, 0, out)
    assert [r.event for r in out.records if isinstance(r, Status)] == [
        StatusEvent.GAP,
        StatusEvent.RESYNC,
    ]
    assert not any(isinstance(r, Book) for r in out.records)


def test_data_before_the_partial_is_a_gap(capture: Rows) -> None:
    frames = group_frames(capture)
    protocol = book_protocol()
    out = Output()
    protocol.on_message(frames[2], 0, out)  # a SOLUSDT insert, no partial yet
    assert [r.event for r in out.records if isinstance(r, Status)] == [
        StatusEvent.GAP,
        StatusEvent.RESYNC,
    ]
    assert "before the partial" in out.records[0].detail  # type: ignore[attr-defined]
    assert [a.symbol for a in out.actions if isinstance(a, ResyncBook)] == ["SOL-USDT-PERP"]


# --- trades, quotes ------------------------------------------------------------------------------


def test_captured_trades_normalize(capture: Rows) -> None:
    frames = [raw(r) for r in capture if r["kind"] == "trade"]
    protocol = make_protocol(["BTC-USD-PERP", "UNI-USDT-PERP", "BTC-USD-230127"], ["trades"])
    out = Output()
    for frame in frames:
        if b'"XBTUSD"' in frame or b'"UNIUSDT"' in frame or b'"XBTF23"' in frame:
            protocol.on_message(frame, 7, out)
    trades = [r for r in out.records if isinstance(r, Trade)]
    # partials (history before the subscription) and the settlement print are not published
    assert [t.id for t in trades] == [
        "39744121-c20e-44ba-8cc8-a6b8cdf72885",
        "6e70bebe-235e-08a6-d11b-e1042bf1f2ed",
        "132702bb-2daa-0b5a-cb86-01882dd0348b",
        "d1b82d61-d902-349c-936c-2588b8204aff",
    ]
    uni, first, second, sell = trades
    assert uni == Trade(
        exchange="bitmex",
        symbol="UNI-USDT-PERP",
        ts=ns("2021-07-22T22:36:10.014Z"),
        recv_ts=7,
        price=Decimal("17.297"),
        size=Decimal("52"),
        side="buy",
        id="39744121-c20e-44ba-8cc8-a6b8cdf72885",
    )
    assert (first.symbol, first.price, first.size, first.side) == (
        "BTC-USD-PERP",
        Decimal("32180.5"),
        Decimal("100"),
        "buy",
    )
    assert first.ts == ns("2021-07-22T22:36:11.685Z")
    assert second.size == Decimal("900")
    assert (sell.side, sell.price, sell.ts) == (
        "sell",
        Decimal("56927"),
        ns("2021-03-12T02:00:04.608Z"),
    )


def test_captured_quotes_normalize_to_bbo(capture: Rows) -> None:
    [frame] = [raw(r) for r in capture if r["kind"] == "bbo" and b'"insert"' in raw(r)][1:2]
    protocol = make_protocol(["BTC-USD-PERP"], ["bbo"])
    out = Output()
    assert protocol.on_message(frame, 3, out) is True
    first = out.records[0]
    assert first == BBO(
        exchange="bitmex",
        symbol="BTC-USD-PERP",
        ts=ns("2021-07-22T22:36:10.087Z"),
        recv_ts=3,
        bid_price=Decimal("32180"),
        bid_size=Decimal("1050200"),
        ask_price=Decimal("32180.5"),
        ask_size=Decimal("161000"),
    )
    assert len(out.records) == len(json.loads(frame)["data"])


# --- instrument, funding, liquidation (frames in the documented layout) ---------------------


INSTRUMENT_PARTIAL = (
    b'{"table":"instrument","action":"partial","keys":["symbol"],"data":[{"symbol":"XBTUSD",'
    b'"timestamp":"2021-07-22T22:36:10.000Z","lastPrice":32180.5,"bidPrice":32180,'
    b'"askPrice":32180.5,"prevPrice24h":31850,"highPrice":32500,"lowPrice":31600,'
    b'"volume24h":1200000000,"foreignNotional24h":1200000000,"openInterest":540000000,'
    b'"fundingRate":0.0001,"indicativeFundingRate":0.00012,'
    b'"fundingTimestamp":"2021-07-23T04:00:00.000Z","markPrice":32181.12,'
    b'"indicativeSettlePrice":32179.9}]}'
)


def test_instrument_changes_merge_into_ticker_funding_and_open_interest() -> None:
    protocol = make_protocol(["BTC-USD-PERP"], ["ticker", "funding", "open_interest"])
    out = Output()
    protocol.on_message(INSTRUMENT_PARTIAL, 1, out)
    ticker, funding, oi = out.records
    assert isinstance(ticker, Ticker) and ticker.last == Decimal("32180.5")
    assert ticker.open_24h == Decimal("31850") and ticker.volume_24h == Decimal("1200000000")
    assert funding == Funding(
        exchange="bitmex",
        symbol="BTC-USD-PERP",
        ts=ns("2021-07-22T22:36:10.000Z"),
        recv_ts=1,
        rate=Decimal("0.0001"),
        mark_price=Decimal("32181.12"),
        index_price=Decimal("32179.9"),
        predicted_rate=Decimal("0.00012"),
        next_funding_ts=ns("2021-07-23T04:00:00.000Z"),
    )
    assert isinstance(oi, OpenInterest) and oi.open_interest == Decimal("540000000")
    # An update carries only what changed: a mark price move republishes funding with
    # the merged row, and nothing else.
    out.clear()
    protocol.on_message(
        b'{"table":"instrument","action":"update","data":[{"symbol":"XBTUSD",'
        b'"markPrice":32190.01,"timestamp":"2021-07-22T22:36:15.000Z"}]}',
        2,
        out,
    )
    [moved] = out.records
    assert isinstance(moved, Funding)
    assert moved.mark_price == Decimal("32190.01") and moved.rate == Decimal("0.0001")
    assert moved.ts == ns("2021-07-22T22:36:15.000Z")


def test_funding_table_and_liquidations_normalize() -> None:
    protocol = make_protocol(["BTC-USD-PERP"], ["funding", "liquidations"])
    out = Output()
    protocol.on_message(
        b'{"table":"funding","action":"insert","data":[{"timestamp":"2021-07-23T04:00:00.000Z",'
        b'"symbol":"XBTUSD","fundingInterval":"2000-01-01T08:00:00.000Z",'
        b'"fundingRate":0.0001,"fundingRateDaily":0.0003}]}',
        1,
        out,
    )
    protocol.on_message(
        b'{"table":"liquidation","action":"insert","data":[{"orderID":"a1b2","symbol":"XBTUSD",'
        b'"side":"Sell","price":32100.5,"leavesQty":2500}]}',
        2,
        out,
    )
    # updates of a liquidation order (it fills) are not new liquidations
    protocol.on_message(
        b'{"table":"liquidation","action":"update","data":[{"orderID":"a1b2","leavesQty":100}]}',
        3,
        out,
    )
    funding, liquidation = out.records
    assert isinstance(funding, Funding) and funding.rate == Decimal("0.0001")
    assert liquidation == Liquidation(
        exchange="bitmex",
        symbol="BTC-USD-PERP",
        ts=None,
        recv_ts=2,
        side="sell",
        price=Decimal("32100.5"),
        size=Decimal("2500"),
        id="a1b2",
    )


# --- malformed frames -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        b"not json",
        b"{}",
        b'{"table":"orderBook10","action":"update","data":[]}',
        b'{"table":"trade","action":"insert","data":[{"symbol":"XBTUSD"}]}',
        b'{"table":"trade","action":"insert","data":[{"timestamp":"2021-07-22T22:36:11.685Z",'
        b'"symbol":"XBTUSD","side":"Buy","size":1,"price":"abc","trdMatchID":"x"}]}',
        # trades of a symbol this connection did not subscribe
        b'{"table":"trade","action":"insert","data":[{"timestamp":"2021-07-22T22:36:11.685Z",'
        b'"symbol":"ETHUSD","side":"Buy","size":1,"price":1,"trdMatchID":"x"}]}',
        b'{"table":"orderBookL2","action":"insert"}',
    ],
)
def test_malformed_frames_raise(frame: bytes) -> None:
    protocol = make_protocol(["BTC-USD-PERP"], ["trades", "l2_book"])
    with pytest.raises((DecodeError, msgspec.DecodeError)):
        protocol.on_message(frame, 0, Output())


def test_insert_without_price_is_malformed_not_a_gap(capture: Rows) -> None:
    protocol = book_protocol()
    out = Output()
    feed_all(protocol, group_frames(capture)[:2], out)
    out.clear()
    bad = l2_frame("insert", {"symbol": "SOLUSDT", "id": 5, "side": "Buy"})
    with pytest.raises(DecodeError):
        protocol.on_message(bad, 0, out)
    assert out.records == [] and 5 not in protocol.books["SOLUSDT"].levels


# --- through the connection actor ---------------------------------------------------------------


async def test_actor_confirms_per_topic_acks_and_resubscribes_a_broken_book(
    capture: Rows,
) -> None:
    """The wiring the unit tests cannot see: per-topic acks settle the ledger, and a gap
    resubscribes just that symbol's orderBookL2 over the live connection."""
    exchange = MemoryExchange()
    bus = Bus()
    sub = bus.subscribe(maxsize=10_000)
    cfg = FeedConfig(
        exchange="bitmex",
        symbols=["SOL-USDT-PERP", "TRX-USDT-PERP"],
        channels=["l2_book"],
        connect_timeout=2.0,
        reconnect=BackoffOptions(initial=0.01, max=0.05),
    )
    feed = BitmexFeed(cfg, url="ws://sim/realtime")
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
        [welcome] = [raw(r) for r in capture if r["kind"] == "info"]
        await peer.send_text(welcome)
        request = json.loads(await peer.received())
        assert request == {
            "op": "subscribe",
            "args": ["orderBookL2:SOLUSDT", "orderBookL2:TRXUSDT"],
        }
        for topic in request["args"]:
            await peer.send_text(
                json.dumps({"success": True, "subscribe": topic, "request": request})
            )
        await _until(sub, StatusEvent.SUBSCRIBED)
        frames = group_frames(capture)
        for frame in frames[:4]:
            await peer.send_text(frame)
        await peer.send_text(l2_frame("delete", {"symbol": "TRXUSDT", "id": 7, "side": "Sell"}))
        seen = await _until(sub, StatusEvent.RESYNC)
        assert sum(isinstance(r, Book) for r in seen) == 4
        assert [json.loads(await peer.received()) for _ in range(2)] == [
            {"op": "unsubscribe", "args": ["orderBookL2:TRXUSDT"]},
            {"op": "subscribe", "args": ["orderBookL2:TRXUSDT"]},
        ]
        await peer.send_text(frames[1])  # TRXUSDT's fresh partial
        [*_, snapshot] = await _until(sub, Book)
        assert isinstance(snapshot, Book) and snapshot.snapshot
        assert snapshot.symbol == "TRX-USDT-PERP"
        assert actor.counters.reconnects == 0
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def _no_http(url: str) -> tuple[int, bytes]:
    raise AssertionError(f"BitMEX needs no REST: {url}")


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
