"""The Binance plugin, sans-I/O: real captured frames in, normalized records out."""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec
import pytest

from streamkit.config import FeedConfig
from streamkit.feed import DecodeError, HttpGet, Output, Reconnect, ResyncBook
from streamkit.model import BBO, Book, Status, StatusEvent, Trade
from streamkit_binance import BinanceFeed, schemas
from streamkit_binance.depth_sync import Phase, delta_record
from streamkit_binance.feed import BinanceProtocol


def make_protocol(
    symbols: list[str] | None = None, channels: list[str] | None = None
) -> BinanceProtocol:
    cfg = FeedConfig(
        exchange="binance",
        symbols=symbols or ["NKN-USDT", "LRC-BTC"],
        channels=channels or ["trades", "bbo", "l2_book"],
    )
    feed = BinanceFeed(cfg, url="ws://sim/stream", rest_url="http://sim")
    [plan] = feed.plan()
    return feed.protocol(plan, "binance/0")


def depth_group(capture: list[dict[str, Any]]) -> tuple[bytes, list[bytes]]:
    rows = [r for r in capture if r.get("group") == "binance-spot-depth-NKNUSDT"]
    snap = next(r for r in rows if r["kind"] == "rest_book_snapshot")
    diffs = [r["raw"].encode() for r in rows if r["kind"] == "book_delta"]
    return snap["raw"].encode(), diffs


def expected_book(snapshot: bytes, diffs: list[bytes]) -> dict[str, dict[Decimal, Decimal]]:
    """The book Binance's documented rules give, computed here independently of the plugin."""
    snap = json.loads(snapshot)
    book = {side: {Decimal(p): Decimal(q) for p, q in snap[side]} for side in ("bids", "asks")}
    last = snap["lastUpdateId"]
    for raw in diffs:
        d = json.loads(raw)["data"]
        if d["u"] <= last:
            continue
        for side, key in (("bids", "b"), ("asks", "a")):
            for p, q in d[key]:
                if Decimal(q) == 0:
                    book[side].pop(Decimal(p), None)
                else:
                    book[side][Decimal(p)] = Decimal(q)
        last = d["u"]
    return book


def feed_frames(protocol: BinanceProtocol, frames: list[bytes], out: Output) -> None:
    for i, frame in enumerate(frames):
        protocol.on_message(frame, i, out)


def test_symbol_mapping_is_reversible() -> None:
    feed = make_protocol().feed
    for symbol in ["BTC-USDT", "NKN-USDT", "LRC-BTC", "ETH-FDUSD", "DOGE-TRY"]:
        assert feed.normalize_symbol(feed.exchange_symbol(symbol)) == symbol
    assert feed.exchange_symbol("BTC-USDT") == "BTCUSDT"
    with pytest.raises(ValueError):
        feed.exchange_symbol("BTC-USDT-PERP")
    with pytest.raises(ValueError):
        feed.exchange_symbol("btcusdt")


def test_plan_shards_by_stream_limit_keeping_symbols_whole() -> None:
    symbols = [f"S{i:03d}-USDT" for i in range(400)]
    cfg = FeedConfig(exchange="binance", symbols=symbols, channels=["trades", "bbo", "l2_book"])
    plans = BinanceFeed(cfg).plan()
    assert len(plans) == 2  # 1,200 streams, 1,024 per connection
    assert all(len(p.streams) <= 1024 for p in plans)
    assert sum(len(p.streams) for p in plans) == 1200
    for plan in plans:
        per_symbol: dict[str, int] = {}
        for s in plan.streams:
            per_symbol[s.symbol] = per_symbol.get(s.symbol, 0) + 1
        assert set(per_symbol.values()) == {3}


def test_subscribe_messages_respect_per_message_limit() -> None:
    symbols = [f"S{i:03d}-USDT" for i in range(150)]
    protocol = make_protocol(symbols, ["trades", "bbo"])
    requests = protocol.subscriptions()
    assert [len(r.streams) for r in requests] == [200, 100]
    first = json.loads(requests[0].payload)
    assert first["method"] == "SUBSCRIBE"
    assert first["params"][:2] == ["s000usdt@aggTrade", "s000usdt@bookTicker"]
    assert str(first["id"]) == requests[0].key


