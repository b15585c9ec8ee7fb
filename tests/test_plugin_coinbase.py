"""The Coinbase Exchange plugin, sans-I/O: real captured frames in, normalized records out.

Expected values are computed here independently of the plugin (stdlib json, Decimal).
"""

from __future__ import annotations

import calendar
import json
from dataclasses import replace
from decimal import Decimal, InvalidOperation
from importlib import resources
from typing import Any, ClassVar

import msgspec
import pytest

from streamkit.config import FeedConfig
from streamkit.feed import DecodeError, Limits, Output, ResyncBook, Send
from streamkit.model import BBO, Book, Status, StatusEvent, Ticker, Trade
from streamkit.testing import assert_conforms
from streamkit_coinbase import CoinbaseFeed
from streamkit_coinbase.feed import CoinbaseProtocol

EXCHANGE_FEED = "exchange-feed"


def load_capture() -> list[dict[str, Any]]:
    text = (resources.files("streamkit.simulator") / "data" / "coinbase.jsonl").read_text()
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [r for r in rows if r["api"].startswith(EXCHANGE_FEED)]


@pytest.fixture(scope="module")
def capture() -> list[dict[str, Any]]:
    return load_capture()


def make_protocol(
    symbols: list[str] | None = None,
    channels: list[str] | None = None,
    options: dict[str, Any] | None = None,
    feed_class: type[CoinbaseFeed] = CoinbaseFeed,
) -> CoinbaseProtocol:
    cfg = FeedConfig(
        exchange="coinbase",
        symbols=symbols or ["NU-GBP"],
        channels=channels or ["l2_book"],
        options=options or {},
    )
    feed = feed_class(cfg, url="ws://sim/")
    [plan] = feed.plan()
    return feed.protocol(plan, "coinbase/0")


def ack_all(protocol: CoinbaseProtocol, out: Output) -> None:
    """Answer every pending subscribe with a ``subscriptions`` list holding all of it."""
    for request in protocol.subscriptions():
        body = json.loads(request.payload)
        channels = [{"name": c, "product_ids": body["product_ids"]} for c in body["channels"]]
        frame = json.dumps({"type": "subscriptions", "channels": channels})
        protocol.on_message(frame.encode(), 0, out)


def match(product: str, trade_id: int, sequence: int, side: str = "buy") -> bytes:
    return json.dumps(
        {
            "type": "match",
            "trade_id": trade_id,
            "maker_order_id": "m",
            "taker_order_id": "t",
            "side": side,
            "size": "1.5",
            "price": "0.5",
            "product_id": product,
            "sequence": sequence,
            "time": "2021-04-17T16:43:37.089723Z",
        }
    ).encode()


def ns(iso: str) -> int:
    """Independent RFC 3339 (``YYYY-MM-DDTHH:MM:SS.ffffffZ``) -> ns conversion for the tests."""
    whole, _, frac = iso.rstrip("Z").partition(".")
    date, _, clock = whole.partition("T")
    fields = [int(x) for x in date.split("-") + clock.split(":")]
    seconds = calendar.timegm((*fields, 0, 0, 0))
    return seconds * 1_000_000_000 + int(frac.ljust(9, "0"))


# --- symbols and subscriptions -------------------------------------------------------------


def test_symbol_mapping_round_trips() -> None:
    feed = make_protocol().feed
    for symbol in ["BTC-USD", "NU-GBP", "SKL-BTC", "1INCH-EUR"]:
        assert feed.exchange_symbol(symbol) == symbol
        assert feed.normalize_symbol(feed.exchange_symbol(symbol)) == symbol
    for bad in ["BTC-USD-PERP", "btc-usd", "BTCUSD", "BTC/USD"]:
        with pytest.raises(ValueError):
            feed.exchange_symbol(bad)
        with pytest.raises(ValueError):
            feed.normalize_symbol(bad)


def test_subscribe_carries_every_channel_and_heartbeat() -> None:
    protocol = make_protocol(["BTC-USD", "ETH-USD"], ["trades", "l2_book", "ticker", "bbo"])
    [request] = protocol.subscriptions()
    assert json.loads(request.payload) == {
        "type": "subscribe",
        "product_ids": ["BTC-USD", "ETH-USD"],
        "channels": ["level2_batch", "matches", "ticker", "heartbeat"],
    }
    assert len(request.streams) == 8
    authed = make_protocol(["BTC-USD"], ["l2_book"], {"level2_channel": "level2"})
    [request] = authed.subscriptions()
    assert json.loads(request.payload)["channels"] == ["level2", "heartbeat"]


