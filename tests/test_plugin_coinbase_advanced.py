"""The Coinbase Advanced Trade plugin, sans-I/O: captured frames in, normalized records out.

Frames come from the package's copy of the Coinbase capture (rows whose ``api`` is Advanced
Trade): a live session copied verbatim by a third party (level2 snapshot of BTC-PERP-INTX,
two ``subscriptions`` acks, a heartbeat, an error), documentation examples, and synthetic
frames in the documented layout (the only ``update``, ``market_trades`` and ``ticker`` frames
that exist). Expected values are computed here independently of the plugin (stdlib json,
Decimal, calendar).
"""

from __future__ import annotations

import asyncio
import calendar
import json
from collections.abc import Callable
from decimal import Decimal
from importlib import resources
from typing import Any, ClassVar

import pytest

from streamkit.actor import ConnectionActor
from streamkit.channel import Bus, Subscription
from streamkit.config import BackoffOptions, FeedConfig
from streamkit.feed import DecodeError, Limits, Output, ResyncBook, Send
from streamkit.model import BBO, Book, Candle, Record, Status, StatusEvent, Ticker, Trade
from streamkit.pacing import ConnectLimiter
from streamkit.testing import assert_conforms
from streamkit.transport.memory import MemoryExchange
from streamkit_coinbase_advanced import CoinbaseAdvancedFeed
from streamkit_coinbase_advanced.feed import CoinbaseAdvancedProtocol

ADVANCED_TRADE = "advanced-trade"
LIVE_SESSION = "unattributed public code (Rust venue test"
PERP = "BTC-USDC-PERP"


def load_capture() -> list[dict[str, Any]]:
    text = (resources.files("streamkit.simulator") / "data" / "coinbase.jsonl").read_text()
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [r for r in rows if r["api"].startswith(ADVANCED_TRADE)]


@pytest.fixture(scope="module")
def capture() -> list[dict[str, Any]]:
    return load_capture()


def frames(capture: list[dict[str, Any]], kind: str, source: str = "") -> list[str]:
    return [r["raw"] for r in capture if r["kind"] == kind and r["source"].startswith(source)]


def live_session(capture: list[dict[str, Any]]) -> list[str]:
    """The live-copied session, in sequence_num order: snapshot (0), acks (1, 2), heartbeat
    (3)."""
    rows = [
        r
        for r in capture
        if r["source"].startswith(LIVE_SESSION) and r["direction"] == "server->client"
    ]
    enveloped = [r["raw"] for r in rows if "sequence_num" in r["raw"]]
    return sorted(enveloped, key=lambda raw: json.loads(raw)["sequence_num"])


def make_protocol(
    symbols: list[str] | None = None,
    channels: list[str] | None = None,
    options: dict[str, Any] | None = None,
    feed_class: type[CoinbaseAdvancedFeed] = CoinbaseAdvancedFeed,
) -> CoinbaseAdvancedProtocol:
    cfg = FeedConfig(
        exchange="coinbase_advanced",
        symbols=symbols or [PERP, "ETH-USDC-PERP"],
        channels=channels or ["l2_book"],
        options=options or {},
    )
    feed = feed_class(cfg, url="ws://sim/")
    [plan] = feed.plan()
    return feed.protocol(plan, "coinbase_advanced/0")


def start(protocol: CoinbaseAdvancedProtocol) -> Output:
    """What the actor does on connect: on_connected, then subscriptions()."""
    out = Output()
    protocol.on_connected(0, out)
    protocol.subscriptions()
    return out


def feed_all(protocol: CoinbaseAdvancedProtocol, raws: list[str], out: Output) -> list[bool]:
    return [protocol.on_message(raw.encode(), 1, out) for raw in raws]