def test_captured_trade_normalizes(binance_capture: list[dict[str, Any]]) -> None:
    protocol = make_protocol()
    out = Output()
    frames = [
        r["raw"].encode() for r in binance_capture if r["kind"] == "trade" and r.get("symbol")
    ]
    feed_frames(protocol, frames, out)
    trades = [r for r in out.records if isinstance(r, Trade)]
    nkn = next(t for t in trades if t.symbol == "NKN-USDT")
    # {"e":"aggTrade","E":1633998523963,"s":"NKNUSDT","a":15683430,"p":"0.35280000",
    #  "q":"58.00000000","T":1633998523963,"m":false}
    assert nkn.price == Decimal("0.35280000") and str(nkn.price) == "0.35280000"
    assert nkn.size == Decimal("58")
    assert nkn.side == "buy"  # m=false: the buyer was the taker
    assert nkn.id == "15683430"
    assert nkn.ts == 1633998523963 * 1_000_000
    assert nkn.exchange == "binance"


def test_maker_flag_maps_to_taker_side() -> None:
    protocol = make_protocol(["BNB-BTC"], ["trades"])
    frame = (
        b'{"stream":"bnbbtc@aggTrade","data":{"e":"aggTrade","E":1,"s":"BNBBTC","a":7,'
        b'"p":"0.001","q":"100","f":1,"l":1,"T":2,"m":true,"M":true}}'
    )
    out = Output()
    assert protocol.on_message(frame, 5, out) is True
    [trade] = out.records
    assert isinstance(trade, Trade) and trade.side == "sell"


def test_captured_book_ticker_normalizes(binance_capture: list[dict[str, Any]]) -> None:
    protocol = make_protocol()
    out = Output()
    frames = [r["raw"].encode() for r in binance_capture if r["kind"] == "bbo" and r.get("symbol")]
    feed_frames(protocol, frames, out)
    bbos = [r for r in out.records if isinstance(r, BBO)]
    assert len(bbos) == len(frames)
    first = bbos[0]
    # {"u":499869768,"s":"NKNUSDT","b":"0.35210000","B":"672.00000000","a":"0.35260000",...}
    assert (first.symbol, first.bid_price, first.bid_size, first.ask_price) == (
        "NKN-USDT",
        Decimal("0.35210000"),
        Decimal("672.00000000"),
        Decimal("0.35260000"),
    )
    assert first.ts is None  # spot bookTicker carries no event time


def sync_to_end(protocol: BinanceProtocol, snapshot: bytes, diffs: list[bytes]) -> Output:
    out = Output()
    collected = Output()
    for i, frame in enumerate(diffs):
        protocol.on_message(frame, i, out)
        for action in out.actions:
            assert isinstance(action, HttpGet)
            protocol.on_http(action, 200, snapshot, i, out)
        out.actions.clear()
        collected.records.extend(out.records)
        out.clear()
    return collected


def test_depth_sync_on_captured_sequence(binance_capture: list[dict[str, Any]]) -> None:
    snapshot, diffs = depth_group(binance_capture)
    protocol = make_protocol(["NKN-USDT"], ["l2_book"])
    collected = sync_to_end(protocol, snapshot, diffs)
    books = [r for r in collected.records if isinstance(r, Book)]
    assert not [r for r in collected.records if isinstance(r, Status)]
    assert books[0].snapshot and books[0].seq == 499869752
    # the first captured diff (U=499869750, u=499869752) is covered by the snapshot
    assert len(books) == 1 + len(diffs) - 1
    assert all(not b.snapshot for b in books[1:])
    sync = protocol.books["NKN-USDT"]
    assert sync.phase is Phase.LIVE and sync.gaps == 0 and sync.dropped_stale == 1
    want = expected_book(snapshot, diffs)
    assert sync.book.bids == want["bids"] and sync.book.asks == want["asks"]
    assert not sync.book.is_crossed()
    # replaying the published records reproduces the same book: consumers can rebuild it
    rebuilt: dict[str, dict[Decimal, Decimal]] = {"bids": {}, "asks": {}}
    for b in books:
        if b.snapshot:
            rebuilt = {"bids": dict(b.bids), "asks": dict(b.asks)}
            continue
        for side, levels in (("bids", b.bids), ("asks", b.asks)):
            for p, q in levels:
                if q == 0:
                    rebuilt[side].pop(p, None)
                else:
                    rebuilt[side][p] = q
    assert rebuilt == want


