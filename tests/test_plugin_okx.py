"""The OKX plugin, sans-I/O: real captured frames in, verified books and records out.

The capture (``streamkit/simulator/data/okx.jsonl``) is a live OKX v5 session from May 2022:
three ``books`` checksum sequences, trades, tickers, and the per-arg subscribe acks. Expected
books are computed here from the raw JSON, independently of the plugin and of BookSync.
"""

from __future__ import annotations

import asyncio
import json
import random
import zlib
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from importlib import resources
from typing import Any

import msgspec
import pytest

from streamkit.actor import ConnectionActor
from streamkit.book import OrderBook
from streamkit.channel import Bus, Subscription
from streamkit.config import BackoffOptions, FeedConfig
from streamkit.feed import (
    DecodeError,
    Heartbeat,
    Limits,
    Output,
    Reconnect,
    ResyncBook,
    Send,
)
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
from streamkit_okx import OkxFeed
from streamkit_okx.checksum import CachedChecksum, okx_checksum
from streamkit_okx.feed import OkxProtocol

GROUPS = ["okx-books-BTC-USD-220527", "okx-books-UNI-USD-SWAP", "okx-books-BTC-USDT"]
CAPTURED = ["BTC-USD-220527", "UNI-USD-PERP", "BTC-USDT"]


@pytest.fixture(scope="module")
def capture() -> list[dict[str, Any]]:
    text = (resources.files("streamkit.simulator") / "data" / "okx.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def make_protocol(
    symbols: list[str] | None = None,
    channels: list[str] | None = None,
    feed_class: type[OkxFeed] = OkxFeed,
) -> OkxProtocol:
    cfg = FeedConfig(exchange="okx", symbols=symbols or CAPTURED, channels=channels or ["l2_book"])
    feed = feed_class(cfg, url="ws://sim/ws/v5/public")
    [plan] = feed.plan()
    protocol = feed.protocol(plan, "okx/0")
    protocol.subscriptions()
    return protocol


def group_frames(capture: list[dict[str, Any]], group: str) -> list[bytes]:
    return [r["raw"].encode() for r in capture if r.get("group") == group]


def expected_book(frames: list[bytes]) -> tuple[dict[Decimal, str], dict[Decimal, str]]:
    """The book after ``frames``, by OKX's documented rules, keeping the original size strings
    (and the price strings as keys' companions) so string-level equality can be checked."""
    bids: dict[Decimal, tuple[str, str]] = {}
    asks: dict[Decimal, tuple[str, str]] = {}
    for raw in frames:
        msg = json.loads(raw)
        for d in msg["data"]:
            if msg["action"] == "snapshot":
                bids, asks = {}, {}
            for side, book in (("bids", bids), ("asks", asks)):
                for px, sz, *_ in d[side]:
                    if Decimal(sz) == 0:
                        book.pop(Decimal(px), None)
                    else:
                        book[Decimal(px)] = (px, sz)
    return (
        {p: f"{px}:{sz}" for p, (px, sz) in bids.items()},
        {p: f"{px}:{sz}" for p, (px, sz) in asks.items()},
    )


def as_strings(side: dict[Decimal, Decimal]) -> dict[Decimal, str]:
    return {p: f"{p:f}:{s:f}" for p, s in side.items()}


def feed_all(protocol: OkxProtocol, frames: list[bytes], out: Output) -> None:
    for i, frame in enumerate(frames):
        protocol.on_message(frame, i, out)


def of_type(records: list[Any], cls: type[Any]) -> list[Any]:
    return [r for r in records if isinstance(r, cls)]


def status_events(out: Output) -> list[StatusEvent]:
    return [r.event for r in out.records if isinstance(r, Status)]


# --- symbols and plan ----------------------------------------------------------------------


