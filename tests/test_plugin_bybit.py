"""The Bybit plugin, sans-I/O: captured frames in, verified books and records out.

The capture (``streamkit/simulator/data/bybit.jsonl``) holds Bybit's documented v5 examples
plus real frames quoted by third parties: a consecutive ``orderbook.50`` snapshot/delta pair,
a 9-fill trade frame, an ack and two rejections. Expected books are computed here from the
raw JSON, independently of the plugin and of BookSync.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from importlib import resources
from typing import Any

import msgspec
import pytest

from streamkit.config import FeedConfig
from streamkit.feed import DecodeError, Heartbeat, Output, ResyncBook, Send
from streamkit.model import (
    BBO,
    Book,
    Funding,
    Liquidation,
    OpenInterest,
    Status,
    StatusEvent,
    Ticker,
    Trade,
)
from streamkit_bybit import BybitFeed
from streamkit_bybit.feed import BybitProtocol

GROUP = "bybit-v5-ob50-BTCUSDT"


@pytest.fixture(scope="module")
def capture() -> list[dict[str, Any]]:
    text = (resources.files("streamkit.simulator") / "data" / "bybit.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def make_feed(
    symbols: list[str], channels: list[str], options: dict[str, Any] | None = None
) -> BybitFeed:
    cfg = FeedConfig(exchange="bybit", symbols=symbols, channels=channels, options=options or {})
    return BybitFeed(cfg)


def make_protocol(
    symbols: list[str] | None = None,
    channels: list[str] | None = None,
    options: dict[str, Any] | None = None,
) -> BybitProtocol:
    feed = make_feed(symbols or ["BTC-USDT-PERP"], channels or ["l2_book"], options)
    [plan] = feed.plan()
    protocol = feed.protocol(plan, "bybit/0")
    protocol.subscriptions()
    return protocol


def book_pair(capture: list[dict[str, Any]]) -> tuple[bytes, bytes]:
    snapshot, delta = (r["raw"].encode() for r in capture if r.get("group") == GROUP)
    return snapshot, delta


def expected_book(frames: list[bytes], depth: int = 50) -> dict[str, dict[Decimal, Decimal]]:
    """Bybit's documented rules: snapshot replaces, size 0 deletes, others set; keep the best
    ``depth`` levels per side."""
    book: dict[str, dict[Decimal, Decimal]] = {"b": {}, "a": {}}
    for raw in frames:
        msg = json.loads(raw)
        if msg["type"] == "snapshot" or msg["data"]["u"] == 1:
            book = {"b": {}, "a": {}}
        for side in ("b", "a"):
            for px, sz in msg["data"][side]:
                if Decimal(sz) == 0:
                    book[side].pop(Decimal(px), None)
                else:
                    book[side][Decimal(px)] = Decimal(sz)
        best_bids = sorted(book["b"], reverse=True)[:depth]
        best_asks = sorted(book["a"])[:depth]
        book = {
            "b": {p: book["b"][p] for p in best_bids},
            "a": {p: book["a"][p] for p in best_asks},
        }
    return book


def with_update_id(frame: bytes, u: int) -> bytes:
    msg = json.loads(frame)
    msg["data"]["u"] = u
    return json.dumps(msg).encode()


def of_type(records: list[Any], cls: type[Any]) -> list[Any]:
    return [r for r in records if isinstance(r, cls)]


def status_events(out: Output) -> list[StatusEvent]:
    return [r.event for r in out.records if isinstance(r, Status)]


# --- symbols, category, plan ---------------------------------------------------------------


def test_symbol_mapping_is_reversible_per_category() -> None:
    spot = make_feed(["BTC-USDT"], ["trades"])
    linear = make_feed(["BTC-USDT-PERP"], ["trades"])
    assert (spot.category, linear.category) == ("spot", "linear")
    for feed, pairs in [
        (spot, {"BTC-USDT": "BTCUSDT", "ETH-BTC": "ETHBTC", "PEPE-USDC": "PEPEUSDC"}),
        (
            linear,
            {
                "BTC-USDT-PERP": "BTCUSDT",
                "1000PEPE-USDT-PERP": "1000PEPEUSDT",
                "BTC-USDC-PERP": "BTCPERP",
                "BTC-USDC-251226": "BTC-26DEC25",
                "BTC-USDT-250307": "BTCUSDT-7MAR25",
            },
        ),
    ]:
        for normalized, native in pairs.items():
            assert feed.exchange_symbol(normalized) == native
            assert feed.normalize_symbol(native) == normalized
    with pytest.raises(ValueError, match="linear"):
        spot.exchange_symbol("BTC-USDT-PERP")
    with pytest.raises(ValueError, match="inverse"):
        linear.exchange_symbol("BTC-USD-PERP")
    for bad in ["BTCUSDT", "btc-usdt", "BTC-USDT-SWAP", "BTC-USDT-251332"]:
        with pytest.raises(ValueError):
            linear.exchange_symbol(bad)


def test_category_option_and_config_checks() -> None:
    assert make_feed(["BTC-USDT"], ["trades"], {"category": "linear"}).check() != []
    feed = make_feed(["BTC-USDT-PERP"], ["trades"], {"category": "linear"})
    assert feed.check() == [] and feed.url == "wss://stream.bybit.com/v5/public/linear"
    assert make_feed(["BTC-USDT"], ["trades"]).url == "wss://stream.bybit.com/v5/public/spot"
    [(key, message)] = make_feed(["BTC-USDT"], ["trades"], {"category": "option"}).check()
    assert key == "options.category" and "spot, linear" in message
    [(key, _)] = make_feed(["BTC-USDT", "ETH-USDT-PERP"], ["trades"]).check()
    assert key == "symbols[1]"  # one feed streams one category
    [(key, _)] = make_feed(["BTC-USDT"], ["trades", "funding"]).check()
    assert key == "channels[1]"  # funding exists for linear contracts only
    [(key, _)] = make_feed(["BTC-USDT-251226"], ["funding"]).check()
    assert key == "symbols[0]"  # dated futures have no funding


def test_declared_limits_and_heartbeat() -> None:
    assert BybitFeed.heartbeat == Heartbeat(interval=20.0, payload=b'{"op":"ping"}')
    limits = BybitFeed.limits
    assert limits.max_streams_per_message == 10  # spot: at most 10 args per request
    assert (limits.max_connects, limits.connect_window) == (500, 300.0)
    assert limits.max_streams_per_connection * 50 <= 21_000  # args length per connection


def test_subscribe_messages_format_and_limit() -> None:
    symbols = [f"C{i:02d}-USDT" for i in range(12)]
    protocol = make_protocol(symbols, ["trades", "l2_book"])
    requests = protocol.subscriptions()
    assert [len(r.streams) for r in requests] == [10, 10, 4]
    first = json.loads(requests[0].payload)
    assert first == {
        "op": "subscribe",
        "args": [
            "publicTrade.C00USDT",
            "orderbook.50.C00USDT",
            "publicTrade.C01USDT",
            "orderbook.50.C01USDT",
            "publicTrade.C02USDT",
            "orderbook.50.C02USDT",
            "publicTrade.C03USDT",
            "orderbook.50.C03USDT",
            "publicTrade.C04USDT",
            "orderbook.50.C04USDT",
        ],
        "req_id": requests[0].key,
    }


def test_ticker_funding_and_open_interest_share_one_topic() -> None:
    protocol = make_protocol(["BTC-USDT-PERP"], ["ticker", "funding", "open_interest", "bbo"])
    [request] = protocol.subscriptions()
    assert json.loads(request.payload)["args"] == ["tickers.BTCUSDT", "orderbook.1.BTCUSDT"]
    assert len(request.streams) == 4


# --- acks and heartbeats -------------------------------------------------------------------


def test_acks_and_rejections_map_to_requests(capture: list[dict[str, Any]]) -> None:
    protocol = make_protocol([f"C{i:02d}-USDT" for i in range(15)], ["trades"])
    assert protocol.pending == ["1", "2"]
    out = Output()
    ack = b'{"success":true,"ret_msg":"subscribe","conn_id":"c","req_id":"2","op":"subscribe"}'
    assert protocol.on_message(ack, 0, out) is False
    assert out.acks == ["2"]
    # The captured live rejection: req_id "" (not echoed) -> the oldest request waiting.
    [live_reject] = [
        r["raw"].encode()
        for r in capture
        if r["kind"] == "subscribe_error" and "NOTASYMBOL" in r["raw"]
    ]
    protocol.on_message(live_reject, 0, out)
    [(key, reason)] = out.rejects
    assert key == "1" and "handler not found,topic:publicTrade.NOTASYMBOL" in reason
    assert protocol.pending == []
    # Nothing left to settle: a further failure is reported as a status record.
    out.clear()
    protocol.on_message(live_reject, 0, out)
    assert out.rejects == [] and status_events(out) == [StatusEvent.ERROR]


def test_captured_linear_ack_without_req_id_settles_oldest(
    capture: list[dict[str, Any]],
) -> None:
    [live_ack] = [
        r["raw"].encode()
        for r in capture
        if r["kind"] == "subscribe_ack" and r.get("provenance") == "third_party_live_copy"
    ]
    protocol = make_protocol()
    out = Output()
    protocol.on_message(live_ack, 0, out)
    assert out.acks == ["1"]


def test_pongs_are_heartbeats_not_data(capture: list[dict[str, Any]]) -> None:
    pongs = [r["raw"].encode() for r in capture if r["kind"] == "pong"]
    assert len(pongs) == 4  # spot, linear, option/spread and private forms
    protocol = make_protocol()
    for pong in pongs:
        out = Output()
        assert protocol.on_message(pong, 0, out) is False
        assert out.pong is True and out.records == [] and out.acks == []
    [ping] = [json.loads(r["raw"]) for r in capture if r["kind"] == "ping"]
    assert json.loads(BybitFeed.heartbeat.payload or b"")["op"] == ping["op"] == "ping"


# --- books ---------------------------------------------------------------------------------


def test_captured_snapshot_and_delta_apply_without_a_false_gap(
    capture: list[dict[str, Any]],
) -> None:
    snapshot, delta = book_pair(capture)
    protocol = make_protocol()
    out = Output()
    assert protocol.on_message(snapshot, 1, out) is True
    assert protocol.on_message(delta, 2, out) is True
    assert status_events(out) == [] and out.actions == []
    snap, update = of_type(out.records, Book)
    assert snap.snapshot and snap.seq == 10132540 and len(snap.bids) == 50
    assert not update.snapshot and update.seq == 10132541
    assert update.ts == 1773386409407 * 1_000_000
    sync = protocol.books["BTC-USDT-PERP"]
    expected = expected_book([snapshot, delta])
    assert sync.book.bids == expected["b"] and sync.book.asks == expected["a"]
    assert len(sync.book.bids) == len(sync.book.asks) == 50  # kept to the subscribed depth


def test_levels_pushed_out_of_depth_50_are_dropped(capture: list[dict[str, Any]]) -> None:
    snapshot, delta = book_pair(capture)
    insert = (
        b'{"topic":"orderbook.50.BTCUSDT","type":"delta","ts":1773386409427,"data":{"s":"BTCUSDT",'
        b'"b":[["71423.50","0.100"],["71423.60","0.200"]],"a":[["71424.50","0.300"]],'
        b'"u":10132542,"seq":546137962190},"cts":1773386409425}'
    )
    protocol = make_protocol()
    out = Output()
    for i, frame in enumerate([snapshot, delta, insert]):
        protocol.on_message(frame, i, out)
    assert status_events(out) == [] and len(of_type(out.records, Book)) == 3
    book = protocol.books["BTC-USDT-PERP"].book
    expected = expected_book([snapshot, delta, insert])
    assert book.bids == expected["b"] and book.asks == expected["a"]
    assert len(book.bids) == len(book.asks) == 50
    worst_before = sorted(expected_book([snapshot, delta])["b"])[:2]
    assert not set(worst_before) & set(book.bids)  # Bybit sends no delete for these


def test_skipped_update_id_is_a_gap_and_resubscribes(capture: list[dict[str, Any]]) -> None:
    snapshot, delta = book_pair(capture)
    protocol = make_protocol()
    out = Output()
    protocol.on_message(snapshot, 1, out)
    out.clear()
    protocol.on_message(with_update_id(delta, 10132542), 2, out)  # 10132541 never arrived
    assert of_type(out.records, Book) == []
    assert status_events(out) == [StatusEvent.GAP, StatusEvent.RESYNC]
    [action] = out.actions
    assert isinstance(action, ResyncBook) and action.symbol == "BTC-USDT-PERP"
    sends = protocol.resync(action.symbol, action.reason)
    bodies = [json.loads(s.payload) for s in sends if isinstance(s, Send)]
    assert [(b["op"], b["args"]) for b in bodies] == [
        ("unsubscribe", ["orderbook.50.BTCUSDT"]),
        ("subscribe", ["orderbook.50.BTCUSDT"]),
    ]
    # The resync's own acks are not subscription requests of the ledger.
    out.clear()
    for body in bodies:
        reply = {"success": True, "ret_msg": "", "op": body["op"], "req_id": body["req_id"]}
        assert protocol.on_message(json.dumps(reply).encode(), 3, out) is False
    assert out.acks == [] and out.records == []
    # Deltas are dropped until the fresh snapshot; then the book is live again.
    protocol.on_message(with_update_id(delta, 10132543), 4, out)
    assert out.records == []
    protocol.on_message(snapshot, 5, out)
    protocol.on_message(delta, 6, out)
    assert [b.seq for b in of_type(out.records, Book)] == [10132540, 10132541]


def test_update_id_one_resets_the_book(capture: list[dict[str, Any]]) -> None:
    snapshot, delta = book_pair(capture)
    protocol = make_protocol()
    out = Output()
    protocol.on_message(snapshot, 1, out)
    protocol.on_message(delta, 2, out)
    restart = (
        b'{"topic":"orderbook.50.BTCUSDT","type":"delta","ts":1773386500000,"data":{"s":"BTCUSDT",'
        b'"b":[["70000.10","1.5"]],"a":[["70000.20","2.5"]],"u":1,"seq":546137990000},'
        b'"cts":1773386499998}'
    )
    after = (
        b'{"topic":"orderbook.50.BTCUSDT","type":"delta","ts":1773386500010,"data":{"s":"BTCUSDT",'
        b'"b":[["69999.90","0.5"]],"a":[],"u":2,"seq":546137990001},"cts":1773386500008}'
    )
    out.clear()
    protocol.on_message(restart, 3, out)
    protocol.on_message(after, 4, out)
    assert status_events(out) == []
    reset, follow = of_type(out.records, Book)
    assert reset.snapshot and reset.seq == 1 and not follow.snapshot and follow.seq == 2
    book = protocol.books["BTC-USDT-PERP"].book
    assert book.bids == expected_book([snapshot, delta, restart, after])["b"]
    assert book.bids == {Decimal("70000.10"): Decimal("1.5"), Decimal("69999.90"): Decimal("0.5")}
    assert book.asks == {Decimal("70000.20"): Decimal("2.5")}


def test_malformed_price_raises_before_the_book_changes(capture: list[dict[str, Any]]) -> None:
    """Prices decode as strings and are interned in on_message: a price that is not a number
    raises there (the actor counts it as a decode error) with the book untouched, and the
    same update id, sent well-formed, still chains."""
    snapshot, delta = book_pair(capture)
    protocol = make_protocol()
    out = Output()
    protocol.on_message(snapshot, 1, out)
    msg = json.loads(delta)
    msg["data"]["a"].append(["71430.x", "1"])  # after valid levels of both sides
    out.clear()
    with pytest.raises(InvalidOperation):
        protocol.on_message(json.dumps(msg).encode(), 2, out)
    assert out.records == [] and out.actions == []
    sync = protocol.books["BTC-USDT-PERP"]
    expected = expected_book([snapshot])
    assert sync.book.bids == expected["b"] and sync.book.asks == expected["a"]
    protocol.on_message(delta, 3, out)
    assert status_events(out) == [] and [b.seq for b in of_type(out.records, Book)] == [10132541]


def test_level_one_book_is_the_bbo() -> None:
    protocol = make_protocol(["BTC-USDT"], ["bbo"])
    frame = (
        b'{"topic":"orderbook.1.BTCUSDT","type":"snapshot","ts":1672304484978,"data":{"s":"BTCUSDT",'
        b'"b":[["16493.50","0.006"]],"a":[["16611.00","0.029"]],"u":18521288,"seq":7961638724},'
        b'"cts":1672304484976}'
    )
    out = Output()
    assert protocol.on_message(frame, 0, out) is True
    [bbo] = out.records
    assert isinstance(bbo, BBO)
    assert (bbo.bid_price, bbo.bid_size, bbo.ask_price, bbo.ask_size) == (
        Decimal("16493.50"),
        Decimal("0.006"),
        Decimal("16611.00"),
        Decimal("0.029"),
    )


# --- trades, tickers, liquidations ---------------------------------------------------------


def test_captured_trades_normalize(capture: list[dict[str, Any]]) -> None:
    rows = [r for r in capture if r["kind"] == "trade"]
    protocol = make_protocol(["BTC-USDT-PERP"], ["trades"])
    out = Output()
    for row in rows:
        assert protocol.on_message(row["raw"].encode(), 9, out) is True
    wire = [t for row in rows for t in json.loads(row["raw"])["data"]]
    trades = of_type(out.records, Trade)
    assert len(trades) == len(wire) == 10  # 1 documented + 9 fills of one live sweep
    for trade, w in zip(trades, wire, strict=True):
        assert trade.symbol == "BTC-USDT-PERP" and trade.recv_ts == 9
        assert trade.price == Decimal(w["p"]) and str(trade.price) == w["p"]
        assert trade.size == Decimal(w["v"])
        assert trade.side == w["S"].lower()  # S is the taker's side
        assert trade.id == w["i"]
        assert trade.ts == w["T"] * 1_000_000
    assert trades[0].side == "buy" and trades[0].id == "20f43950-d8dd-5b31-9112-a178eb6023af"
    assert {t.side for t in trades[1:]} == {"sell"}


def test_linear_ticker_feeds_ticker_funding_and_open_interest(
    capture: list[dict[str, Any]],
) -> None:
    [row] = [
        r
        for r in capture
        if r["kind"] == "ticker" and r.get("symbol") == "BTCUSDT" and "fundingRate" in r["raw"]
    ]
    protocol = make_protocol(["BTC-USDT-PERP"], ["ticker", "funding", "open_interest"])
    out = Output()
    assert protocol.on_message(row["raw"].encode(), 0, out) is True
    [ticker] = of_type(out.records, Ticker)
    assert (ticker.last, ticker.bid, ticker.ask) == (
        Decimal("66666.60"),
        Decimal("66666.60"),
        Decimal("66666.70"),
    )
    assert ticker.volume_24h == Decimal("73191.3870")
    assert ticker.quote_volume_24h == Decimal("4936790807.6521")
    [funding] = of_type(out.records, Funding)
    assert funding.rate == Decimal("-0.005") and funding.mark_price == Decimal("66666.60")
    assert funding.index_price == Decimal("115418.19")
    assert funding.next_funding_ts == 1760342400000 * 1_000_000
    [oi] = of_type(out.records, OpenInterest)
    assert oi.open_interest == Decimal("492373.72")

    # Linear deltas carry only what changed; they are merged into the last state.
    out.clear()
    delta = (
        b'{"topic":"tickers.BTCUSDT","type":"delta","data":{"symbol":"BTCUSDT",'
        b'"lastPrice":"66670.00","bid1Price":"66669.90"},"cs":9532239430,"ts":1760325000100}'
    )
    protocol.on_message(delta, 1, out)
    [ticker] = out.records
    assert isinstance(ticker, Ticker)
    assert (ticker.last, ticker.bid, ticker.ask) == (
        Decimal("66670.00"),
        Decimal("66669.90"),
        Decimal("66666.70"),
    )
    assert ticker.high_24h == Decimal("79266.30")  # from the snapshot


def test_spot_ticker(capture: list[dict[str, Any]]) -> None:
    [row] = [r for r in capture if r["kind"] == "ticker" and "usdIndexPrice" in r["raw"]]
    protocol = make_protocol(["BTC-USDT"], ["ticker"])
    out = Output()
    protocol.on_message(row["raw"].encode(), 0, out)
    [ticker] = out.records
    assert isinstance(ticker, Ticker) and ticker.symbol == "BTC-USDT"
    assert ticker.last == Decimal("21109.77") and ticker.bid is None
    assert ticker.open_24h == Decimal("20704.93") and ticker.ts == 1673853746003 * 1_000_000


def test_liquidation_side_is_the_forced_order_side() -> None:
    protocol = make_protocol(["BTC-USDT-PERP"], ["liquidations"])
    frame = (
        b'{"topic":"allLiquidation.BTCUSDT","type":"snapshot","ts":1739502303204,"data":['
        b'{"T":1739502302929,"s":"BTCUSDT","S":"Buy","v":"0.5","p":"95000.1"},'
        b'{"T":1739502302930,"s":"BTCUSDT","S":"Sell","v":"0.2","p":"95100"}]}'
    )
    out = Output()
    protocol.on_message(frame, 0, out)
    long_liq, short_liq = of_type(out.records, Liquidation)
    assert (long_liq.side, long_liq.price, long_liq.size) == ("sell", Decimal("95000.1"), 0.5)
    assert short_liq.side == "buy" and short_liq.ts == 1739502302930 * 1_000_000


# --- malformed input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        b"pong",
        b"{not json",
        b'{"hello":"world"}',
        b'{"topic":"publicTrade.ETHUSDT","type":"snapshot","ts":1,"data":[]}',
        b'{"topic":"orderbook.50.BTCUSDT","type":"partial","ts":1,'
        b'"data":{"s":"BTCUSDT","b":[],"a":[],"u":5}}',
        b'{"topic":"orderbook.50.BTCUSDT","type":"snapshot","ts":1}',
        b'{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1,'
        b'"data":[{"T":1,"s":"BTCUSDT","S":"Up","v":"1","p":"1","i":"x"}]}',
        b'{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1,'
        b'"data":[{"T":1,"s":"BTCUSDT","S":"Buy","v":"1","p":"abc","i":"x"}]}',
    ],
)
def test_malformed_frames_raise(frame: bytes) -> None:
    protocol = make_protocol(["BTC-USDT-PERP"], ["trades", "l2_book"])
    with pytest.raises((DecodeError, msgspec.DecodeError)):
        protocol.on_message(frame, 0, Output())
