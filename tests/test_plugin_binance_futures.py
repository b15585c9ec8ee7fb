"""The Binance USD-M futures plugin, sans-I/O: real captured frames in, normalized records out."""

from __future__ import annotations

import json
from decimal import Decimal
from importlib import resources
from typing import Any

import pytest

from streamkit.config import FeedConfig
from streamkit.feed import HttpGet, Output, ResyncBook
from streamkit.model import (
    BBO,
    Book,
    Funding,
    Liquidation,
    OpenInterest,
    Status,
    StatusEvent,
    Trade,
)
from streamkit_binance_futures import BinanceFuturesFeed
from streamkit_binance_futures.depth_sync import Phase
from streamkit_binance_futures.feed import BinanceFuturesProtocol

DEPTH_GROUP = "binance-usdm-depth-SUSHIUSDT"
SNAPSHOT_URL = "http://sim/fapi/v1/depth?symbol=SUSHIUSDT&limit=1000"


@pytest.fixture(scope="module")
def capture() -> list[dict[str, Any]]:
    text = (resources.files("streamkit.simulator") / "data" / "binance_usdm.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def make_protocol(
    symbols: list[str] | None = None,
    channels: list[str] | None = None,
    options: dict[str, Any] | None = None,
) -> BinanceFuturesProtocol:
    cfg = FeedConfig(
        exchange="binance_futures",
        symbols=symbols or ["SUSHI-USDT-PERP", "CTK-USDT-PERP", "AKRO-USDT-PERP", "KEEP-USDT-PERP"],
        channels=channels or ["trades", "bbo", "l2_book"],
        options=options or {},
    )
    feed = BinanceFuturesFeed(cfg, url="ws://sim/stream", rest_url="http://sim")
    [plan] = feed.plan()
    return feed.protocol(plan, "binance_futures/0")


def depth_group(capture: list[dict[str, Any]]) -> tuple[bytes, list[bytes]]:
    rows = [r for r in capture if r.get("group") == DEPTH_GROUP]
    snap = next(r for r in rows if r["kind"] == "rest_book_snapshot")
    diffs = [r["raw"].encode() for r in rows if r["kind"] == "book_delta"]
    return snap["raw"].encode(), diffs


def expected_book(snapshot: bytes, diffs: list[bytes]) -> dict[str, dict[Decimal, Decimal]]:
    """The book Binance's documented USD-M rules give, computed here independently of the
    plugin (and asserting the chain itself, so a broken capture cannot pass silently)."""
    snap = json.loads(snapshot)
    book = {side: {Decimal(p): Decimal(q) for p, q in snap[side]} for side in ("bids", "asks")}
    last_id = snap["lastUpdateId"]
    prev_u: int | None = None
    for raw in diffs:
        d = json.loads(raw)["data"]
        if prev_u is None:
            if d["u"] < last_id:
                continue
            assert d["U"] <= last_id <= d["u"]
        else:
            assert d["pu"] == prev_u
        for side, key in (("bids", "b"), ("asks", "a")):
            for p, q in d[key]:
                if Decimal(q) == 0:
                    book[side].pop(Decimal(p), None)
                else:
                    book[side][Decimal(p)] = Decimal(q)
        prev_u = d["u"]
    return book


def sync(protocol: BinanceFuturesProtocol, snapshot: bytes, diffs: list[bytes]) -> Output:
    """Feed the first diff, answer the snapshot request, then feed the rest."""
    out = Output()
    protocol.on_message(diffs[0], 1, out)
    [request] = [a for a in out.actions if isinstance(a, HttpGet)]
    assert request.url == SNAPSHOT_URL
    protocol.on_http(request, 200, snapshot, 2, out)
    for i, diff in enumerate(diffs[1:], start=3):
        protocol.on_message(diff, i, out)
    return out


def test_symbols_round_trip() -> None:
    feed = make_protocol().feed
    cases = {
        "BTC-USDT-PERP": "BTCUSDT",
        "ETH-USDC-PERP": "ETHUSDC",
        "1000SHIB-USDT-PERP": "1000SHIBUSDT",
        "BTC-USDT-231229": "BTCUSDT_231229",
        "ETH-USDT-240329": "ETHUSDT_240329",
    }
    for normalized, native in cases.items():
        assert feed.exchange_symbol(normalized) == native
        assert feed.normalize_symbol(native) == normalized
    for bad in ["BTC-USDT", "BTC-USDT-SWAP", "BTC-USDT-2312", "btc-usdt-perp", "BTC-USDT-PERP-X"]:
        with pytest.raises(ValueError):
            feed.exchange_symbol(bad)
    with pytest.raises(ValueError):
        feed.normalize_symbol("BTCUSDT_DEC23")
    assert feed.stream_name("l2_book", "BTC-USDT-231229") == "btcusdt_231229@depth@100ms"