def test_symbol_mapping_is_reversible() -> None:
    feed = make_protocol().feed
    pairs = {
        "BTC-USDT": "BTC-USDT",
        "BTC-USDT-PERP": "BTC-USDT-SWAP",
        "UNI-USD-PERP": "UNI-USD-SWAP",
        "BTC-USD-220527": "BTC-USD-220527",
        "BTC-USD-220527-30000-C": "BTC-USD-220527-30000-C",
        "1INCH-USDT": "1INCH-USDT",
    }
    for normalized, inst_id in pairs.items():
        assert feed.exchange_symbol(normalized) == inst_id
        assert feed.normalize_symbol(inst_id) == normalized
    for bad in ["BTCUSDT", "btc-usdt", "BTC-USDT-SWAP", "BTC-USD-2205", "BTC-USD-220527-X-C"]:
        with pytest.raises(ValueError):
            feed.exchange_symbol(bad)
    with pytest.raises(ValueError):
        feed.normalize_symbol("BTC-USDT-PERP")


def test_declared_limits_and_heartbeat() -> None:
    assert OkxFeed.heartbeat == Heartbeat(interval=20.0, payload=b"ping")
    limits = OkxFeed.limits
    assert (limits.max_connects, limits.connect_window) == (3, 1.0)  # 3 connects/s per IP
    assert limits.max_messages_per_second * 3600 == pytest.approx(480)  # 480 requests/hour


def test_check_rejects_channels_the_instrument_type_lacks() -> None:
    cfg = FeedConfig(
        exchange="okx", symbols=["BTC-USDT", "BTC-USDT-PERP"], channels=["funding", "trades"]
    )
    problems = OkxFeed(cfg).check()
    assert problems == [("symbols[0]", problems[0][1])]
    assert "funding" in problems[0][1] and "SPOT" in problems[0][1]


# --- subscribing and acks ------------------------------------------------------------------


def test_subscribe_message_format_and_liquidation_args_are_shared() -> None:
    protocol = make_protocol(
        ["BTC-USDT-PERP", "ETH-USDT-PERP"], ["trades", "l2_book", "liquidations"]
    )
    [request] = protocol.subscriptions()
    body = json.loads(request.payload)
    assert body["op"] == "subscribe" and body["id"] == request.key
    assert body["args"] == [
        {"channel": "trades", "instId": "BTC-USDT-SWAP"},
        {"channel": "books", "instId": "BTC-USDT-SWAP"},
        {"channel": "liquidation-orders", "instType": "SWAP"},
        {"channel": "trades", "instId": "ETH-USDT-SWAP"},
        {"channel": "books", "instId": "ETH-USDT-SWAP"},
    ]
    assert len(request.streams) == 6  # both symbols' liquidations ride one arg


def test_subscriptions_respect_count_and_64kb_limits() -> None:
    class Roomy(OkxFeed):
        limits = Limits(max_streams_per_connection=100_000, max_streams_per_message=100_000)

    symbols = [f"T{i:04d}-USDT" for i in range(3000)]
    protocol = make_protocol(symbols, ["trades"], Roomy)
    requests = protocol.subscriptions()
    assert len(requests) > 1
    assert all(len(r.payload) <= 64 * 1024 for r in requests)
    assert all(len(r.payload) > 63 * 1024 for r in requests[:-1])  # packed, not split early
    assert sum(len(json.loads(r.payload)["args"]) for r in requests) == 3000

    symbols = [f"T{i:04d}-USDT" for i in range(450)]
    plans = OkxFeed(FeedConfig(exchange="okx", symbols=symbols, channels=["trades"])).plan()
    assert [len(p.streams) for p in plans] == [150, 150, 150]
    for plan in plans:
        proto = OkxFeed(FeedConfig(exchange="okx", symbols=symbols, channels=["trades"]))
        assert len(proto.protocol(plan, "okx/x").subscriptions()) == 1


def test_captured_per_arg_acks_settle_the_request_once(capture: list[dict[str, Any]]) -> None:
    protocol = make_protocol(CAPTURED, ["ticker", "trades", "l2_book"])
    acks = [r["raw"].encode() for r in capture if r["kind"] == "subscribe_ack"]
    assert len(acks) == 18  # OKX acked every arg of cryptofeed's three growing requests
    out = Output()
    settled_at = []
    for i, frame in enumerate(acks):
        assert protocol.on_message(frame, i, out) is False
        if out.acks:
            settled_at.append((i, list(out.acks)))
            out.clear()
    # The request settles exactly when its 9th distinct arg is acked; repeats settle nothing.
    distinct = [len(set(acks[: i + 1])) for i in range(len(acks))]
    complete = distinct.index(9)
    assert complete == 17  # cryptofeed asked for books last
    assert settled_at == [(complete, ["1"])]
    assert out.records == []