def test_config_check_reports_bad_options() -> None:
    cfg = FeedConfig(
        exchange="coinbase",
        symbols=["BTC-USD"],
        channels=["l2_book"],
        options={"level2_channel": "level3", "jwt": "x"},
    )
    assert {key for key, _ in CoinbaseFeed(cfg).check()} == {
        "options.level2_channel",
        "options.jwt",
    }


def test_first_answer_after_a_request_is_its_ack(capture: list[dict[str, Any]]) -> None:
    symbols = sorted({r["symbol"] for r in capture if r.get("symbol")})
    protocol = make_protocol(symbols, ["trades", "ticker", "l2_book"], {"level2_channel": "level2"})
    [request] = protocol.subscriptions()
    acks = [r["raw"] for r in capture if r["kind"] == "subscribe_ack"]
    out = Output()
    # The captured session's last ack lists level2, ticker and matches for every product but
    # no heartbeat (that client never asked for it): this request is therefore NOT confirmed.
    protocol.on_message(acks[-1].encode(), 0, out)
    assert out.acks == []
    [(key, reason)] = out.rejects
    assert key == request.key and reason.startswith("not subscribed: heartbeat:")
    # with the heartbeat listed too, the same answer confirms the request
    body = json.loads(acks[-1])
    body["channels"].append({"name": "heartbeat", "product_ids": symbols})
    protocol = make_protocol(symbols, ["trades", "ticker", "l2_book"], {"level2_channel": "level2"})
    [request] = protocol.subscriptions()
    out = Output()
    protocol.on_message(json.dumps(body).encode(), 0, out)
    assert out.acks == [request.key] and out.rejects == []


class TwoPerRequest(CoinbaseFeed):
    limits: ClassVar[Limits] = replace(CoinbaseFeed.limits, max_streams_per_message=2)


def test_answers_settle_requests_in_order_and_errors_reject(
    capture: list[dict[str, Any]],
) -> None:
    protocol = make_protocol(["A-USD", "B-USD", "C-USD"], ["trades"], feed_class=TwoPerRequest)
    requests = protocol.subscriptions()
    assert [json.loads(r.payload)["product_ids"] for r in requests] == [
        ["A-USD", "B-USD"],
        ["C-USD"],
    ]
    everything = {
        "type": "subscriptions",
        "channels": [
            {"name": "matches", "product_ids": ["A-USD", "B-USD", "C-USD"]},
            {"name": "heartbeat", "product_ids": ["A-USD", "B-USD", "C-USD"]},
        ],
    }
    out = Output()
    protocol.on_message(json.dumps(everything).encode(), 0, out)
    assert out.acks == ["1"]
    [error] = [r["raw"] for r in capture if r["kind"] == "subscribe_error"]
    protocol.on_message(error.encode(), 0, out)
    assert out.rejects == [
        ("2", "Failed to subscribe: " + json.loads(error)["reason"]),
    ]
    assert "at least one product ID" in out.rejects[0][1]
    # an error nobody waits for is reported, not dropped
    protocol.on_message(error.encode(), 0, out)
    [status] = out.records
    assert isinstance(status, Status) and status.event is StatusEvent.ERROR


# --- book ----------------------------------------------------------------------------------


def test_captured_snapshot_and_l2updates_build_the_book(capture: list[dict[str, Any]]) -> None:
    rows = [r for r in capture if r.get("group") == "coinbase-exchange-level2-NU-GBP"]
    snapshot, updates = rows[0], rows[1:]
    assert snapshot["kind"] == "book_snapshot" and len(updates) == 76
    want: dict[str, dict[Decimal, Decimal]] = {"buy": {}, "sell": {}}
    snap = json.loads(snapshot["raw"])
    want["buy"] = {Decimal(p): Decimal(s) for p, s in snap["bids"]}
    want["sell"] = {Decimal(p): Decimal(s) for p, s in snap["asks"]}
    for row in updates:
        for side, price, size in json.loads(row["raw"])["changes"]:
            if Decimal(size) == 0:
                want[side].pop(Decimal(price), None)
            else:
                want[side][Decimal(price)] = Decimal(size)

    protocol = make_protocol()
    out = Output()
    for i, row in enumerate(rows):
        assert protocol.on_message(row["raw"].encode(), i, out) is True
    books = [r for r in out.records if isinstance(r, Book)]
    assert len(books) == len(out.records) == 77
    assert books[0].snapshot and not any(b.snapshot for b in books[1:])
    assert books[1].bids == [(Decimal("0.4312"), Decimal("0"))] and books[1].asks == []
    assert books[1].ts == ns("2021-04-17T16:43:37.080304Z")
    sync = protocol.books["NU-GBP"]
    assert sync.book.bids == want["buy"] and sync.book.asks == want["sell"]
    assert sync.book.best_ask() == (Decimal("0.4393"), Decimal("8208.213533"))
    assert sync.gaps == 0 and not sync.book.is_crossed()