def test_captured_depth_group_syncs_to_the_independent_book(capture: list[dict[str, Any]]) -> None:
    snapshot, diffs = depth_group(capture)
    assert len(diffs) == 255
    protocol = make_protocol(["SUSHI-USDT-PERP"], ["l2_book"])
    out = sync(protocol, snapshot, diffs)

    book_sync = protocol.books["SUSHI-USDT-PERP"]
    assert (book_sync.dropped_stale, book_sync.applied, book_sync.gaps) == (3, 252, 0)
    assert book_sync.phase is Phase.LIVE
    assert not [r for r in out.records if isinstance(r, Status)]
    books = [r for r in out.records if isinstance(r, Book)]
    assert len(books) == 1 + 252
    assert books[0].snapshot and books[0].seq == json.loads(snapshot)["lastUpdateId"]
    # the first published delta is the one straddling the snapshot id: U == lastUpdateId here
    first = json.loads(diffs[3])["data"]
    assert books[1].seq == first["u"] and first["U"] == books[0].seq
    assert [b.seq for b in books[1:]] == [json.loads(d)["data"]["u"] for d in diffs[3:]]
    assert books[-1].ts == json.loads(diffs[-1])["data"]["T"] * 1_000_000

    expected = expected_book(snapshot, diffs)
    assert book_sync.book.bids == expected["bids"]
    assert book_sync.book.asks == expected["asks"]
    assert not book_sync.book.is_crossed()


def test_snapshot_arriving_late_gives_the_same_book(capture: list[dict[str, Any]]) -> None:
    # The live capture fetched the snapshot ~0.2 s after the stream began: answer it only after
    # ten diffs were buffered; the outcome must be the same.
    snapshot, diffs = depth_group(capture)
    protocol = make_protocol(["SUSHI-USDT-PERP"], ["l2_book"])
    out = Output()
    for i, diff in enumerate(diffs[:10]):
        protocol.on_message(diff, i, out)
    [request] = [a for a in out.actions if isinstance(a, HttpGet)]
    protocol.on_http(request, 200, snapshot, 10, out)
    for i, diff in enumerate(diffs[10:], start=11):
        protocol.on_message(diff, i, out)
    book_sync = protocol.books["SUSHI-USDT-PERP"]
    assert (book_sync.dropped_stale, book_sync.applied, book_sync.gaps) == (3, 252, 0)
    expected = expected_book(snapshot, diffs)
    assert (book_sync.book.bids, book_sync.book.asks) == (expected["bids"], expected["asks"])


def with_pu(frame: bytes, pu: int) -> bytes:
    msg = json.loads(frame)
    msg["data"]["pu"] = pu
    return json.dumps(msg).encode()