def test_acks_map_to_each_of_several_requests() -> None:
    class Small(OkxFeed):
        limits = Limits(max_streams_per_connection=100, max_streams_per_message=2)

    protocol = make_protocol(["BTC-USDT", "ETH-USDT"], ["trades", "ticker"], Small)
    assert [r.key for r in protocol.subscriptions()] == ["1", "2"]
    out = Output()
    for channel, inst in [("trades", "ETH-USDT"), ("trades", "BTC-USDT")]:
        frame = json.dumps({"event": "subscribe", "arg": {"channel": channel, "instId": inst}})
        protocol.on_message(frame.encode(), 0, out)
    assert out.acks == []  # request 1 = BTC trades + tickers, request 2 = ETH trades + tickers
    protocol.on_message(
        b'{"event":"subscribe","arg":{"channel":"tickers","instId":"ETH-USDT"}}', 0, out
    )
    assert out.acks == ["2"]
    protocol.on_message(
        b'{"event":"subscribe","arg":{"channel":"tickers","instId":"BTC-USDT"}}', 0, out
    )
    assert out.acks == ["2", "1"]


def test_captured_error_rejects_the_request_naming_that_arg(
    capture: list[dict[str, Any]],
) -> None:
    [nmr_error, _] = [r["raw"].encode() for r in capture if r["kind"] == "subscribe_error"]
    protocol = make_protocol(["NMR-USDT"], ["ticker"])
    out = Output()
    assert protocol.on_message(nmr_error, 0, out) is False
    [(key, reason)] = out.rejects
    assert key == "1" and reason.startswith("code 60018: Wrong URL or channel:tickers")
    # Settled: a repeat is no longer attributable to a request and becomes a status record.
    out.clear()
    protocol.on_message(nmr_error, 1, out)
    assert out.rejects == [] and status_events(out) == [StatusEvent.ERROR]


def test_error_with_echoed_id_or_without_detail() -> None:
    class Small(OkxFeed):
        limits = Limits(max_streams_per_connection=100, max_streams_per_message=1)

    protocol = make_protocol(["BTC-USDT", "ETH-USDT"], ["trades"], Small)
    out = Output()
    protocol.on_message(
        b'{"id":"2","event":"error","code":"60012","msg":"Invalid request"}', 0, out
    )
    assert out.rejects == [("2", "code 60012: Invalid request")]
    protocol.on_message(b'{"event":"error","code":"60012","msg":"Invalid request"}', 0, out)
    assert out.rejects[-1] == ("1", "code 60012: Invalid request")  # the oldest still waiting


def test_text_pong_is_a_heartbeat_not_data(capture: list[dict[str, Any]]) -> None:
    [ping] = [r["raw"] for r in capture if r["kind"] == "ping"]
    [pong] = [r["raw"].encode() for r in capture if r["kind"] == "pong"]
    assert ping.encode() == OkxFeed.heartbeat.payload
    protocol = make_protocol()
    out = Output()
    assert protocol.on_message(pong, 0, out) is False
    assert out.pong is True and out.records == [] and out.acks == []


def test_service_upgrade_notice_reconnects() -> None:
    out = Output()
    frame = (
        b'{"event":"notice","code":"64008",'
        b'"msg":"The connection will soon be closed for a service upgrade.","connId":"a"}'
    )
    assert make_protocol().on_message(frame, 0, out) is False
    assert isinstance(out.actions[0], Reconnect)
    assert status_events(out) == [StatusEvent.ERROR]


# --- books ---------------------------------------------------------------------------------