def ns(iso: str) -> int:
    """Independent RFC 3339 (``YYYY-MM-DDTHH:MM:SS.fffffffffZ``) -> ns for the tests."""
    whole, _, frac = iso.rstrip("Z").partition(".")
    date, _, clock = whole.partition("T")
    fields = [int(x) for x in date.split("-") + clock.split(":")]
    seconds = calendar.timegm((*fields, 0, 0, 0))
    return seconds * 1_000_000_000 + int(frac.ljust(9, "0"))


def envelope(channel: str, seq: int, events: list[dict[str, Any]]) -> str:
    return json.dumps(
        {"channel": channel, "timestamp": "2026-09-07T23:37:23.5Z", "sequence_num": seq}
        | {"events": events}
    )


# --- symbols and subscriptions -------------------------------------------------------------


def test_symbol_mapping_round_trips(capture: list[dict[str, Any]]) -> None:
    feed = make_protocol().feed
    pairs = {
        "BTC-USD": "BTC-USD",
        "ETH-EUR": "ETH-EUR",
        "1INCH-USDC": "1INCH-USDC",
        "BTC-USDC-PERP": "BTC-PERP-INTX",
        "ETH-USDC-PERP": "ETH-PERP-INTX",
    }
    for normalized, native in pairs.items():
        assert feed.exchange_symbol(normalized) == native
        assert feed.normalize_symbol(native) == normalized
    [snapshot] = frames(capture, "book_snapshot")
    product = json.loads(snapshot)["events"][0]["product_id"]
    assert feed.normalize_symbol(product) == PERP
    for bad in ["BTC-USDT-PERP", "BTC-USD-PERP", "btc-usd", "BTCUSD", "BTC-USD-240628"]:
        with pytest.raises(ValueError):
            feed.exchange_symbol(bad)
    for bad in ["btc-PERP-INTX", "BIT-28JUN24-CDE", "BTCUSD", "-PERP-INTX"]:
        with pytest.raises(ValueError):
            feed.normalize_symbol(bad)


def test_subscribe_is_one_channel_per_message_in_the_documented_shape(
    capture: list[dict[str, Any]],
) -> None:
    [documented] = frames(capture, "subscribe_request")
    documented_keys = set(json.loads(documented)) - {"jwt"}  # jwt: authenticated channels only
    protocol = make_protocol(["BTC-USD", "ETH-USD"], ["trades", "l2_book", "ticker", "bbo"])
    out = Output()
    protocol.on_connected(0, out)
    [heartbeats] = out.actions
    assert isinstance(heartbeats, Send)
    assert json.loads(heartbeats.payload) == {
        "type": "subscribe",
        "product_ids": ["BTC-USD", "ETH-USD"],
        "channel": "heartbeats",
    }
    requests = protocol.subscriptions()
    bodies = [json.loads(r.payload) for r in requests]
    assert all(set(body) == documented_keys for body in bodies)
    assert [b["channel"] for b in bodies] == ["market_trades", "level2", "ticker"]
    assert all(
        b["type"] == "subscribe" and b["product_ids"] == ["BTC-USD", "ETH-USD"] for b in bodies
    )
    # ticker and bbo share the ticker channel: that request carries both streams of each product
    assert [len(r.streams) for r in requests] == [2, 2, 4]
    assert len({r.key for r in requests}) == 3


def test_subscriptions_are_chunked_within_the_per_message_limit() -> None:
    class Small(CoinbaseAdvancedFeed):
        limits: ClassVar[Limits] = Limits(max_streams_per_connection=50, max_streams_per_message=3)

    symbols = [f"C{i}-USD" for i in range(7)]
    protocol = make_protocol(symbols, ["ticker", "bbo", "trades"], feed_class=Small)
    requests = protocol.subscriptions()
    assert all(1 <= len(r.streams) <= 3 for r in requests)
    ticker_products = [
        p
        for r in requests
        if b'"ticker"' in r.payload
        for p in json.loads(r.payload)["product_ids"]
    ]
    assert ticker_products == symbols  # ticker+bbo of one product are never split
    assert sum(len(r.streams) for r in requests) == 21