def test_malformed_price_raises_before_the_book_changes(capture: list[dict[str, Any]]) -> None:
    """Level-2 prices decode as strings and are interned in on_message: one that is not a
    number raises there (the actor counts it as a decode error) with the book untouched."""
    rows = [r for r in capture if r.get("group") == "coinbase-exchange-level2-NU-GBP"]
    protocol = make_protocol()
    out = Output()
    bad_snapshot = json.loads(rows[0]["raw"])
    bad_snapshot["asks"].append(["0.5x", "1"])
    with pytest.raises(InvalidOperation):
        protocol.on_message(json.dumps(bad_snapshot).encode(), 0, out)
    assert out.records == [] and not protocol.books["NU-GBP"].live

    protocol.on_message(rows[0]["raw"].encode(), 1, out)
    sync = protocol.books["NU-GBP"]
    before = dict(sync.book.bids), dict(sync.book.asks)
    update = json.loads(rows[1]["raw"])
    update["changes"] = [["buy", "0.4312", "5"], ["sell", "x", "1"]]  # a valid change first
    out.clear()
    with pytest.raises(InvalidOperation):
        protocol.on_message(json.dumps(update).encode(), 2, out)
    assert out.records == [] and (dict(sync.book.bids), dict(sync.book.asks)) == before
    for i, row in enumerate(rows[1:]):
        protocol.on_message(row["raw"].encode(), 3 + i, out)
    assert len([r for r in out.records if isinstance(r, Book)]) == len(out.records) == 76


# --- trades, gaps, tickers -----------------------------------------------------------------


def test_captured_matches_normalize_with_the_taker_side(capture: list[dict[str, Any]]) -> None:
    rows = [r for r in capture if r["kind"] == "trade"]
    symbols = sorted({r["symbol"] for r in rows})
    protocol = make_protocol(symbols, ["trades"])
    out = Output()
    for row in rows:
        protocol.on_message(row["raw"].encode(), 42, out)
    trades = [r for r in out.records if isinstance(r, Trade)]
    raw_matches = [json.loads(r["raw"]) for r in rows]
    published = [m for m in raw_matches if m["type"] == "match"]
    assert len(trades) == len(published) == 6  # last_match replays an old trade: not published
    for trade, m in zip(trades, published, strict=True):
        assert trade.symbol == m["product_id"] and trade.id == str(m["trade_id"])
        assert trade.price == Decimal(m["price"]) and trade.size == Decimal(m["size"])
        assert trade.side == {"buy": "sell", "sell": "buy"}[m["side"]]
        assert trade.ts == ns(m["time"]) and trade.recv_ts == 42
    # {"type":"match","trade_id":280232,...,"side":"sell","size":"985","price":"0.00001305",
    #  "product_id":"SKL-BTC","sequence":177100030,"time":"2021-04-17T16:43:37.089723Z"}
    first = trades[0]
    assert (first.symbol, first.id, first.side) == ("SKL-BTC", "280232", "buy")
    assert str(first.price) == "0.00001305" and first.ts == 1618677817_089723_000
    assert not [r for r in out.records if isinstance(r, Status)]  # sequence jumps are normal