@pytest.mark.parametrize("group", GROUPS)
def test_every_captured_checksum_verifies_and_final_book_matches(
    capture: list[dict[str, Any]], group: str
) -> None:
    frames = group_frames(capture, group)
    protocol = make_protocol()
    out = Output()
    feed_all(protocol, frames, out)
    books = of_type(out.records, Book)
    assert status_events(out) == []
    assert len(books) == len(frames) > 90  # every update verified and published
    assert books[0].snapshot and not any(b.snapshot for b in books[1:])
    assert out.actions == []

    inst_id = json.loads(frames[0])["arg"]["instId"]
    sync = protocol.books[inst_id]
    assert sync.live and sync.checksum_failures == 0 and sync.gaps == 0
    bids, asks = expected_book(frames)
    assert as_strings(sync.book.bids) == bids
    assert as_strings(sync.book.asks) == asks
    # The independent model reproduces the venue's last checksum too.
    top_bids = [bids[p] for p in sorted(bids, reverse=True)[:25]]
    top_asks = [asks[p] for p in sorted(asks)[:25]]
    parts = [x for i in range(25) for x in (top_bids[i : i + 1] + top_asks[i : i + 1])]
    crc = zlib.crc32(":".join(parts).encode())
    signed = crc - (1 << 32) if crc >= 1 << 31 else crc
    assert signed == json.loads(frames[-1])["data"][0]["checksum"]


def _corrupt_top_level(frames: list[bytes], index: int) -> bytes:
    """Frame ``index`` with one size inside the resulting top 25 changed."""
    bids, asks = expected_book(frames[: index + 1])
    top = set(sorted(bids, reverse=True)[:25]) | set(sorted(asks)[:25])
    msg = json.loads(frames[index])
    for side in ("bids", "asks"):
        for level in msg["data"][0][side]:
            if Decimal(level[0]) in top and Decimal(level[1]) != 0:
                level[1] = str(Decimal(level[1]) + 1)
                return json.dumps(msg).encode()
    raise AssertionError("no top-25 level in this frame")


def test_corrupted_size_is_detected_never_published_and_resynced(
    capture: list[dict[str, Any]],
) -> None:
    frames = group_frames(capture, "okx-books-BTC-USDT")
    bad_index = 10
    protocol = make_protocol()
    out = Output()
    feed_all(protocol, frames[:bad_index], out)
    published = len(of_type(out.records, Book))
    assert published == bad_index
    out.clear()

    protocol.on_message(_corrupt_top_level(frames, bad_index), 0, out)
    assert of_type(out.records, Book) == []  # the failed state is never published
    assert status_events(out) == [StatusEvent.CHECKSUM_MISMATCH, StatusEvent.RESYNC]
    assert out.actions == [ResyncBook("BTC-USDT", out.actions[0].reason)]  # type: ignore[union-attr]
    assert protocol.books["BTC-USDT"].checksum_failures == 1

    # The actor asks the protocol how to resync: resubscribe only that instId's books.
    sends = protocol.resync("BTC-USDT", "checksum_mismatch")
    assert all(isinstance(s, Send) for s in sends)
    assert [json.loads(s.payload) for s in sends if isinstance(s, Send)] == [
        {"op": "unsubscribe", "args": [{"channel": "books", "instId": "BTC-USDT"}]},
        {"op": "subscribe", "args": [{"channel": "books", "instId": "BTC-USDT"}]},
    ]
    # Updates still in flight are dropped until the resubscription's snapshot arrives.
    out.clear()
    feed_all(protocol, frames[bad_index + 1 : bad_index + 5], out)
    assert out.records == []
    protocol.on_message(
        b'{"event":"unsubscribe","arg":{"channel":"books","instId":"BTC-USDT"}}', 0, out
    )
    protocol.on_message(
        b'{"event":"subscribe","arg":{"channel":"books","instId":"BTC-USDT"}}', 0, out
    )
    assert out.acks == [] and out.rejects == []
    protocol.on_message(frames[0], 0, out)
    [book] = of_type(out.records, Book)
    assert book.snapshot and protocol.books["BTC-USDT"].live