def test_captured_acks_confirm_the_subscriptions(capture: list[dict[str, Any]]) -> None:
    protocol = make_protocol()  # BTC-PERP-INTX and ETH-PERP-INTX level2, as captured
    out = start(protocol)
    results = feed_all(protocol, live_session(capture), out)
    assert results == [True, False, False, False]  # snapshot; ack, ack, heartbeat are not data
    assert out.acks == ["1"]  # the level2 request; the heartbeats answer needs no ledger entry
    assert out.rejects == []
    assert not [r for r in out.records if isinstance(r, Status)]
    assert len(protocol.answers) == 0


def test_an_ack_missing_a_product_rejects_the_request() -> None:
    protocol = make_protocol()
    out = start(protocol)
    feed_all(
        protocol,
        [
            envelope("subscriptions", 0, [{"subscriptions": {"heartbeats": ["heartbeats"]}}]),
            envelope("subscriptions", 1, [{"subscriptions": {"level2": ["BTC-PERP-INTX"]}}]),
        ],
        out,
    )
    assert out.acks == []
    assert out.rejects == [("1", "not subscribed: level2:ETH-PERP-INTX")]


def test_captured_error_rejects_the_oldest_request(capture: list[dict[str, Any]]) -> None:
    protocol = make_protocol()
    out = start(protocol)
    heartbeats_ack = envelope("subscriptions", 0, [{"subscriptions": {"heartbeats": ["x"]}}])
    for raw in [heartbeats_ack, *frames(capture, "error")]:
        assert protocol.on_message(raw.encode(), 1, out) is False
    # first error answers the level2 request; the second answers nothing: an error status
    assert out.rejects == [("1", "authentication failure")]
    [status] = out.records
    assert isinstance(status, Status)
    assert status.event is StatusEvent.ERROR and status.detail == "failure to subscribe"


# --- books ---------------------------------------------------------------------------------


def derived_updates(capture: list[dict[str, Any]]) -> list[str]:
    """Updates for the captured BTC-PERP-INTX book, in the layout of the captured update frame
    (the only update frames that exist are synthetic, for BTC-USD): the frame is re-addressed
    to BTC-PERP-INTX with levels around the captured snapshot, continuing its sequence."""
    [template] = frames(capture, "book_delta")
    changes = [
        [("bid", "79943.9", "2.5"), ("offer", "79944", "0")],  # resize; remove best ask
        [("bid", "79944", "0.7"), ("offer", "79944.2", "4")],  # new best bid; new ask level
        [("bid", "79943.8", "0.0"), ("bid", "79900.5", "1.25")],  # remove; deep level
    ]
    updates = []
    for seq, levels in enumerate(changes, start=4):
        body = json.loads(template)
        body["sequence_num"] = seq
        [event] = body["events"]
        event["product_id"] = "BTC-PERP-INTX"
        level_template = event["updates"][0]
        event["updates"] = [
            level_template | {"side": side, "price_level": price, "new_quantity": size}
            for side, price, size in levels
        ]
        updates.append(json.dumps(body))
    return updates


def expected_book(raws: list[str]) -> tuple[list[tuple[Decimal, Decimal]], ...]:
    """Independent replay: absolute quantities per side, 0 deletes, snapshot replaces."""
    sides: dict[str, dict[Decimal, Decimal]] = {"bid": {}, "offer": {}}
    for raw in raws:
        for event in json.loads(raw)["events"]:
            if event["type"] == "snapshot":
                sides = {"bid": {}, "offer": {}}
            for u in event["updates"]:
                price, size = Decimal(u["price_level"]), Decimal(u["new_quantity"])
                if size == 0:
                    sides[u["side"]].pop(price, None)
                else:
                    sides[u["side"]][price] = size
    bids = sorted(sides["bid"].items(), reverse=True)
    asks = sorted(sides["offer"].items())
    return bids, asks