def test_gap_is_reported_resynced_and_never_published(
    binance_capture: list[dict[str, Any]],
) -> None:
    snapshot, diffs = depth_group(binance_capture)
    protocol = make_protocol(["NKN-USDT"], ["l2_book"])
    sync_to_end(protocol, snapshot, diffs[:50])
    out = Output()
    # skip diff 50: diff 51 no longer continues the chain
    protocol.on_message(diffs[51], 0, out)
    events = [r.event for r in out.records if isinstance(r, Status)]
    assert events == [StatusEvent.GAP, StatusEvent.RESYNC]
    assert not [r for r in out.records if isinstance(r, Book)]
    resync, request = out.actions
    assert isinstance(resync, ResyncBook) and resync.symbol == "NKN-USDT"
    assert protocol.resync(resync.symbol, resync.reason) == []  # the snapshot below suffices
    assert isinstance(request, HttpGet)
    assert request.url == "http://sim/api/v3/depth?symbol=NKNUSDT&limit=1000"
    # while the snapshot is in flight, diffs are buffered, not published
    out.clear()
    for frame in diffs[52:60]:
        protocol.on_message(frame, 0, out)
    assert not out.records and not out.actions
    # the venue answers with a snapshot taken at diff 55: rebuild from it
    state = expected_book(snapshot, diffs[:56])
    u55 = json.loads(diffs[55])["data"]["u"]
    body = json.dumps(
        {
            "lastUpdateId": u55,
            "bids": [[str(p), str(q)] for p, q in state["bids"].items()],
            "asks": [[str(p), str(q)] for p, q in state["asks"].items()],
        }
    ).encode()
    protocol.on_http(request, 200, body, 0, out)
    books = [r for r in out.records if isinstance(r, Book)]
    assert books[0].snapshot and books[0].seq == u55
    assert [b.seq for b in books[1:]] == [json.loads(d)["data"]["u"] for d in diffs[56:60]]
    out.clear()
    for frame in diffs[60:]:
        protocol.on_message(frame, 0, out)
    sync = protocol.books["NKN-USDT"]
    want = expected_book(snapshot, diffs)
    assert sync.book.bids == want["bids"] and sync.book.asks == want["asks"]
    assert sync.gaps == 1


def test_stale_snapshot_is_refetched(binance_capture: list[dict[str, Any]]) -> None:
    snapshot, diffs = depth_group(binance_capture)
    protocol = make_protocol(["NKN-USDT"], ["l2_book"])
    out = Output()
    protocol.on_message(diffs[10], 0, out)  # stream starts later than the snapshot
    [request] = out.actions
    out.clear()
    protocol.on_http(request, 200, snapshot, 0, out)  # lastUpdateId < first buffered U
    assert not [r for r in out.records if isinstance(r, Book)]
    assert [type(a) for a in out.actions] == [HttpGet]


def test_failed_snapshot_reports_and_retries(binance_capture: list[dict[str, Any]]) -> None:
    _, diffs = depth_group(binance_capture)
    protocol = make_protocol(["NKN-USDT"], ["l2_book"])
    out = Output()
    protocol.on_message(diffs[1], 0, out)
    [request] = out.actions
    out.clear()
    protocol.on_http(request, 503, b"busy", 0, out)
    [status] = out.records
    assert isinstance(status, Status) and status.event is StatusEvent.ERROR
    assert "503" in status.detail
    assert [type(a) for a in out.actions] == [HttpGet]