def test_trade_id_jump_is_a_gap_that_resyncs_the_book() -> None:
    protocol = make_protocol(["SKL-BTC"], ["trades", "l2_book"])
    out = Output()
    ack_all(protocol, out)
    snapshot = (
        b'{"type":"snapshot","product_id":"SKL-BTC",'
        b'"bids":[["0.00001302","10"]],"asks":[["0.00001305","5"]]}'
    )
    protocol.on_message(snapshot, 0, out)
    protocol.on_message(match("SKL-BTC", 280232, 177100030), 0, out)
    # sequences jump between matches all the time (other order events): not a gap
    protocol.on_message(match("SKL-BTC", 280233, 177100140), 0, out)
    assert not [r for r in out.records if isinstance(r, Status)]
    out.clear()
    protocol.on_message(match("SKL-BTC", 280236, 177100200), 7, out)  # 280234-280235 lost
    gap, resync, trade = out.records
    assert isinstance(gap, Status) and gap.event is StatusEvent.GAP and gap.symbol == "SKL-BTC"
    assert "280234..280235" in gap.detail
    assert isinstance(resync, Status) and resync.event is StatusEvent.RESYNC
    assert isinstance(trade, Trade) and trade.id == "280236"  # the trade itself is real
    [action] = out.actions
    assert isinstance(action, ResyncBook) and action.symbol == "SKL-BTC"
    sends = protocol.resync(action.symbol, action.reason)
    assert [json.loads(s.payload) for s in sends if isinstance(s, Send)] == [
        {"type": "unsubscribe", "product_ids": ["SKL-BTC"], "channels": ["level2_batch"]},
        {"type": "subscribe", "product_ids": ["SKL-BTC"], "channels": ["level2_batch"]},
    ]
    # no book is published until the resubscription's snapshot
    out.clear()
    update = b'{"type":"l2update","product_id":"SKL-BTC","changes":[["buy","0.00001303","1"]]}'
    protocol.on_message(update, 0, out)
    assert out.records == []
    # the answers to the resubscription are not taken for the ledger's requests
    protocol.on_message(b'{"type":"subscriptions","channels":[]}', 0, out)
    protocol.on_message(b'{"type":"subscriptions","channels":[]}', 0, out)
    assert out.acks == [] and out.rejects == []
    protocol.on_message(snapshot, 0, out)
    [book] = out.records
    assert isinstance(book, Book) and book.snapshot


def test_heartbeat_ahead_of_the_last_match_is_a_gap() -> None:
    protocol = make_protocol(["BTC-USD"], ["trades"])
    out = Output()
    protocol.on_message(match("BTC-USD", 100, 5000), 0, out)
    beat = {
        "type": "heartbeat",
        "sequence": 5100,
        "last_trade_id": 100,
        "product_id": "BTC-USD",
        "time": "2021-04-17T16:43:38.000000Z",
    }
    out.clear()
    assert protocol.on_message(json.dumps(beat).encode(), 0, out) is False
    assert out.records == []
    beat.update(sequence=5300, last_trade_id=103)
    protocol.on_message(json.dumps(beat).encode(), 0, out)
    [gap] = out.records
    assert isinstance(gap, Status) and gap.event is StatusEvent.GAP and gap.symbol == "BTC-USD"
    assert out.actions == []  # no book on this feed: nothing to resync
    out.clear()
    protocol.on_message(match("BTC-USD", 104, 5301), 0, out)  # continues after the heartbeat
    assert [type(r) for r in out.records] == [Trade]


def test_stale_and_duplicate_frames_are_dropped(capture: list[dict[str, Any]]) -> None:
    protocol = make_protocol(["SKL-GBP"], ["trades", "ticker"])
    out = Output()
    last_match = next(
        r["raw"] for r in capture if r["kind"] == "trade" and r["symbol"] == "SKL-GBP"
    )
    protocol.on_message(last_match.encode(), 0, out)  # trade 82007: the baseline
    protocol.on_message(match("SKL-GBP", 82007, 27883326), 0, out)  # the same trade again
    assert out.records == [] and protocol.duplicates == 1
    ticker = next(r["raw"] for r in capture if r["kind"] == "ticker" and r["symbol"] == "SKL-GBP")
    protocol.on_message(match("SKL-GBP", 82008, 27883501), 0, out)
    out.clear()
    protocol.on_message(ticker.encode(), 0, out)  # sequence 27883326 < 27883501: stale
    assert out.records == [] and protocol.stale == 1