def test_broken_pu_is_a_gap_then_resync(capture: list[dict[str, Any]]) -> None:
    snapshot, diffs = depth_group(capture)
    protocol = make_protocol(["SUSHI-USDT-PERP"], ["l2_book"])
    out = sync(protocol, snapshot, diffs[:50])
    book_sync = protocol.books["SUSHI-USDT-PERP"]
    before = (dict(book_sync.book.bids), dict(book_sync.book.asks))
    out.clear()

    broken = with_pu(diffs[50], json.loads(diffs[50])["data"]["pu"] - 1)
    protocol.on_message(broken, 100, out)
    assert not [r for r in out.records if isinstance(r, Book)], "broken state must not publish"
    events = [r.event for r in out.records if isinstance(r, Status)]
    assert events == [StatusEvent.GAP, StatusEvent.RESYNC]
    assert book_sync.gaps == 1 and book_sync.phase is Phase.SYNCING
    assert (book_sync.book.bids, book_sync.book.asks) == before  # not applied
    resyncs = [a for a in out.actions if isinstance(a, ResyncBook)]
    assert [r.symbol for r in resyncs] == ["SUSHI-USDT-PERP"]
    assert protocol.resync("SUSHI-USDT-PERP", "gap") == []  # the snapshot is already asked for
    assert [a.url for a in out.actions if isinstance(a, HttpGet)] == [SNAPSHOT_URL]

    # Later diffs are buffered (never published) until a new snapshot arrives.
    out.clear()
    for i, diff in enumerate(diffs[51:60]):
        protocol.on_message(diff, 200 + i, out)
    assert not [r for r in out.records if isinstance(r, Book)]

    # A fresh snapshot taken at diff 55 re-syncs: everything older is stale, 56.. apply.
    u55 = json.loads(diffs[55])["data"]["u"]
    book_at_55 = expected_book(snapshot, diffs[:56])
    fresh = json.dumps(
        {
            "lastUpdateId": u55,
            "bids": [[str(p), str(q)] for p, q in book_at_55["bids"].items()],
            "asks": [[str(p), str(q)] for p, q in book_at_55["asks"].items()],
        }
    ).encode()
    protocol.on_http(HttpGet(SNAPSHOT_URL, tag="SUSHI-USDT-PERP"), 200, fresh, 300, out)
    books = [r for r in out.records if isinstance(r, Book)]
    assert books[0].snapshot and books[0].seq == u55
    # diff 55 (u == lastUpdateId) straddles the snapshot and is already covered by it
    assert [b.seq for b in books[1:]] == [json.loads(d)["data"]["u"] for d in diffs[56:60]]
    assert book_sync.phase is Phase.LIVE
    for i, diff in enumerate(diffs[60:]):
        protocol.on_message(diff, 400 + i, out)
    expected = expected_book(snapshot, diffs)
    assert (book_sync.book.bids, book_sync.book.asks) == (expected["bids"], expected["asks"])
    assert book_sync.gaps == 1


def test_snapshot_newer_than_the_stream_is_a_gap(capture: list[dict[str, Any]]) -> None:
    # If the first event kept after the snapshot starts past lastUpdateId, events are missing.
    snapshot, diffs = depth_group(capture)
    protocol = make_protocol(["SUSHI-USDT-PERP"], ["l2_book"])
    out = Output()
    protocol.on_message(diffs[0], 1, out)
    [request] = [a for a in out.actions if isinstance(a, HttpGet)]
    protocol.on_http(request, 200, snapshot, 2, out)
    out.clear()
    protocol.on_message(diffs[5], 3, out)  # skips diffs[3], which straddles the snapshot
    assert [r.event for r in out.records if isinstance(r, Status)] == [
        StatusEvent.GAP,
        StatusEvent.RESYNC,
    ]
    assert not [r for r in out.records if isinstance(r, Book)]


def test_captured_trades_and_bbo_normalize(capture: list[dict[str, Any]]) -> None:
    protocol = make_protocol()
    out = Output()
    frames = [r["raw"].encode() for r in capture if r["kind"] in ("trade", "bbo")]
    for i, frame in enumerate(frames):
        assert protocol.on_message(frame, i, out) is True
    trades = [r for r in out.records if isinstance(r, Trade)]
    bbos = [r for r in out.records if isinstance(r, BBO)]
    assert len(trades) == 8 and len(bbos) == 6
    # {"e":"aggTrade","E":1626992741575,"a":16599292,"s":"CTKUSDT","p":"1.01100","q":"10",
    #  "f":23961322,"l":23961322,"T":1626992741421,"m":false}
    ctk = next(t for t in trades if t.id == "16599292")
    assert (ctk.symbol, ctk.price, ctk.size, ctk.side) == (
        "CTK-USDT-PERP",
        Decimal("1.01100"),
        Decimal("10"),
        "buy",  # m=false: the buyer was the taker
    )
    assert str(ctk.price) == "1.01100" and ctk.ts == 1626992741421 * 1_000_000
    raw_sides = {
        str(json.loads(f)["data"]["a"]): json.loads(f)["data"]["m"]
        for f in frames
        if b"aggTrade" in f
    }
    for trade in trades:
        assert trade.side == ("sell" if raw_sides[trade.id] else "buy")
    assert {t.side for t in trades} == {"buy", "sell"}  # the capture has both
    # {"e":"bookTicker","u":600859600576,"s":"SUSHIUSDT","b":"7.6110","B":"2","a":"7.6120",
    #  "A":"297","T":1626992741012,"E":1626992741017}
    sushi = bbos[0]
    assert (sushi.symbol, sushi.bid_price, sushi.bid_size, sushi.ask_price, sushi.ask_size) == (
        "SUSHI-USDT-PERP",
        Decimal("7.6110"),
        Decimal("2"),
        Decimal("7.6120"),
        Decimal("297"),
    )
    assert sushi.ts == 1626992741012 * 1_000_000