def test_corrupted_snapshot_is_not_published(capture: list[dict[str, Any]]) -> None:
    frames = group_frames(capture, "okx-books-UNI-USD-SWAP")
    protocol = make_protocol()
    out = Output()
    protocol.on_message(_corrupt_top_level(frames, 0), 0, out)
    assert of_type(out.records, Book) == []
    assert status_events(out) == [StatusEvent.CHECKSUM_MISMATCH, StatusEvent.RESYNC]
    assert isinstance(out.actions[0], ResyncBook) and out.actions[0].symbol == "UNI-USD-PERP"


def _with_seq_ids(frames: list[bytes]) -> list[bytes]:
    """The captured frames as newer servers send them: with a seqId/prevSeqId chain."""
    chained = []
    for i, raw in enumerate(frames):
        msg = json.loads(raw)
        msg["data"][0]["seqId"] = 1000 + i
        msg["data"][0]["prevSeqId"] = -1 if i == 0 else 999 + i
        chained.append(json.dumps(msg).encode())
    return chained


def test_seq_id_chain_applies_and_detects_a_skipped_update(
    capture: list[dict[str, Any]],
) -> None:
    frames = _with_seq_ids(group_frames(capture, "okx-books-BTC-USD-220527"))
    protocol = make_protocol()
    out = Output()
    feed_all(protocol, frames[:20], out)
    assert status_events(out) == [] and len(of_type(out.records, Book)) == 20
    assert of_type(out.records, Book)[-1].seq == 1019

    # An unchanged book is re-sent with seqId == prevSeqId and no levels: not a gap.
    out.clear()
    idle = (
        b'{"arg":{"channel":"books","instId":"BTC-USD-220527"},"action":"update","data":'
        b'[{"asks":[],"bids":[],"ts":"1","checksum":0,"seqId":1019,"prevSeqId":1019}]}'
    )
    assert protocol.on_message(idle, 0, out) is True
    assert out.records == []

    protocol.on_message(frames[21], 0, out)  # frames[20] skipped
    assert status_events(out) == [StatusEvent.GAP, StatusEvent.RESYNC]
    assert of_type(out.records, Book) == []


def test_malformed_price_fails_the_whole_frame_and_leaves_the_book(
    capture: list[dict[str, Any]],
) -> None:
    """Prices decode as strings and are interned in on_message: a price that is not a number
    raises there (the actor counts it as a decode error) before any entry of the frame
    reaches the book, and the stream goes on."""
    frames = group_frames(capture, "okx-books-BTC-USDT")
    protocol = make_protocol()
    out = Output()
    feed_all(protocol, frames[:5], out)
    sync = protocol.books["BTC-USDT"]
    before = as_strings(sync.book.bids), as_strings(sync.book.asks)
    msg = json.loads(frames[5])
    bad = json.loads(json.dumps(msg["data"][0]))
    bad["bids"] = [["30000.x", "1", "0", "1"]]
    msg["data"].append(bad)  # a valid entry first: it must not be applied either
    out.clear()
    with pytest.raises(InvalidOperation):
        protocol.on_message(json.dumps(msg).encode(), 0, out)
    assert out.records == [] and out.actions == []
    assert (as_strings(sync.book.bids), as_strings(sync.book.asks)) == before
    feed_all(protocol, frames[5:], out)
    assert status_events(out) == [] and len(of_type(out.records, Book)) == len(frames) - 5


def test_checksum_uses_plain_digits_for_tiny_sizes() -> None:
    book = OrderBook()
    book.apply_snapshot([(Decimal("30000.1"), Decimal("0.00000062"))], [])
    expected = zlib.crc32(b"30000.1:0.00000062")
    expected = expected - (1 << 32) if expected >= 1 << 31 else expected
    assert str(Decimal("0.00000062")) == "6.2E-7"  # why str() cannot be used
    assert okx_checksum(book) == expected