def test_captured_snapshot_and_updates_build_the_right_book(
    capture: list[dict[str, Any]],
) -> None:
    protocol = make_protocol()
    out = start(protocol)
    session = live_session(capture)
    updates = derived_updates(capture)
    feed_all(protocol, session + updates, out)
    books = [r for r in out.records if isinstance(r, Book)]
    assert [b.snapshot for b in books] == [True, False, False, False]
    assert [b.seq for b in books] == [0, 4, 5, 6]
    assert {b.symbol for b in books} == {PERP}
    [snapshot] = frames(capture, "book_snapshot")
    assert books[0].ts == ns(json.loads(snapshot)["timestamp"])
    # the snapshot record as captured, sorted best first on each side
    bids, asks = expected_book([snapshot])
    assert sorted(books[0].bids, reverse=True) == bids
    assert sorted(books[0].asks) == asks
    # the local book after every update equals the independent replay
    local = protocol.books["BTC-PERP-INTX"].book
    bids, asks = expected_book([snapshot, *updates])
    assert list(local.bids.items()) == bids
    assert list(local.asks.items()) == asks
    assert bids[0] == (Decimal("79944"), Decimal("0.7"))
    assert asks[0] == (Decimal("79944.1"), Decimal("1.2"))
    # each delta record carries exactly the frame's levels
    assert books[1].bids == [(Decimal("79943.9"), Decimal("2.5"))]
    assert books[1].asks == [(Decimal("79944"), Decimal("0"))]


def test_updates_before_any_snapshot_are_not_published(capture: list[dict[str, Any]]) -> None:
    protocol = make_protocol(["BTC-USD"], ["l2_book"])
    out = start(protocol)
    [update] = frames(capture, "book_delta")  # BTC-USD, sequence_num 1
    body = json.loads(update) | {"sequence_num": 0}
    assert protocol.on_message(json.dumps(body).encode(), 1, out) is True
    assert not [r for r in out.records if isinstance(r, Book)]
    assert protocol.books["BTC-USD"].dropped_while_waiting == 1


# --- sequence_num gaps ------------------------------------------------------------------------


def test_sequence_gap_is_reported_and_the_book_resynced(capture: list[dict[str, Any]]) -> None:
    protocol = make_protocol()
    out = start(protocol)
    feed_all(protocol, live_session(capture), out)  # sequence_num 0..3, book live
    out.clear()
    first, second, third = derived_updates(capture)  # sequence_num 4, 5, 6
    assert protocol.on_message(second.encode(), 7, out) is True  # 4 was lost
    assert not [r for r in out.records if isinstance(r, Book)]  # never an unverified state
    statuses = [(r.symbol, r.event) for r in out.records if isinstance(r, Status)]
    assert statuses == [
        (None, StatusEvent.GAP),  # connection-wide: trades/tickers may be missing too
        (PERP, StatusEvent.GAP),
        (PERP, StatusEvent.RESYNC),
        ("ETH-USDC-PERP", StatusEvent.GAP),
        ("ETH-USDC-PERP", StatusEvent.RESYNC),
    ]
    assert "sequence_num 5 after 3" in out.records[0].detail  # type: ignore[attr-defined]
    assert [a.symbol for a in out.actions if isinstance(a, ResyncBook)] == [
        PERP,
        "ETH-USDC-PERP",
    ]
    assert protocol.gaps == 1
    # the actor asks the protocol how to resync: one unsubscribe + subscribe for both books
    sends = protocol.resync(PERP, "gap")
    assert protocol.resync("ETH-USDC-PERP", "gap") == []  # already in that pair
    assert [json.loads(s.payload) for s in sends if isinstance(s, Send)] == [
        {"type": kind, "product_ids": ["BTC-PERP-INTX", "ETH-PERP-INTX"], "channel": "level2"}
        for kind in ("unsubscribe", "subscribe")
    ]
    # stale frames (already counted) are dropped; later updates wait for the new snapshot
    out.clear()
    assert protocol.on_message(first.encode(), 8, out) is False
    assert protocol.stale == 1
    assert protocol.on_message(third.encode(), 9, out) is True
    assert out.records == []
    # Coinbase answers the resubscription with a fresh snapshot: the book is live again
    [snapshot] = frames(capture, "book_snapshot")
    fresh = json.loads(snapshot) | {"sequence_num": 7}
    protocol.on_message(json.dumps(fresh).encode(), 10, out)
    [book] = out.records
    assert isinstance(book, Book) and book.snapshot and book.seq == 7
    assert protocol.books["BTC-PERP-INTX"].live