def test_mark_price_becomes_funding() -> None:
    protocol = make_protocol(["BTC-USDT-PERP"], ["funding"])
    # Binance's documented markPriceUpdate example
    frame = (
        b'{"stream":"btcusdt@markPrice@1s","data":{"e":"markPriceUpdate","E":1562305380000,'
        b'"s":"BTCUSDT","p":"11794.15000000","i":"11784.62659091","P":"11784.25641265",'
        b'"r":"0.00038167","T":1562306400000}}'
    )
    out = Output()
    assert protocol.on_message(frame, 7, out) is True
    [funding] = out.records
    assert isinstance(funding, Funding)
    assert funding.rate == Decimal("0.00038167")
    assert funding.mark_price == Decimal("11794.15000000")
    assert funding.index_price == Decimal("11784.62659091")
    assert funding.next_funding_ts == 1562306400000 * 1_000_000
    assert funding.ts == 1562305380000 * 1_000_000


def test_force_order_becomes_liquidation() -> None:
    protocol = make_protocol(["BTC-USDT-PERP"], ["liquidations"])
    frame = (
        b'{"stream":"btcusdt@forceOrder","data":{"e":"forceOrder","E":1568014460893,"o":{'
        b'"s":"BTCUSDT","S":"SELL","o":"LIMIT","f":"IOC","q":"0.014","p":"9910","ap":"9910",'
        b'"X":"FILLED","l":"0.014","z":"0.014","T":1568014460893}}}'
    )
    out = Output()
    protocol.on_message(frame, 7, out)
    [liq] = out.records
    assert isinstance(liq, Liquidation)
    assert (liq.side, liq.price, liq.size, liq.symbol) == (
        "sell",
        Decimal("9910"),
        Decimal("0.014"),
        "BTC-USDT-PERP",
    )


def test_open_interest_is_polled_over_rest() -> None:
    protocol = make_protocol(
        ["BTC-USDT-PERP"], ["funding", "open_interest"], {"open_interest_interval": 2.5}
    )
    # Only the WebSocket stream is subscribed; open interest is a REST poll.
    [request] = protocol.subscriptions()
    assert json.loads(request.payload)["params"] == ["btcusdt@markPrice@1s"]
    out = Output()
    protocol.on_connected(1, out)
    [poll] = out.actions
    assert isinstance(poll, HttpGet) and poll.delay == 0
    assert poll.url == "http://sim/fapi/v1/openInterest?symbol=BTCUSDT"
    out.clear()
    body = b'{"openInterest":"10659.509","symbol":"BTCUSDT","time":1589437530011}'
    protocol.on_http(poll, 200, body, 2, out)
    [oi] = out.records
    assert isinstance(oi, OpenInterest) and oi.open_interest == Decimal("10659.509")
    assert oi.ts == 1589437530011 * 1_000_000
    [again] = out.actions
    assert isinstance(again, HttpGet) and (again.url, again.delay) == (poll.url, 2.5)
    # A failed poll is reported and retried at the same pace.
    out.clear()
    protocol.on_http(again, 500, b"oops", 3, out)
    [status] = out.records
    assert isinstance(status, Status) and status.event is StatusEvent.ERROR
    assert [a.delay for a in out.actions if isinstance(a, HttpGet)] == [2.5]


def test_config_checks() -> None:
    def problems(symbols: list[str], channels: list[str], **options: Any) -> list[str]:
        cfg = FeedConfig(
            exchange="binance_futures", symbols=symbols, channels=channels, options=options
        )
        return [key for key, _ in BinanceFuturesFeed(cfg).check()]

    assert problems(["BTC-USDT-PERP"], ["trades", "open_interest", "funding"]) == []
    assert problems(["BTC-USDT-PERP"], ["open_interest"]) == ["channels"]
    assert problems(["BTC-USDT-231229"], ["funding"]) == ["symbols[0]"]
    assert problems(["BTC-USDT"], ["trades"]) == ["symbols[0]"]
    assert problems(["BTC-USDT-PERP"], ["trades"], open_interest_interval=0) == [
        "options.open_interest_interval"
    ]