def test_captured_tickers_normalize(capture: list[dict[str, Any]]) -> None:
    rows = [r for r in capture if r["kind"] == "ticker"]
    protocol = make_protocol(sorted({r["symbol"] for r in rows}), ["ticker", "bbo"])
    out = Output()
    for row in rows:
        assert protocol.on_message(row["raw"].encode(), 0, out) is True
    tickers = [r for r in out.records if isinstance(r, Ticker)]
    assert len(tickers) == len(out.records) == len(rows)  # 2021 frames carry no BBO sizes
    # {"type":"ticker","sequence":333938798,"product_id":"BAND-GBP","price":"14.7775",
    #  "open_24h":"14.6647","volume_24h":"94381.28000000","low_24h":"14.3691",
    #  "high_24h":"16.55",...,"best_bid":"14.7550","best_ask":"14.8060",...}
    band = tickers[0]
    assert (band.symbol, band.last, band.bid, band.ask) == (
        "BAND-GBP",
        Decimal("14.7775"),
        Decimal("14.7550"),
        Decimal("14.8060"),
    )
    assert band.open_24h == Decimal("14.6647") and band.high_24h == Decimal("16.55")
    assert str(band.volume_24h) == "94381.28000000"
    assert band.ts == ns("2021-04-17T16:43:30.244075Z")
    # the current ticker carries the sizes: then a BBO is published as well
    body = json.loads(rows[0]["raw"])
    body.update(sequence=body["sequence"] + 1, best_bid_size="3.2", best_ask_size="0.04")
    out.clear()
    protocol.on_message(json.dumps(body).encode(), 0, out)
    ticker, bbo = out.records
    assert isinstance(ticker, Ticker) and isinstance(bbo, BBO)
    assert (bbo.bid_price, bbo.bid_size, bbo.ask_price, bbo.ask_size) == (
        Decimal("14.7550"),
        Decimal("3.2"),
        Decimal("14.8060"),
        Decimal("0.04"),
    )


def test_resync_before_the_initial_acks_waits_for_them() -> None:
    protocol = make_protocol(["NU-GBP"], ["l2_book"])
    [request] = protocol.subscriptions()
    # a gap while the subscription is unanswered: resubscribing now would break the order
    # in which answers match requests
    assert protocol.resync("NU-GBP", "gap") == []
    out = Output()
    listed = json.dumps(
        {
            "type": "subscriptions",
            "channels": [
                {"name": "level2_batch", "product_ids": ["NU-GBP"]},
                {"name": "heartbeat", "product_ids": ["NU-GBP"]},
            ],
        }
    )
    protocol.on_message(listed.encode(), 0, out)
    assert out.acks == [request.key]
    assert [json.loads(a.payload)["type"] for a in out.actions if isinstance(a, Send)] == [
        "unsubscribe",
        "subscribe",
    ]
    out.clear()
    # a failed resubscription is reported for the product
    protocol.on_message(b'{"type":"error","message":"Failed to subscribe","reason":"busy"}', 0, out)
    [status] = out.records
    assert isinstance(status, Status) and status.symbol == "NU-GBP"
    assert status.event is StatusEvent.ERROR and out.rejects == []


def test_unknown_types_are_ignored_and_malformed_frames_raise() -> None:
    protocol = make_protocol(["NU-GBP"], ["l2_book", "trades"])
    out = Output()
    assert protocol.on_message(b'{"type":"status","products":[],"currencies":[]}', 0, out) is False
    assert protocol.ignored == 1
    with pytest.raises(msgspec.DecodeError):
        protocol.on_message(b"not json", 0, out)
    with pytest.raises(msgspec.ValidationError):  # no type at all
        protocol.on_message(b'{"product_id":"NU-GBP"}', 0, out)
    with pytest.raises(msgspec.ValidationError):  # a known type with a bad shape
        protocol.on_message(
            b'{"type":"l2update","product_id":"NU-GBP","changes":[["up","1","2"]]}', 0, out
        )
    with pytest.raises(msgspec.ValidationError):  # a time without its zone
        protocol.on_message(match("NU-GBP", 1, 1).replace(b'37.089723Z"', b'37.089723"'), 0, out)
    with pytest.raises(DecodeError):  # a product this connection did not subscribe
        protocol.on_message(match("BTC-USD", 1, 1), 0, out)
    with pytest.raises(DecodeError):  # level-2 data for a product without a book stream
        trades_only = make_protocol(["NU-GBP"], ["trades"])
        trades_only.on_message(
            b'{"type":"snapshot","product_id":"NU-GBP","bids":[],"asks":[]}', 0, out
        )
    assert out.records == []


def test_conforms_on_the_captured_exchange_feed(capture: list[dict[str, Any]]) -> None:
    frames = [r["raw"] for r in capture if r["direction"] == "server->client"]
    symbols = sorted({r["symbol"] for r in capture if r.get("symbol")})
    report = assert_conforms(
        CoinbaseFeed,
        frames,
        symbols=symbols,
        channels=["trades", "l2_book", "ticker"],
        options={"level2_channel": "level2"},  # what the capture subscribed to
        plan_symbols=[f"S{i:03d}-USD" for i in range(300)],  # 900 streams: 3 connections
    )
    counts = report.counts
    assert counts["book"] == 77 and counts["trade"] == 6 and counts["ticker"] == 6
    assert not report.resyncs and not report.unsubscribed_streams