def test_resync_waits_for_the_initial_answers(capture: list[dict[str, Any]]) -> None:
    protocol = make_protocol()
    out = start(protocol)
    [snapshot] = frames(capture, "book_snapshot")
    protocol.on_message(snapshot.encode(), 1, out)
    gap = json.loads(snapshot) | {"sequence_num": 3}  # 1 and 2 (the acks) lost
    protocol.on_message(json.dumps(gap).encode(), 2, out)
    assert protocol.resync(PERP, "gap") == []  # the level2 subscribe is still unanswered
    out.clear()
    ack = envelope(
        "subscriptions",
        4,
        [{"subscriptions": {"heartbeats": ["h"], "level2": ["BTC-PERP-INTX", "ETH-PERP-INTX"]}}],
    )
    protocol.on_message(ack.encode(), 3, out)
    assert out.acks == ["1"]
    assert [json.loads(a.payload)["type"] for a in out.actions if isinstance(a, Send)] == [
        "unsubscribe",
        "subscribe",
    ]


def test_frames_of_unknown_channels_are_ignored_but_counted_in_the_sequence() -> None:
    protocol = make_protocol()
    out = start(protocol)
    other = envelope("futures_balance_summary", 0, [{"anything": 1}])
    assert protocol.on_message(other.encode(), 1, out) is False
    assert protocol.ignored == 1 and protocol.last_seq == 0
    assert out.records == []


# --- trades, tickers, candles -----------------------------------------------------------------


def test_captured_market_trades_normalize(capture: list[dict[str, Any]]) -> None:
    protocol = make_protocol(["BTC-USD"], ["trades"])
    out = start(protocol)
    [raw] = frames(capture, "trade", "nautechsystems")
    body = json.loads(raw) | {"sequence_num": 0}
    assert protocol.on_message(json.dumps(body).encode(), 42, out) is True
    expected = [
        Trade(
            exchange="coinbase_advanced",
            symbol="BTC-USD",
            ts=ns(t["time"]),
            recv_ts=42,
            price=Decimal(t["price"]),
            size=Decimal(t["size"]),
            side=t["side"].lower(),  # Advanced Trade's side is the taker's (see the plugin)
            id=t["trade_id"],
        )
        for t in body["events"][0]["trades"]
    ]
    assert out.records == expected
    assert [(t.side, t.id) for t in expected] == [("buy", "995098700"), ("sell", "995098701")]
    assert expected[0].ts == 1_775_572_202_789_012_000
    # a replay of the same trades is filtered; the maker option inverts the side
    out.clear()
    protocol.on_message(json.dumps(body | {"sequence_num": 1}).encode(), 43, out)
    assert out.records == [] and protocol.duplicate_trades == 2
    maker = make_protocol(["BTC-USD"], ["trades"], {"trade_side": "maker"})
    out = start(maker)
    maker.on_message(json.dumps(body).encode(), 42, out)
    assert [r.side for r in out.records if isinstance(r, Trade)] == ["sell", "buy"]