def test_cached_checksum_equals_the_reference_on_every_captured_update(
    capture: list[dict[str, Any]],
) -> None:
    """The plugin's books use :class:`CachedChecksum`; on every captured state (one protocol
    for all three books, so each keeps its own cache) it computes what ``okx_checksum`` does,
    and the venue's checksum too (else the book would not be published)."""
    protocol = make_protocol()
    compared: list[int] = []
    for sync in protocol.books.values():
        cached = sync.checksum
        assert isinstance(cached, CachedChecksum)

        def both(book: OrderBook, cached: CachedChecksum = cached) -> int:
            value = cached(book)
            assert value == okx_checksum(book)
            compared.append(value)
            return value

        sync.checksum = both
    out = Output()
    frames = [r["raw"].encode() for r in capture if r.get("group") in GROUPS]
    feed_all(protocol, frames, out)
    assert len(compared) == len(frames) == len(of_type(out.records, Book)) == 290
    assert status_events(out) == []


def test_cached_checksum_follows_random_updates_deletions_and_snapshots() -> None:
    """Property-style, fixed seed: after every step of a random mix of snapshots, updates,
    deletions and re-added levels, the cached checksum equals the reference. Prices and sizes
    include equal values with different texts ("1.0" / "1.00"), tiny values that ``str``
    writes in scientific notation, sizes shared between levels, and one-sided or empty books;
    a small ``max_size`` exercises the cache's pruning."""
    rng = random.Random(20240611)
    price_texts = [f"{100 + i / 2:.1f}" for i in range(80)]
    price_texts += ["110.00", "110.000", "0.00000062", "0.0000006200"]  # = 110.0, 6.2E-7
    size_texts = ["1", "1.0", "1.00", "0.5", "2.25", "0.00000062", "0.000001000", "12345.678"]
    shared_size = Decimal("3.0")
    cached = CachedChecksum(max_size=40)
    book = OrderBook()

    def levels(count: int) -> list[tuple[Decimal, Decimal]]:
        out = []
        for _ in range(count):
            size = shared_size if rng.random() < 0.1 else Decimal(rng.choice(size_texts))
            if rng.random() < 0.3:
                size = Decimal(0)  # a deletion (of a level that may or may not exist)
            out.append((Decimal(rng.choice(price_texts)), size))
        return out

    seen = set()
    largest = 0
    for step in range(3000):
        if step % 500 == 0:
            book.apply_snapshot(levels(rng.randrange(0, 60)), levels(rng.randrange(0, 60)))
        else:
            book.apply_delta(levels(rng.randrange(0, 6)), levels(rng.randrange(0, 6)))
        assert cached(book) == okx_checksum(book), step
        seen.add((len(book.bids) >= 25, len(book.asks) >= 25))
        largest = max(largest, len(cached))
    assert len(seen) > 1  # both full and short sides were covered
    assert 50 < largest <= 80  # pruned at 40 levels a side


def test_cached_checksum_reuses_text_only_for_the_same_objects() -> None:
    """Equal values with other digits get their own text: a size re-sent as "1.00", a price
    deleted and re-added as "100.00" with the very same size object."""
    cached = CachedChecksum()
    size = Decimal("1.0")
    book = OrderBook()
    book.apply_snapshot([(Decimal("100.0"), size)], [(Decimal("101"), Decimal("2"))])
    assert cached(book) == okx_checksum(book) == _signed(b"100.0:1.0:101:2")
    book.apply_delta([(Decimal("100.0"), Decimal("1.00"))], [])
    assert cached(book) == _signed(b"100.0:1.00:101:2")
    book.apply_snapshot([(Decimal("100.00"), size)], [(Decimal("101"), Decimal("2"))])
    assert cached(book) == okx_checksum(book) == _signed(b"100.00:1.0:101:2")
    book.apply_delta([(Decimal("100.00"), Decimal(0))], [])
    assert cached(book) == _signed(b"101:2")
    book.apply_delta([], [(Decimal("101"), Decimal(0))])
    assert cached(book) == okx_checksum(book) == _signed(b"")


def _signed(text: bytes) -> int:
    crc = zlib.crc32(text)
    return crc - (1 << 32) if crc >= 1 << 31 else crc


# --- other channels ------------------------------------------------------------------------


