"""The Kraken WebSocket v2 plugin, sans-I/O: real captured frames in, verified records out.

Expected books and checksums are computed here independently of the plugin (stdlib json with
Decimal numbers, zlib.crc32), following Kraken's book-checksum-v2 guide.
"""

from __future__ import annotations

import json
import random
import zlib
from decimal import Decimal
from importlib import resources
from typing import Any

import msgspec
import pytest

from streamkit.book import OrderBook
from streamkit.config import FeedConfig
from streamkit.feed import DecodeError, Output, ResyncBook, Send
from streamkit.model import BBO, Book, Status, StatusEvent, Ticker, Trade
from streamkit.testing import assert_conforms
from streamkit_kraken import KrakenFeed
from streamkit_kraken.checksum import CachedChecksum, Precision, book_checksum, level_token
from streamkit_kraken.feed import KrakenProtocol, subscribed_depth

Side = dict[Decimal, Decimal]


def load_capture() -> list[dict[str, Any]]:
    text = (resources.files("streamkit.simulator") / "data" / "kraken.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def capture() -> list[dict[str, Any]]:
    return load_capture()


def v2_groups(capture: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Every captured v2 checksum sequence, rows in arrival order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in capture:
        if row.get("checksum_algo") == "kraken_v2_crc32_top10":
            groups.setdefault(row["group"], []).append(row)
    return groups


def make_protocol(
    symbols: list[str] | None = None,
    channels: list[str] | None = None,
    options: dict[str, Any] | None = None,
    depth: int = 10,
) -> KrakenProtocol:
    cfg = FeedConfig(
        exchange="kraken",
        symbols=symbols or ["BTC-USD"],
        channels=channels or ["l2_book"],
        book_depth=depth,
        options=options or {},
    )
    feed = KrakenFeed(cfg, url="ws://sim/v2")
    [plan] = feed.plan()
    return feed.protocol(plan, "kraken/0")


# --- an independent model of Kraken's book rules -------------------------------------------


def apply_message(book: dict[str, Side], data: dict[str, Any], snapshot: bool, depth: int) -> None:
    if snapshot:
        book["bids"], book["asks"] = {}, {}
    for side in ("bids", "asks"):
        for level in data.get(side, []):
            if level["qty"] == 0:
                book[side].pop(level["price"], None)
            else:
                book[side][level["price"]] = level["qty"]
    for side, best_high in (("bids", True), ("asks", False)):
        for price in sorted(book[side], reverse=best_high)[depth:]:
            del book[side][price]


def expected_checksum(book: dict[str, Side], price_places: int, qty_places: int) -> int:
    def token(value: Decimal, places: int) -> str:
        return f"{value:.{places}f}".replace(".", "").lstrip("0")

    asks = sorted(book["asks"].items())[:10]
    bids = sorted(book["bids"].items(), reverse=True)[:10]
    text = "".join(token(p, price_places) + token(q, qty_places) for p, q in asks + bids)
    return zlib.crc32(text.encode())


def places_of(rows: list[dict[str, Any]]) -> tuple[int, int]:
    """The pair's precision: from the fixture's metadata, else from the raw tokens."""
    if rows[0].get("price_precision") is not None:
        return rows[0]["price_precision"], rows[0]["qty_precision"]
    pp = qp = 0
    for row in rows:
        for data in json.loads(row["raw"], parse_float=Decimal)["data"]:
            for level in data["bids"] + data["asks"]:
                pp = max(pp, -Decimal(level["price"]).as_tuple().exponent)  # type: ignore[operator]
                qp = max(qp, -Decimal(level["qty"]).as_tuple().exponent)  # type: ignore[operator]
    return pp, qp


# --- symbols and subscriptions -------------------------------------------------------------


def test_symbol_mapping_round_trips() -> None:
    feed = make_protocol().feed
    for symbol in ["BTC-USD", "ETH-USD", "DOGE-EUR", "USDT-USD", "1INCH-USD"]:
        assert feed.normalize_symbol(feed.exchange_symbol(symbol)) == symbol
    assert feed.exchange_symbol("BTC-USD") == "BTC/USD"
    assert feed.normalize_symbol("XBT/USD") == "BTC-USD"  # v1's name reads as BTC
    assert feed.normalize_symbol("XDG/USD") == "DOGE-USD"
    for bad in ["XBT-USD", "BTC-USD-PERP", "btc-usd", "BTCUSD"]:
        with pytest.raises(ValueError):
            feed.exchange_symbol(bad)
    with pytest.raises(ValueError):
        feed.normalize_symbol("BTCUSD")


def test_subscribe_messages_per_channel() -> None:
    protocol = make_protocol(["BTC-USD", "ETH-USD"], ["l2_book", "trades", "ticker", "bbo"])
    requests = protocol.subscriptions()
    bodies = [json.loads(r.payload) for r in requests]
    assert bodies == [
        {
            "method": "subscribe",
            "params": {"channel": "book", "symbol": ["BTC/USD", "ETH/USD"], "depth": 10},
            "req_id": 1,
        },
        {
            "method": "subscribe",
            "params": {"channel": "trade", "symbol": ["BTC/USD", "ETH/USD"], "snapshot": False},
            "req_id": 2,
        },
        {
            "method": "subscribe",
            "params": {
                "channel": "ticker",
                "symbol": ["BTC/USD", "ETH/USD"],
                "event_trigger": "bbo",
            },
            "req_id": 3,
        },
    ]
    assert [r.key for r in requests] == ["1", "2", "3"]
    # one ticker subscription serves both the ticker and the bbo stream of each symbol
    assert sorted((s.channel, s.symbol) for s in requests[2].streams) == [
        ("bbo", "BTC-USD"),
        ("bbo", "ETH-USD"),
        ("ticker", "BTC-USD"),
        ("ticker", "ETH-USD"),
    ]
    ticker_only = make_protocol(["BTC-USD"], ["ticker"]).subscriptions()
    assert json.loads(ticker_only[0].payload)["params"] == {
        "channel": "ticker",
        "symbol": ["BTC/USD"],
    }


def test_book_depth_maps_to_a_depth_kraken_offers() -> None:
    assert [subscribed_depth(d) for d in (1, 10, 11, 25, 26, 400, 1000, 5000)] == [
        10,
        10,
        25,
        25,
        100,
        500,
        1000,
        1000,
    ]


def test_acks_map_back_to_the_request_once_every_pair_is_acked(
    capture: list[dict[str, Any]],
) -> None:
    protocol = make_protocol(["BTC-USD", "ETH-USD"], ["l2_book"])
    [request] = protocol.subscriptions()
    out = Output()
    # the captured ack (no req_id: Kraken echoes it only when one was sent) for ETH/USD
    [ack] = [r["raw"] for r in capture if r["kind"] == "subscribe_ack" and r["api"] == "spot-ws-v2"]
    assert protocol.on_message(ack.encode(), 0, out) is False
    assert out.acks == []  # BTC/USD is still due
    btc = ack.replace("ETH/USD", "BTC/USD").replace('"success":true', '"success":true,"req_id":1')
    protocol.on_message(btc.encode(), 0, out)
    assert out.acks == [request.key]
    protocol.on_message(btc.encode(), 0, out)  # a repeated ack settles nothing twice
    assert out.acks == [request.key]


def test_rejections_map_to_the_request_or_report_an_error(capture: list[dict[str, Any]]) -> None:
    protocol = make_protocol(["FOO-USD", "BTC-USD"], ["trades"])
    [request] = protocol.subscriptions()
    out = Output()
    [captured] = [
        r["raw"] for r in capture if r["kind"] == "subscribe_error" and r["api"] == "spot-ws-v2"
    ]
    # the captured refusal names XBT/USD, which this connection never asked for
    protocol.on_message(captured.encode(), 7, out)
    assert out.rejects == []
    [status] = out.records
    assert isinstance(status, Status) and status.event is StatusEvent.ERROR
    assert "Currency pair not supported XBT/USD" in status.detail
    out.clear()
    refusal = captured.replace("XBT/USD", "FOO/USD")
    protocol.on_message(refusal.encode(), 8, out)
    assert out.rejects == [(request.key, "FOO/USD: Currency pair not supported FOO/USD")]
    assert out.records == []


# --- the verified book ---------------------------------------------------------------------


def test_every_captured_v2_checksum_verifies_update_by_update(
    capture: list[dict[str, Any]],
) -> None:
    groups = v2_groups(capture)
    assert set(groups) == {"kraken-v2-book10-BTC/USD-pks", "kraken-v2-book10-ETH/USD"}
    verified = 0
    for rows in groups.values():
        symbol = rows[0]["symbol"].replace("/", "-")
        depth = rows[0]["book_depth"]
        protocol = make_protocol([symbol], ["l2_book"], depth=depth)
        sync = protocol.books[symbol].sync
        pp, qp = places_of(rows)
        want: dict[str, Side] = {"bids": {}, "asks": {}}
        for i, row in enumerate(rows):
            message = json.loads(row["raw"], parse_float=Decimal, parse_int=Decimal)
            [data] = message["data"]
            apply_message(want, data, message["type"] == "snapshot", depth)
            # the independent model agrees with the venue's checksum...
            assert expected_checksum(want, pp, qp) == data["checksum"]
            out = Output()
            assert protocol.on_message(row["raw"].encode(), i, out) is True
            # ...and the plugin published exactly one verified state, equal to the model's
            [book] = out.records
            assert isinstance(book, Book) and book.snapshot == (message["type"] == "snapshot")
            assert sync.book.bids == want["bids"] and sync.book.asks == want["asks"]
            assert out.actions == []
            verified += 1
        assert sync.checksum_failures == 0 and sync.gaps == 0
        assert len(sync.book.bids) == len(sync.book.asks) == depth
    assert verified == 512  # 510 + 2 captured checksums, zero mismatches


def test_published_records_rebuild_the_verified_book(capture: list[dict[str, Any]]) -> None:
    rows = v2_groups(capture)["kraken-v2-book10-BTC/USD-pks"]
    protocol = make_protocol()
    out = Output()
    for i, row in enumerate(rows):
        protocol.on_message(row["raw"].encode(), i, out)
    rebuilt: dict[str, Side] = {"bids": {}, "asks": {}}
    for record in out.records:
        assert isinstance(record, Book)
        if record.snapshot:
            rebuilt = {"bids": dict(record.bids), "asks": dict(record.asks)}
            continue
        for side, levels in (("bids", record.bids), ("asks", record.asks)):
            for price, qty in levels:
                if qty == 0:
                    rebuilt[side].pop(price, None)
                else:
                    rebuilt[side][price] = qty
    book = protocol.books["BTC-USD"].book
    # the truncation deletions travel in the records, so consumers never keep stale levels
    assert rebuilt == {"bids": book.bids, "asks": book.asks}
    assert any(r.asks and r.asks[-1][1] == 0 for r in out.records if isinstance(r, Book))


def test_level_pushed_beyond_depth_is_deleted_and_published(capture: list[dict[str, Any]]) -> None:
    rows = v2_groups(capture)["kraken-v2-book10-ETH/USD"]
    protocol = make_protocol(["ETH-USD"])
    out = Output()
    protocol.on_message(rows[0]["raw"].encode(), 0, out)
    book = protocol.books["ETH-USD"].book
    worst_ask = max(book.asks)
    want = {"bids": dict(book.bids), "asks": dict(book.asks)}
    apply_message(
        want, {"asks": [{"price": Decimal("1797.26"), "qty": Decimal("2.50000000")}]}, False, 10
    )
    checksum = expected_checksum(want, 2, 8)
    frame = (
        json.dumps(
            {
                "channel": "book",
                "type": "update",
                "data": [
                    {
                        "symbol": "ETH/USD",
                        "bids": [],
                        "asks": [{"price": "@1797.26@", "qty": "@2.50000000@"}],
                        "checksum": checksum,
                        "timestamp": "2025-05-06T09:17:26.300000Z",
                    }
                ],
            }
        )
        .replace('"@', "")
        .replace('@"', "")
    )  # JSON numbers written exactly as Kraken does
    out.clear()
    protocol.on_message(frame.encode(), 1, out)
    [record] = out.records
    assert isinstance(record, Book)
    assert record.asks == [(Decimal("1797.26"), Decimal("2.50000000")), (worst_ask, Decimal(0))]
    assert worst_ask not in book.asks and len(book.asks) == 10
    assert record.ts == 1746523046_300000_000


def test_corrupted_checksum_is_reported_resynced_and_never_published(
    capture: list[dict[str, Any]],
) -> None:
    rows = v2_groups(capture)["kraken-v2-book10-BTC/USD-pks"]
    protocol = make_protocol()
    out = Output()
    for i, row in enumerate(rows[:100]):
        protocol.on_message(row["raw"].encode(), i, out)
    assert all(isinstance(r, Book) for r in out.records)
    message = json.loads(rows[100]["raw"])
    message["data"][0]["checksum"] ^= 1
    out.clear()
    protocol.on_message(json.dumps(message).encode(), 100, out)
    assert [(type(r), getattr(r, "event", None)) for r in out.records] == [
        (Status, StatusEvent.CHECKSUM_MISMATCH),
        (Status, StatusEvent.RESYNC),
    ]
    assert all(r.symbol == "BTC-USD" for r in out.records)
    [action] = out.actions
    assert isinstance(action, ResyncBook) and action.symbol == "BTC-USD"
    # resync resubscribes just this book: unsubscribe, then subscribe (fresh snapshot)
    sends = protocol.resync(action.symbol, action.reason)
    assert all(isinstance(s, Send) for s in sends)
    bodies = [json.loads(s.payload) for s in sends if isinstance(s, Send)]
    assert [(b["method"], b["params"]) for b in bodies] == [
        ("unsubscribe", {"channel": "book", "symbol": ["BTC/USD"], "depth": 10}),
        ("subscribe", {"channel": "book", "symbol": ["BTC/USD"], "depth": 10}),
    ]
    # until the new snapshot arrives nothing is published, whatever comes in
    out.clear()
    for i, row in enumerate(rows[101:120]):
        protocol.on_message(row["raw"].encode(), i, out)
    assert out.records == [] and out.actions == []
    # the resubscription's ack is the protocol's own business, not the ledger's
    ack = json.dumps(
        {
            "method": "subscribe",
            "result": {"channel": "book", "depth": 10, "snapshot": True, "symbol": "BTC/USD"},
            "success": True,
            "req_id": bodies[1]["req_id"],
        }
    )
    protocol.on_message(ack.encode(), 0, out)
    assert out.acks == [] and out.records == []
    # a snapshot (here the captured session replayed) brings the verified book back
    for i, row in enumerate(rows):
        protocol.on_message(row["raw"].encode(), i, out)
    assert len(out.records) == len(rows) and all(isinstance(r, Book) for r in out.records)
    assert protocol.books["BTC-USD"].sync.checksum_failures == 1


def test_formatting_trap_precision_not_the_written_token(capture: list[dict[str, Any]]) -> None:
    # PROTOCOLS.md: the BTC/USD recording lost trailing zeros (0.001 for 0.00100000, 4.0 for
    # 4.00000000, 29431.0); Kraken checksums numbers written with the pair's precision.
    assert level_token(Decimal("0.001"), 8) == "100000"
    assert level_token(Decimal("4.0"), 8) == "400000000"
    assert level_token(Decimal("29431.0"), 1) == "294310"
    assert level_token(Decimal("1797.30"), None) == "179730"  # a full-precision wire token
    # never Decimal's str(): it switches to exponents for small values
    assert str(Decimal("0.00000010")) == "1.0E-7"
    assert level_token(Decimal("0.00000010"), None) == "10"
    assert level_token(Decimal("0.00000010"), 8) == "10"

    rows = v2_groups(capture)["kraken-v2-book10-BTC/USD-pks"]
    snapshot = json.loads(rows[0]["raw"])["data"][0]
    protocol = make_protocol()
    out = Output()
    protocol.on_message(rows[0]["raw"].encode(), 0, out)
    [published] = out.records
    assert isinstance(published, Book)
    book = protocol.books["BTC-USD"].book
    assert protocol.books["BTC-USD"].precision.price == 1
    assert protocol.books["BTC-USD"].precision.qty == 8
    assert book_checksum(book, Precision(1, 8)) == snapshot["checksum"]
    # the tokens as written give another string, so a naive checksum fails on this data
    assert book_checksum(book, None) != snapshot["checksum"]


def test_configured_precision_is_used_and_a_wrong_one_fails_safe(
    capture: list[dict[str, Any]],
) -> None:
    rows = v2_groups(capture)["kraken-v2-book10-BTC/USD-pks"]
    good = make_protocol(options={"precision": {"BTC-USD": [1, 8]}})
    out = Output()
    for i, row in enumerate(rows):
        good.on_message(row["raw"].encode(), i, out)
    assert len(out.records) == len(rows) and all(isinstance(r, Book) for r in out.records)
    wrong = make_protocol(options={"precision": {"BTC-USD": [2, 8]}})
    out.clear()
    wrong.on_message(rows[0]["raw"].encode(), 0, out)
    assert [getattr(r, "event", None) for r in out.records] == [
        StatusEvent.CHECKSUM_MISMATCH,
        StatusEvent.RESYNC,
    ]


def test_config_check_reports_bad_options() -> None:
    cfg = FeedConfig(
        exchange="kraken",
        symbols=["BTC-USD", "XBT-USD"],
        channels=["l2_book", "funding"],
        options={"precision": {"BTC-USD": "one"}, "depth": 3},
    )
    problems = dict(KrakenFeed(cfg).check())
    assert set(problems) == {"channels[1]", "symbols[1]", "options.depth", "options.precision"}
    assert "BTC" in problems["symbols[1]"]


def test_cached_checksum_equals_the_reference_on_every_captured_update(
    capture: list[dict[str, Any]],
) -> None:
    """The plugin's books use :class:`CachedChecksum`; on every captured v2 state (learned
    precision, and configured) it computes what ``book_checksum`` does."""
    compared = 0
    for options in ({}, {"precision": {"BTC-USD": [1, 8], "ETH-USD": [2, 8]}}):
        for rows in v2_groups(capture).values():
            symbol = rows[0]["symbol"].replace("/", "-")
            protocol = make_protocol([symbol], options=options, depth=rows[0]["book_depth"])
            depth_sync = protocol.books[symbol]
            cached = depth_sync.sync.checksum
            assert cached is not None

            def both(book: OrderBook, cached: Any = cached, depth_sync: Any = depth_sync) -> int:
                nonlocal compared
                value: int = cached(book)
                assert value == book_checksum(book, depth_sync.precision)
                compared += 1
                return value

            depth_sync.sync.checksum = both
            out = Output()
            for i, row in enumerate(rows):
                protocol.on_message(row["raw"].encode(), i, out)
            assert len(out.records) == len(rows) and all(isinstance(r, Book) for r in out.records)
    assert compared == 2 * 512


def test_cached_checksum_follows_random_updates_deletions_and_precisions() -> None:
    """Property-style, fixed seed: after every step of a random mix of snapshots, updates and
    deletions, with the precision learned (and reset by snapshots), configured, or absent
    (tokens as written), the cached checksum equals the reference. Values include equal
    numbers written with other digits ("4.0" / "4.00000000"), E-notation ones and shared
    quantity objects; a small ``max_size`` exercises the pruning."""
    rng = random.Random(20240611)
    price_texts = [f"{29000 + i / 2:.1f}" for i in range(60)] + ["29010.00", "29010.000"]
    qty_texts = ["4.0", "4.00000000", "0.001", "0.00100000", "0.00000010", "1.5", "12"]
    shared_qty = Decimal("2.0")
    cached = CachedChecksum(max_size=30)
    book = OrderBook()
    precisions = [Precision(), Precision(1, 8), None]
    precision = precisions[0]

    def levels(count: int) -> list[tuple[Decimal, Decimal]]:
        out = []
        for _ in range(count):
            qty = shared_qty if rng.random() < 0.1 else Decimal(rng.choice(qty_texts))
            if rng.random() < 0.3:
                qty = Decimal(0)
            out.append((Decimal(rng.choice(price_texts)), qty))
        return out

    largest = 0
    for step in range(3000):
        bids, asks = levels(rng.randrange(0, 5)), levels(rng.randrange(0, 5))
        if step % 300 == 0:
            precision = precisions[step // 300 % 3]
            bids, asks = levels(rng.randrange(0, 30)), levels(rng.randrange(0, 30))
            book.apply_snapshot(bids, asks)
            if precision is not None:
                precision.reset()
        else:
            book.apply_delta(bids, asks)
        if precision is not None:
            precision.observe(bids + asks)
        assert cached(book, precision) == book_checksum(book, precision), step
        largest = max(largest, len(cached))
    assert 20 < largest <= 60


def test_cached_checksum_reuses_tokens_only_for_the_same_objects() -> None:
    cached = CachedChecksum()
    qty = Decimal("4.0")
    book = OrderBook()
    book.apply_snapshot([(Decimal("100.0"), qty)], [])
    assert cached(book, None) == book_checksum(book, None) == zlib.crc32(b"100040")
    book.apply_delta([(Decimal("100.0"), Decimal("4.00"))], [])
    assert cached(book, None) == zlib.crc32(b"1000400")
    book.apply_snapshot([(Decimal("100.00"), qty)], [])
    assert cached(book, None) == zlib.crc32(b"1000040")
    precision = Precision()
    precision.observe([(Decimal("1.5"), Decimal("0.001"))])  # learned: 1 and 3 decimals
    assert cached(book, precision) == zlib.crc32(b"10004000")
    precision.observe([(Decimal("1.25"), Decimal("1"))])  # more price decimals seen
    assert cached(book, precision) == book_checksum(book, precision) == zlib.crc32(b"100004000")


# --- other channels ------------------------------------------------------------------------


def test_trades_keep_the_taker_side_and_exact_values() -> None:
    protocol = make_protocol(["BTC-USD"], ["trades"])
    # shape of Kraken's v2 trade channel documentation
    frame = (
        b'{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"sell",'
        b'"price":29430.2,"qty":0.00100000,"ord_type":"market","trade_id":72951840,'
        b'"timestamp":"2023-07-30T15:29:58.343415Z"}]}'
    )
    out = Output()
    assert protocol.on_message(frame, 5, out) is True
    [trade] = out.records
    assert isinstance(trade, Trade)
    assert (trade.symbol, trade.side, trade.id) == ("BTC-USD", "sell", "72951840")
    assert trade.price == Decimal("29430.2") and str(trade.size) == "0.00100000"
    assert trade.ts == 1690730998_343415_000 and trade.recv_ts == 5


def test_ticker_gives_ticker_and_bbo() -> None:
    protocol = make_protocol(["ETH-USD"], ["ticker", "bbo"])
    frame = (
        b'{"channel":"ticker","type":"update","data":[{"symbol":"ETH/USD","bid":1797.24,'
        b'"bid_qty":0.43393711,"ask":1797.25,"ask_qty":1.40355852,"last":1797.25,'
        b'"volume":4213.12345678,"vwap":1790.1,"low":1770.00,"high":1805.55,"change":12.25,'
        b'"change_pct":0.69}]}'
    )
    out = Output()
    assert protocol.on_message(frame, 1, out) is True
    ticker, bbo = out.records
    assert isinstance(ticker, Ticker) and isinstance(bbo, BBO)
    assert (bbo.bid_price, bbo.bid_size, bbo.ask_price, bbo.ask_size) == (
        Decimal("1797.24"),
        Decimal("0.43393711"),
        Decimal("1797.25"),
        Decimal("1.40355852"),
    )
    assert ticker.last == Decimal("1797.25") and ticker.open_24h == Decimal("1785.00")
    assert ticker.high_24h == Decimal("1805.55") and ticker.volume_24h == Decimal("4213.12345678")


def test_heartbeat_status_and_pong(capture: list[dict[str, Any]]) -> None:
    protocol = make_protocol()
    out = Output()
    heartbeat = next(
        r["raw"] for r in capture if r["kind"] == "heartbeat" and r["api"] == "spot-ws-v2"
    )
    assert protocol.on_message(heartbeat.encode(), 0, out) is False
    pong = next(r["raw"] for r in capture if r["kind"] == "pong" and r["api"] == "spot-ws-v2")
    assert protocol.on_message(pong.encode(), 0, out) is False and out.pong
    assert out.records == []
    online = (
        b'{"channel":"status","type":"update","data":[{"api_version":"v2",'
        b'"connection_id":123,"system":"online","version":"2.0.0"}]}'
    )
    assert protocol.on_message(online, 0, out) is False and out.records == []
    protocol.on_message(online.replace(b'"online"', b'"maintenance"'), 0, out)
    [status] = out.records
    assert isinstance(status, Status) and status.event is StatusEvent.ERROR
    assert "maintenance" in status.detail
    assert protocol.feed.heartbeat.payload == b'{"method":"ping"}'


def test_malformed_frames_raise_for_the_actor_to_count() -> None:
    protocol = make_protocol()
    out = Output()
    with pytest.raises(msgspec.DecodeError):
        protocol.on_message(b"not json", 0, out)
    with pytest.raises(DecodeError):
        protocol.on_message(b"{}", 0, out)
    with pytest.raises(DecodeError):
        protocol.on_message(b'{"channel":"ohlc","type":"update","data":[]}', 0, out)
    with pytest.raises(DecodeError):  # a pair this connection did not subscribe
        protocol.on_message(
            b'{"channel":"book","type":"snapshot","data":[{"symbol":"ETH/USD","bids":[],'
            b'"asks":[],"checksum":0}]}',
            0,
            out,
        )
    with pytest.raises(msgspec.ValidationError):  # checksum missing
        protocol.on_message(
            b'{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[]}]}', 0, out
        )
    with pytest.raises(msgspec.ValidationError):  # a price that is not a number
        protocol.on_message(
            b'{"channel":"book","type":"snapshot","data":[{"symbol":"BTC/USD","checksum":1,'
            b'"bids":[{"price":"x","qty":1}]}]}',
            0,
            out,
        )
    with pytest.raises(DecodeError):
        protocol.on_message(b'{"channel":"book","type":"partial","data":[]}', 0, out)
    assert out.records == []


class KrakenDepth10(KrakenFeed):
    """The captured sessions subscribed depth 10 (the conformance kit uses the default
    config, whose ``book_depth`` maps to 1000)."""

    @property
    def depth(self) -> int:
        return 10


def test_conforms_on_the_captured_v2_frames(capture: list[dict[str, Any]]) -> None:
    kinds = {"subscribe_ack", "subscribe_error", "heartbeat", "pong"}
    frames = [
        r["raw"]
        for r in capture
        if r["api"] == "spot-ws-v2"
        and r["direction"] == "server->client"
        and (r.get("group") or r["kind"] in kinds)
    ]
    report = assert_conforms(
        KrakenDepth10,
        frames,
        symbols=["BTC-USD", "ETH-USD"],
        channels=["l2_book"],
        plan_symbols=[f"S{i:03d}-USD" for i in range(300)],  # 300 streams: 2 connections
    )
    assert report.counts["book"] == 512
    assert report.counts["status"] == 1  # the captured refusal of XBT/USD
    assert not report.resyncs and not report.unsubscribed_streams