def test_trade_snapshots_seed_but_do_not_publish_and_batches_come_out_in_id_order() -> None:
    protocol = make_protocol(["BTC-USD"], ["trades"])
    out = start(protocol)

    def trade(trade_id: int, side: str = "BUY") -> dict[str, str]:
        return {
            "trade_id": str(trade_id),
            "product_id": "BTC-USD",
            "price": "1.5",
            "size": "2",
            "side": side,
            "time": "2024-10-08T09:10:52.378779Z",
        }

    snapshot = envelope("market_trades", 0, [{"type": "snapshot", "trades": [trade(10), trade(9)]}])
    protocol.on_message(snapshot.encode(), 1, out)
    assert out.records == [] and protocol.snapshot_trades == 2
    batch = [trade(13), trade(12, "UNKNOWN_ORDER_SIDE"), trade(11, "SELL"), trade(10)]
    protocol.on_message(
        envelope("market_trades", 1, [{"type": "update", "trades": batch}]).encode(), 2, out
    )
    assert [(r.id, r.side) for r in out.records if isinstance(r, Trade)] == [
        ("11", "sell"),
        ("13", "buy"),
    ]
    assert protocol.unknown_sides == 1 and protocol.duplicate_trades == 1


def test_captured_ticker_gives_ticker_and_bbo(capture: list[dict[str, Any]]) -> None:
    protocol = make_protocol(["BTC-USD"], ["ticker", "bbo"])
    out = start(protocol)
    [raw] = frames(capture, "ticker", "nautechsystems")
    body = json.loads(raw)
    t = body["events"][0]["tickers"][0]
    protocol.on_message(json.dumps(body | {"sequence_num": 0}).encode(), 5, out)
    ts = ns(body["timestamp"])
    assert out.records == [
        Ticker(
            exchange="coinbase_advanced",
            symbol="BTC-USD",
            ts=ts,
            recv_ts=5,
            last=Decimal(t["price"]),
            bid=Decimal(t["best_bid"]),
            ask=Decimal(t["best_ask"]),
            high_24h=Decimal(t["high_24_h"]),
            low_24h=Decimal(t["low_24_h"]),
            volume_24h=Decimal(t["volume_24_h"]),
        ),
        BBO(
            exchange="coinbase_advanced",
            symbol="BTC-USD",
            ts=ts,
            recv_ts=5,
            bid_price=Decimal(t["best_bid"]),
            bid_size=Decimal(t["best_bid_quantity"]),
            ask_price=Decimal(t["best_ask"]),
            ask_size=Decimal(t["best_ask_quantity"]),
        ),
    ]


def test_usd_frames_serve_a_usdc_subscription(capture: list[dict[str, Any]]) -> None:
    protocol = make_protocol(["BTC-USDC"], ["ticker"])
    out = start(protocol)
    [raw] = frames(capture, "ticker", "nautechsystems")  # product BTC-USD
    protocol.on_message(json.dumps(json.loads(raw) | {"sequence_num": 0}).encode(), 5, out)
    assert [r.symbol for r in out.records] == ["BTC-USDC"]
    ack = envelope("subscriptions", 1, [{"subscriptions": {"ticker": ["BTC-USD"]}}])
    out.clear()
    protocol.on_message(ack.encode(), 6, out)
    assert out.acks == ["1"]


def test_candles_in_the_documented_layout() -> None:
    # No candles frame was captured: this one follows the documented layout.
    protocol = make_protocol(["ETH-USD"], ["candles"])
    out = start(protocol)
    candle = {
        "start": "1688998200",
        "high": "1867.72",
        "low": "1865.63",
        "open": "1867.38",
        "close": "1866.81",
        "volume": "0.20269406",
        "product_id": "ETH-USD",
    }
    raw = envelope("candles", 0, [{"type": "snapshot", "candles": [candle]}])
    assert protocol.on_message(raw.encode(), 3, out) is True
    [record] = out.records
    assert isinstance(record, Candle)
    assert record.start == 1_688_998_200 * 10**9 and record.end == record.start + 300 * 10**9
    assert (record.open, record.close, record.interval) == (
        Decimal("1867.38"),
        Decimal("1866.81"),
        "5m",
    )
    assert record.closed is False