def test_plan_and_limits() -> None:
    symbols = [f"S{i:03d}-USDT-PERP" for i in range(300)]
    cfg = FeedConfig(exchange="binance_futures", symbols=symbols, channels=["trades", "bbo"])
    feed = BinanceFuturesFeed(cfg)
    assert feed.url == "wss://fstream.binance.com/stream"
    assert feed.rest_url == "https://fapi.binance.com"
    assert feed.limits.max_messages_per_second == 10
    assert feed.limits.max_connection_age == 24 * 3600
    [plan] = feed.plan()  # 600 streams fit one connection of 1,024
    requests = feed.protocol(plan, "f/0").subscriptions()
    assert [len(r.streams) for r in requests] == [200, 200, 200]


def _outcomes(protocol: BinanceFuturesProtocol, frames: list[bytes]) -> list[Any]:
    """(returned flag, records, actions, acks, rejects) or the exception, per frame."""
    results: list[Any] = []
    for frame in frames:
        out = Output()
        try:
            saw = protocol.on_message(frame, 123, out)
        except Exception as exc:
            results.append((type(exc), str(exc)))
            continue
        results.append((saw, list(out.records), list(out.actions), out.acks, out.rejects))
    return results


DOC_FRAMES = [
    # Binance's documented USD-M payloads for the channels the capture lacks
    b'{"stream":"sushiusdt@markPrice@1s","data":{"e":"markPriceUpdate","E":1562305380000,'
    b'"s":"SUSHIUSDT","p":"11.79","i":"11.78","P":"11.80","r":"0.00038167",'
    b'"T":1562306400000}}',
    b'{"stream":"sushiusdt@forceOrder","data":{"e":"forceOrder","E":1568014460893,'
    b'"o":{"s":"SUSHIUSDT","S":"SELL","o":"LIMIT","f":"IOC","q":"0.014","p":"9910",'
    b'"ap":"9910","X":"FILLED","l":"0.014","z":"0.014","T":1568014460893}}}',
    b'{"stream":"sushiusdt@ticker","data":{"e":"24hrTicker","E":123456789,"s":"SUSHIUSDT",'
    b'"p":"0.0015","P":"250.00","w":"0.0018","c":"0.0025","Q":"10","o":"0.0010",'
    b'"h":"0.0025","l":"0.0010","v":"10000","q":"18","O":0,"C":86400000,"F":0,"L":18150,'
    b'"n":18151}}',
]


@pytest.mark.parametrize(
    ("channels", "kinds"),
    [
        (["trades", "bbo", "l2_book"], {"Trade", "BBO"}),  # depth: waits for a snapshot
        (["trades", "candles"], {"Trade", "Candle"}),
        (
            ["funding", "liquidations", "ticker", "open_interest"],
            {"Funding", "Liquidation", "Ticker"},
        ),
    ],
)
def test_one_pass_decoding_equals_the_generic_path(
    capture: list[dict[str, Any]], channels: list[str], kinds: set[str]
) -> None:
    frames = [r["raw"].encode() for r in capture if r["kind"] != "rest_book_snapshot"]
    frames += DOC_FRAMES
    frames += [
        b'{"stream":"sushiusdt@aggTrade","data":{"e":"bookTicker","E":1}}',  # wrong payload
        b'{"stream":"sushiusdt@aggTrade","data":{"e":"aggTrade"}}',  # missing fields
        b'{"stream":"elsewhere@aggTrade","data":{"e":"aggTrade"}}',  # not subscribed
        b'{"result":null,"id":1}',
        b"{not json",
    ]
    fast = make_protocol(channels=channels)
    # every channel's payload carries "e" on USD-M (bookTicker too), and a REST-only channel
    # (open interest) does not keep a connection off the one-pass path
    assert fast._typed is not None
    slow = make_protocol(channels=channels)
    slow._typed = None
    fast_results, slow_results = _outcomes(fast, frames), _outcomes(slow, frames)
    assert fast_results == slow_results
    produced = {type(rec).__name__ for r in fast_results if isinstance(r[0], bool) for rec in r[1]}
    assert produced == kinds