def test_captured_trades_normalize(capture: list[dict[str, Any]]) -> None:
    protocol = make_protocol(CAPTURED, ["trades"])
    rows = [r for r in capture if r["kind"] == "trade"]
    out = Output()
    for row in rows:
        assert protocol.on_message(row["raw"].encode(), 7, out) is True
    trades = of_type(out.records, Trade)
    assert len(trades) == len(rows) == 12
    for trade, row in zip(trades, rows, strict=True):
        [wire] = json.loads(row["raw"])["data"]
        assert trade.price == Decimal(wire["px"]) and str(trade.price) == wire["px"]
        assert trade.size == Decimal(wire["sz"])
        assert trade.side == wire["side"]  # OKX's side is the taker's
        assert trade.id == wire["tradeId"]
        assert trade.ts == int(wire["ts"]) * 1_000_000 and trade.recv_ts == 7
    uni = next(t for t in trades if t.symbol == "UNI-USD-PERP")
    # {"instId":"UNI-USD-SWAP","tradeId":"12883020","px":"5.123","sz":"100","side":"sell",...}
    assert (uni.price, uni.size, uni.side, uni.id) == (Decimal("5.123"), 100, "sell", "12883020")


def test_captured_tickers_normalize(capture: list[dict[str, Any]]) -> None:
    protocol = make_protocol(CAPTURED, ["ticker"])
    out = Output()
    for row in (r for r in capture if r["kind"] == "ticker"):
        protocol.on_message(row["raw"].encode(), 0, out)
    tickers = of_type(out.records, Ticker)
    assert len(tickers) == 9
    spot = next(t for t in tickers if t.symbol == "BTC-USDT")
    assert (spot.last, spot.bid, spot.ask) == (
        Decimal("30236"),
        Decimal("30228.6"),
        Decimal("30228.7"),
    )
    assert spot.volume_24h == Decimal("17602.13085371")  # base volume
    assert spot.quote_volume_24h == Decimal("525802090.62716611")
    swap = next(t for t in tickers if t.symbol == "UNI-USD-PERP")
    assert swap.volume_24h == Decimal("577730.7823")  # volCcy24h: base, not contracts
    assert swap.quote_volume_24h is None and swap.ts == 1652459223143 * 1_000_000


def test_bbo_tbt_doc_example(capture: list[dict[str, Any]]) -> None:
    [row] = [r for r in capture if r["kind"] == "bbo"]
    protocol = make_protocol(["BTC-USDT"], ["bbo"])
    out = Output()
    assert protocol.on_message(row["raw"].encode(), 0, out) is True
    [bbo] = out.records
    assert isinstance(bbo, BBO)
    assert (bbo.bid_price, bbo.bid_size, bbo.ask_price, bbo.ask_size) == (
        Decimal("8476.97"),
        Decimal("256"),
        Decimal("8476.98"),
        Decimal("415"),
    )


def test_funding_open_interest_and_liquidations() -> None:
    # Shapes from OKX's documentation examples (values are the docs', not a live capture).
    protocol = make_protocol(
        ["BTC-USDT-PERP", "IOST-USDT-PERP"], ["funding", "open_interest", "liquidations"]
    )
    out = Output()
    protocol.on_message(
        b'{"arg":{"channel":"funding-rate","instId":"BTC-USDT-SWAP"},"data":[{"instId":"BTC-USDT-SWAP","fundingRate":"0.0001","nextFundingRate":"","fundingTime":"1744590349506","nextFundingTime":"1744619149506","ts":"1744590349000"}]}',
        1,
        out,
    )
    protocol.on_message(
        b'{"arg":{"channel":"open-interest","instId":"BTC-USDT-SWAP"},"data":[{"instType":"SWAP","instId":"BTC-USDT-SWAP","oi":"5000","oiCcy":"555.55","oiUsd":"50000","ts":"1743041250440"}]}',
        2,
        out,
    )
    protocol.on_message(
        b'{"arg":{"channel":"liquidation-orders","instType":"SWAP"},"data":[{"details":[{"bkLoss":"0","bkPx":"0.007831","ccy":"","posSide":"short","side":"buy","sz":"13","ts":"1692266434010"}],"instFamily":"IOST-USDT","instId":"IOST-USDT-SWAP","instType":"SWAP","uly":"IOST-USDT"},{"details":[{"bkLoss":"0","bkPx":"1","ccy":"","posSide":"long","side":"sell","sz":"1","ts":"1692266434010"}],"instId":"DOGE-USDT-SWAP","instType":"SWAP"}]}',
        3,
        out,
    )
    [funding] = of_type(out.records, Funding)
    assert funding.rate == Decimal("0.0001") and funding.predicted_rate is None
    assert funding.next_funding_ts == 1744590349506 * 1_000_000
    [oi] = of_type(out.records, OpenInterest)
    assert oi.open_interest == 5000 and oi.symbol == "BTC-USDT-PERP"
    [liq] = of_type(out.records, Liquidation)  # DOGE is not configured: filtered out
    assert (liq.symbol, liq.side, liq.price, liq.size) == (
        "IOST-USDT-PERP",
        "buy",
        Decimal("0.007831"),
        Decimal("13"),
    )