def test_product_status_reports_a_product_going_offline() -> None:
    protocol = make_protocol(["BTC-USD"], ["trades"], {"product_status": True})
    out = Output()
    protocol.on_connected(0, out)
    assert [json.loads(a.payload)["channel"] for a in out.actions if isinstance(a, Send)] == [
        "heartbeats",
        "status",
    ]

    def status(seq: int, state: str) -> bytes:
        product = {"id": "BTC-USD", "status": state, "status_message": "maintenance"}
        other = {"id": "DOGE-USD", "status": "offline"}
        return envelope("status", seq, [{"type": "update", "products": [product, other]}]).encode()

    assert protocol.on_message(status(0, "online"), 1, out) is False
    assert protocol.on_message(status(1, "offline"), 2, out) is False
    assert protocol.on_message(status(2, "offline"), 3, out) is False  # no change, no record
    [record] = out.records
    assert isinstance(record, Status) and record.symbol == "BTC-USD"
    assert record.event is StatusEvent.ERROR and "offline: maintenance" in record.detail


# --- heartbeats and malformed frames ----------------------------------------------------------


def test_heartbeats_are_not_data(capture: list[dict[str, Any]]) -> None:
    for raw in frames(capture, "heartbeat"):  # live (integer counter) and docs (string counter)
        protocol = make_protocol()
        out = start(protocol)
        body = json.loads(raw) | {"sequence_num": 0}
        assert protocol.on_message(json.dumps(body).encode(), 1, out) is False
        assert out.records == [] and out.acks == []


@pytest.mark.parametrize(
    "frame",
    [
        b"garbage",
        b"{}",
        b"[]",
        b'{"type":"subscribe"}',
        b'{"channel":"l2_data","timestamp":"2026-09-07T01:57:58Z","sequence_num":0}',
        b'{"channel":"l2_data","timestamp":"2026-09-07T01:57:58Z","sequence_num":0,"events":'
        b'[{"type":"update","product_id":"BTC-PERP-INTX","updates":[{"side":"ask",'
        b'"price_level":"1","new_quantity":"1"}]}]}',
        b'{"channel":"l2_data","timestamp":"yesterday","sequence_num":0,"events":[]}',
        b'{"channel":"l2_data","timestamp":"2026-09-07T01:57:58Z","sequence_num":0,"events":'
        b'[{"type":"snapshot","product_id":"SOL-USD","updates":[]}]}',
        b'{"channel":"heartbeats","timestamp":"2026-09-07T01:57:58Z","sequence_num":"0",'
        b'"events":[]}',
    ],
)
def test_malformed_frames_raise(frame: bytes) -> None:
    protocol = make_protocol()
    out = start(protocol)
    with pytest.raises(ValueError):
        protocol.on_message(frame, 1, out)
    assert out.records == []


def test_data_for_a_product_not_subscribed_is_a_decode_error(
    capture: list[dict[str, Any]],
) -> None:
    protocol = make_protocol(["ETH-USD"], ["trades"])
    out = start(protocol)
    [raw] = frames(capture, "trade", "nautechsystems")
    with pytest.raises(DecodeError, match="BTC-USD"):
        protocol.on_message(json.dumps(json.loads(raw) | {"sequence_num": 0}).encode(), 1, out)


def test_config_check_reports_bad_options() -> None:
    feed = make_protocol().feed
    assert feed.check() == []
    cfg = FeedConfig(
        exchange="coinbase_advanced",
        symbols=["BTC-USD"],
        channels=["trades"],
        options={"trade_side": "aggressor", "product_status": "yes", "jwt": "x"},
    )
    problems = dict(CoinbaseAdvancedFeed(cfg).check())
    assert set(problems) == {"options.jwt", "options.trade_side", "options.product_status"}


# --- the conformance kit on the captured frames ----------------------------------------------


def test_live_session_conforms(capture: list[dict[str, Any]]) -> None:
    report = assert_conforms(
        CoinbaseAdvancedFeed,
        live_session(capture),
        symbols=[PERP, "ETH-USDC-PERP"],
        channels=["l2_book"],
        plan_symbols=[f"C{i}-USD" for i in range(450)],
    )
    assert report.acks == ["1"]
    assert [type(r) for r in report.records] == [Book]