def test_acks_rejects_and_control_messages() -> None:
    protocol = make_protocol()
    out = Output()
    assert protocol.on_message(b'{"result":null,"id":1}', 0, out) is False
    assert out.acks == ["1"]
    protocol.on_message(b'{"code":2,"msg":"Invalid request: too many parameters","id":2}', 0, out)
    assert out.rejects == [("2", "code 2: Invalid request: too many parameters")]
    # the live venue wraps errors: {"error": {...}, "id": n}
    protocol.on_message(b'{"error":{"code":4,"msg":"Too many subscriptions"},"id":3}', 0, out)
    assert out.rejects[-1] == ("3", "code 4: Too many subscriptions")
    assert out.acks == ["1"]
    protocol.on_message(b'{"error":{"code":2,"msg":"Invalid request"},"id":null}', 0, out)
    assert isinstance(out.records[-1], Status) and out.records[-1].event is StatusEvent.ERROR
    protocol.on_message(b'{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1}}', 0, out)
    assert isinstance(out.actions[-1], Reconnect)
    protocol.on_message(b'{"e":"serverShutdown","E":1770123456789}', 0, out)
    assert isinstance(out.actions[-1], Reconnect)


def test_malformed_frames_raise_for_the_actor_to_count() -> None:
    protocol = make_protocol()
    out = Output()
    with pytest.raises(msgspec.DecodeError):
        protocol.on_message(b"not json", 0, out)
    with pytest.raises(msgspec.ValidationError):
        protocol.on_message(b'{"stream":"nknusdt@aggTrade","data":{"p":"1"}}', 0, out)
    with pytest.raises(DecodeError):
        protocol.on_message(b'{"stream":"btcusdt@aggTrade","data":{}}', 0, out)
    with pytest.raises(DecodeError):
        protocol.on_message(b'{"hello":1}', 0, out)
    assert not out.records


def test_delta_record_is_what_the_engine_publishes(binance_capture: list[dict[str, Any]]) -> None:
    # bench/clients.py measures decode + normalize with delta_record(): it must stay equal to
    # the record the book engine publishes for the same diff.
    snapshot, diffs = depth_group(binance_capture)
    protocol = make_protocol(["NKN-USDT"], ["l2_book"])
    published = [r for r in sync_to_end(protocol, snapshot, diffs).records if isinstance(r, Book)]
    deltas = {b.seq: b for b in published if not b.snapshot}
    standalone = make_protocol(["NKN-USDT"], ["l2_book"])
    sync = standalone.books["NKN-USDT"]
    compared = 0
    for i, frame in enumerate(diffs):
        event = schemas.depth_update_decoder.decode(msgspec.json.encode(json.loads(frame)["data"]))
        record = delta_record("binance", "NKN-USDT", sync.diff(event), i)
        if record.seq in deltas:
            want = deltas[record.seq]
            assert msgspec.structs.replace(record, recv_ts=want.recv_ts) == want
            compared += 1
    assert compared == len(deltas) > 100


def test_a_diff_with_a_malformed_price_is_a_decode_error_and_the_book_goes_on(
    binance_capture: list[dict[str, Any]],
) -> None:
    snapshot, diffs = depth_group(binance_capture)
    protocol = make_protocol(["NKN-USDT"], ["l2_book"])
    sync_to_end(protocol, snapshot, diffs[:50])
    bad = diffs[50].replace(b'"b":[["', b'"b":[["x', 1)
    assert bad != diffs[50]
    with pytest.raises(InvalidOperation):
        protocol.on_message(bad, 0, Output())  # the actor counts and reports it
    out = Output()
    protocol.on_message(diffs[50], 0, out)  # the same diff, well formed, still applies
    assert [b.seq for b in out.records if isinstance(b, Book)] == [
        json.loads(diffs[50])["data"]["u"]
    ]