# --- malformed input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        b"not json",
        b'{"unexpected":true}',
        b'{"event":"mystery"}',
        b'{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"merge","data":[]}',
        b'{"arg":{"channel":"books","instId":"ETH-USDT"},"action":"update","data":[]}',
        b'{"arg":{"channel":"candle1m","instId":"BTC-USDT"},"data":[[]]}',
        b'{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT","tradeId":"1","px":"1","sz":"1","side":"up","ts":"1"}]}',
        b'{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT","tradeId":"1","px":"x","sz":"1","side":"buy","ts":"1"}]}',
        b'{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"snapshot","data":[{"asks":[["1"]],"bids":[],"ts":"1"}]}',
    ],
)
def test_malformed_frames_raise(frame: bytes) -> None:
    protocol = make_protocol(["BTC-USDT"], ["trades", "l2_book"])
    with pytest.raises((DecodeError, msgspec.DecodeError)):
        protocol.on_message(frame, 0, Output())


# --- through the connection actor ----------------------------------------------------------


async def test_actor_settles_per_arg_acks_and_resubscribes_a_bad_book(
    capture: list[dict[str, Any]],
) -> None:
    """The real runtime: per-arg acks settle the actor's ledger (``subscribed``), and a
    corrupted book is resynced by resubscribing that instId alone on the same connection."""
    exchange = MemoryExchange()
    bus = Bus()
    sub = bus.subscribe(maxsize=10_000)
    cfg = FeedConfig(
        exchange="okx",
        symbols=CAPTURED,
        channels=["ticker", "trades", "l2_book"],
        connect_timeout=5.0,
        reconnect=BackoffOptions(initial=0.01, max=0.05),
    )
    feed = OkxFeed(cfg, url="ws://memory/ws/v5/public")
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
        request = json.loads(await peer.received())
        assert request["op"] == "subscribe" and len(request["args"]) == 9
        for row in (r for r in capture if r["kind"] == "subscribe_ack"):
            await peer.send_text(row["raw"])
        await _until(sub, lambda r: isinstance(r, Status) and r.event is StatusEvent.SUBSCRIBED)

        frames = group_frames(capture, "okx-books-BTC-USDT")
        for frame in frames[:5]:
            await peer.send_text(frame)
        await peer.send_text(_corrupt_top_level(frames, 5))
        seen = await _until(sub, lambda r: isinstance(r, Status) and r.event is StatusEvent.RESYNC)
        assert [r.event for r in seen if isinstance(r, Status)][-2:] == [
            StatusEvent.CHECKSUM_MISMATCH,
            StatusEvent.RESYNC,
        ]
        assert len([r for r in seen if isinstance(r, Book)]) == 5
        unsubscribe = json.loads(await peer.received())
        resubscribe = json.loads(await peer.received())
        book_arg = [{"channel": "books", "instId": "BTC-USDT"}]
        assert (unsubscribe["op"], unsubscribe["args"]) == ("unsubscribe", book_arg)
        assert (resubscribe["op"], resubscribe["args"]) == ("subscribe", book_arg)
        await peer.send_text(frames[0])  # OKX answers the resubscription with a snapshot
        [*_, book] = await _until(sub, lambda r: isinstance(r, Book))
        assert isinstance(book, Book) and book.snapshot and book.symbol == "BTC-USDT"
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