def test_every_captured_frame_conforms(capture: list[dict[str, Any]]) -> None:
    server = [r["raw"] for r in capture if r["direction"] == "server->client"]
    report = assert_conforms(
        CoinbaseAdvancedFeed,
        server,
        symbols=["BTC-USD", PERP, "ETH-USDC-PERP"],
        channels=["trades", "l2_book", "ticker", "bbo"],
    )
    kinds = {type(r) for r in report.records}
    assert {Book, Trade, Ticker, BBO, Status} <= kinds
    # frames from different sessions: their sequence_num jumps are reported as gaps
    assert any(isinstance(r, Status) and r.event is StatusEvent.GAP for r in report.records)


# --- through the connection actor ----------------------------------------------------------


async def test_actor_subscribes_settles_acks_and_resubscribes_after_a_gap(
    capture: list[dict[str, Any]],
) -> None:
    """The real runtime: heartbeats go out first, the captured acks settle the ledger
    (``subscribed``), and a sequence_num gap resyncs the book by resubscribing its level2
    channel on the same connection."""
    exchange = MemoryExchange()
    bus = Bus()
    sub = bus.subscribe(maxsize=10_000)
    cfg = FeedConfig(
        exchange="coinbase_advanced",
        symbols=[PERP, "ETH-USDC-PERP"],
        channels=["l2_book"],
        connect_timeout=5.0,
        reconnect=BackoffOptions(initial=0.01, max=0.05),
    )
    feed = CoinbaseAdvancedFeed(cfg, url="ws://memory/")
    [plan] = feed.plan()

    async def no_http(url: str) -> tuple[int, bytes]:
        return 0, b""

    actor = ConnectionActor(
        feed,
        plan,
        bus,
        transport_factory=exchange.transport_factory,
        http_fetch=no_http,
        connect_limiter=ConnectLimiter(100, 1.0),
    )
    task = asyncio.create_task(actor.run())
    try:
        peer = await exchange.next_connection()
        assert json.loads(await peer.received())["channel"] == "heartbeats"
        assert json.loads(await peer.received())["channel"] == "level2"
        for raw in live_session(capture):
            await peer.send_text(raw)
        subscribed: list[Record] = []
        books: list[Record] = []

        def settled(r: Record) -> bool:
            if isinstance(r, Status) and r.event is StatusEvent.SUBSCRIBED:
                subscribed.append(r)
            if isinstance(r, Book):
                books.append(r)
            return bool(subscribed and books)

        await _until(sub, settled)
        assert [b.symbol for b in books] == [PERP]
        _, second, _ = derived_updates(capture)
        await peer.send_text(second)  # sequence_num 5: 4 was lost
        seen = await _until(sub, lambda r: isinstance(r, Status) and r.event is StatusEvent.RESYNC)
        assert not [r for r in seen if isinstance(r, Book)]
        unsubscribe = json.loads(await peer.received())
        resubscribe = json.loads(await peer.received())
        assert (unsubscribe["type"], resubscribe["type"]) == ("unsubscribe", "subscribe")
        assert resubscribe["channel"] == "level2"
        [snapshot] = frames(capture, "book_snapshot")
        await peer.send_text(json.dumps(json.loads(snapshot) | {"sequence_num": 6}))
        [*_, book] = await _until(sub, lambda r: isinstance(r, Book))
        assert isinstance(book, Book) and book.snapshot and book.seq == 6
        assert len(exchange.connections) == 1  # resynced without reconnecting
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def _until(sub: Subscription, done: Callable[[Record], bool]) -> list[Record]:
    seen: list[Record] = []
    async with asyncio.timeout(5.0):
        while True:
            seen.append(await sub.get())
            if done(seen[-1]):
                return seen
