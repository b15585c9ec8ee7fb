"""Derived streams: cross-venue NBBO and top-N book snapshots, on synthetic records through
a real Bus, and once through the App against the simulator."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal

import pytest

from streamkit.app import App
from streamkit.book import OrderBook
from streamkit.channel import Bus, Subscription
from streamkit.config import BookSnapshotsConfig, NbboConfig, parse_config
from streamkit.derived import BookSnapshotStream, NbboBook, NbboStream, SnapshotBooks
from streamkit.errors import ConfigError
from streamkit.model import (
    BBO,
    NBBO,
    Book,
    BookSnapshot,
    Record,
    Status,
    StatusEvent,
    decode_json,
    encode_json,
)

D = Decimal
NOW = 1_700_000_000 * 10**9


class FakeClock:
    def __init__(self) -> None:
        self.ns = NOW

    def __call__(self) -> int:
        return self.ns


def bbo(
    venue: str, bid: str, ask: str, *, symbol: str = "BTC-USDT", size: str = "1", recv_ts: int = NOW
) -> BBO:
    return BBO(
        exchange=venue,
        symbol=symbol,
        ts=recv_ts - 1000,
        recv_ts=recv_ts,
        bid_price=D(bid),
        bid_size=D(size),
        ask_price=D(ask),
        ask_size=D(size),
    )


def status(venue: str, event: StatusEvent, symbol: str | None = None) -> Status:
    return Status(exchange=venue, symbol=symbol, ts=None, recv_ts=NOW, event=event)


def book(
    venue: str,
    symbol: str,
    bids: list[tuple[str, str]],
    asks: list[tuple[str, str]],
    *,
    snapshot: bool,
    seq: int | None = None,
) -> Book:
    return Book(
        exchange=venue,
        symbol=symbol,
        ts=NOW,
        recv_ts=NOW,
        snapshot=snapshot,
        bids=[(D(p), D(s)) for p, s in bids],
        asks=[(D(p), D(s)) for p, s in asks],
        seq=seq,
    )


# --- NBBO core --------------------------------------------------------------------------------


def test_nbbo_takes_each_side_from_the_best_venue() -> None:
    nb = NbboBook(clock=FakeClock())
    assert nb.on_record(bbo("binance", "100", "102")) != []
    [out] = nb.on_record(bbo("okx", "101", "103"))
    assert (out.bid_price, out.bid_exchange) == (D(101), "okx")
    assert (out.ask_price, out.ask_exchange) == (D(102), "binance")
    assert out.exchange == "nbbo" and out.symbol == "BTC-USDT"
    assert out.venues == ["binance", "okx"]
    # The record survives the one JSON encoding every sink uses.
    assert decode_json(encode_json(out)) == out


def test_nbbo_ties_prefer_the_larger_size_then_the_venue_name() -> None:
    nb = NbboBook(clock=FakeClock())
    nb.on_record(bbo("okx", "100", "101", size="1"))
    [out] = nb.on_record(bbo("binance", "100", "101", size="2"))
    assert (out.bid_exchange, out.bid_size, out.ask_exchange) == ("binance", D(2), "binance")
    [out] = nb.on_record(bbo("binance", "100", "101", size="1"))
    # Equal price and size: the first venue by name, on both sides.
    assert (out.bid_exchange, out.ask_exchange) == ("binance", "binance")
    assert out.bid_size == D(1)


def test_nbbo_publishes_only_changes() -> None:
    nb = NbboBook(clock=FakeClock())
    nb.on_record(bbo("binance", "100", "102"))
    nb.on_record(bbo("okx", "99", "103"))
    # okx moves but stays behind binance on both sides: the NBBO is unchanged.
    assert nb.on_record(bbo("okx", "98", "104")) == []


def test_nbbo_filters_symbols_and_exchanges() -> None:
    nb = NbboBook(symbols=["BTC-USDT"], exchanges=["binance", "okx"], clock=FakeClock())
    assert nb.on_record(bbo("kraken", "200", "201")) == []
    assert nb.on_record(bbo("binance", "1", "2", symbol="ETH-USDT")) == []
    assert nb.on_record(bbo("binance", "100", "101")) != []


def test_disconnected_venue_drops_out_and_comes_back_with_its_next_quote() -> None:
    nb = NbboBook(clock=FakeClock())
    nb.on_record(bbo("binance", "100", "103"))
    nb.on_record(bbo("okx", "101", "102"))
    [out] = nb.on_record(status("okx", StatusEvent.DISCONNECTED))  # connection-wide
    assert (out.bid_exchange, out.ask_exchange, out.venues) == ("binance", "binance", ["binance"])
    assert nb.on_record(status("okx", StatusEvent.RECONNECTING)) == []  # nothing left to drop
    [out] = nb.on_record(bbo("okx", "101", "102"))
    assert (out.bid_exchange, out.ask_exchange) == ("okx", "okx")


def test_symbol_scoped_status_drops_only_that_symbol() -> None:
    nb = NbboBook(clock=FakeClock())
    nb.on_record(bbo("okx", "101", "102"))
    nb.on_record(bbo("okx", "10", "11", symbol="ETH-USDT"))
    [out] = nb.on_record(status("okx", StatusEvent.STALE, symbol="ETH-USDT"))
    assert out.symbol == "ETH-USDT" and out.bid_price is None and out.venues == []
    # A book gap says nothing about the venue's best bid/offer stream.
    assert nb.on_record(status("okx", StatusEvent.GAP, symbol="BTC-USDT")) == []


def test_quotes_older_than_max_age_drop_out_on_the_sweep() -> None:
    clock = FakeClock()
    nb = NbboBook(max_age=5.0, clock=clock)
    nb.on_record(bbo("binance", "100", "103", recv_ts=NOW))
    nb.on_record(bbo("okx", "101", "102", recv_ts=NOW + 3 * 10**9))
    clock.ns = NOW + 5 * 10**9
    assert nb.sweep() == []  # exactly max_age old: still live
    clock.ns = NOW + 6 * 10**9
    [out] = nb.sweep()
    assert out.venues == ["okx"] and out.recv_ts == clock.ns
    clock.ns = NOW + 9 * 10**9
    [out] = nb.sweep()
    # The last venue is gone: one record with null sides says so, then silence.
    assert (out.bid_price, out.bid_size, out.bid_exchange) == (None, None, None)
    assert (out.ask_price, out.ask_exchange, out.venues) == (None, None, [])
    assert nb.sweep() == []


# --- book snapshots core ----------------------------------------------------------------------


def test_snapshots_follow_snapshot_and_deltas_and_cut_to_depth() -> None:
    books = SnapshotBooks(2, clock=FakeClock())
    assert books.snapshots() == []
    books.on_record(
        book(
            "binance",
            "BTC-USDT",
            [("99", "1"), ("98", "2"), ("97", "3")],
            [("101", "1"), ("102", "2"), ("103", "3")],
            snapshot=True,
            seq=10,
        )
    )
    books.on_record(
        book(
            "binance",
            "BTC-USDT",
            [("99", "0"), ("100", "5")],
            [("101.5", "4")],
            snapshot=False,
            seq=11,
        )
    )
    [snap] = books.snapshots()
    assert snap.bids == [(D(100), D(5)), (D(98), D(2))]
    assert snap.asks == [(D(101), D(1)), (D("101.5"), D(4))]
    assert (snap.depth, snap.seq, snap.exchange, snap.symbol) == (2, 11, "binance", "BTC-USDT")
    assert decode_json(encode_json(snap)) == snap


@pytest.mark.parametrize(
    ("event", "symbol"),
    [
        (StatusEvent.GAP, "BTC-USDT"),
        (StatusEvent.RESYNC, "BTC-USDT"),
        (StatusEvent.CHECKSUM_MISMATCH, "BTC-USDT"),
        (StatusEvent.DISCONNECTED, None),
    ],
)
def test_a_break_stops_snapshots_until_the_next_snapshot(
    event: StatusEvent, symbol: str | None
) -> None:
    books = SnapshotBooks(5, clock=FakeClock())
    books.on_record(book("okx", "BTC-USDT", [("1", "1")], [("2", "1")], snapshot=True))
    books.on_record(book("okx", "ETH-USDT", [("1", "1")], [("2", "1")], snapshot=True))
    books.on_record(status("okx", event, symbol))
    left = [s.symbol for s in books.snapshots()]
    assert left == ([] if symbol is None else ["ETH-USDT"])
    books.on_record(book("okx", "BTC-USDT", [("1", "9")], [], snapshot=False))
    assert books.ignored_deltas == 1
    assert "BTC-USDT" not in [s.symbol for s in books.snapshots()]
    books.on_record(book("okx", "BTC-USDT", [("1.5", "2")], [("2", "1")], snapshot=True))
    snap = next(s for s in books.snapshots() if s.symbol == "BTC-USDT")
    assert snap.bids == [(D("1.5"), D(2))]


# --- through a real Bus -----------------------------------------------------------------------


async def take(sub: Subscription, n: int, within: float = 5.0) -> list[Record]:
    out: list[Record] = []
    async with asyncio.timeout(within):
        while len(out) < n:
            out.append(await sub.get())
    return out


async def until(sub: Subscription, pred: Callable[[Record], bool], within: float = 5.0) -> Record:
    async with asyncio.timeout(within):
        while True:
            rec = await sub.get()
            if pred(rec):
                return rec


async def test_nbbo_stream_on_the_bus() -> None:
    bus = Bus()
    stream = NbboStream(bus, NbboConfig(symbols=["BTC-USDT"], max_age=60))
    inputs = stream.subscribe()
    out = bus.subscribe(NBBO, symbol="BTC-USDT", name="consumer")
    task = asyncio.create_task(stream.run(inputs))
    await bus.publish(bbo("binance", "100", "102"))
    await bus.publish(bbo("okx", "101", "103"))
    first, second = await take(out, 2)
    assert isinstance(first, NBBO) and isinstance(second, NBBO)
    assert (second.bid_exchange, second.ask_exchange) == ("okx", "binance")
    await bus.publish(status("okx", StatusEvent.STALE))
    third = await take(out, 1)
    assert isinstance(third[0], NBBO) and third[0].venues == ["binance"]
    # The stream never sees its own output: NBBO is not one of its inputs.
    assert stream.published == 3
    bus.close()
    async with asyncio.timeout(5):
        await task  # shutdown: the input subscription ends, the stream returns


async def test_book_snapshot_stream_publishes_at_its_interval_and_pauses_on_gap() -> None:
    bus = Bus()
    stream = BookSnapshotStream(bus, BookSnapshotsConfig(depth=1, interval=0.01))
    inputs = stream.subscribe()
    out = bus.subscribe(BookSnapshot, name="consumer")
    task = asyncio.create_task(stream.run(inputs))
    await bus.publish(
        book(
            "binance", "BTC-USDT", [("99", "1"), ("98", "1")], [("101", "1")], snapshot=True, seq=1
        )
    )
    await bus.publish(book("binance", "ETH-USDT", [("9", "1")], [("11", "1")], snapshot=True))
    await bus.publish(book("binance", "BTC-USDT", [("100", "2")], [], snapshot=False, seq=2))
    snap = await until(out, lambda r: isinstance(r, BookSnapshot) and r.seq == 2)
    assert isinstance(snap, BookSnapshot) and snap.bids == [(D(100), D(2))]

    await bus.publish(status("binance", StatusEvent.GAP, "BTC-USDT"))
    async with asyncio.timeout(5):
        # Polling: the stream has no hook to await, and it takes the gap off its queue and
        # applies it in one step.
        while inputs.depth:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
    out.drain_nowait()  # whatever was published before the gap was applied
    # Later ticks carry only the book that is still whole.
    after_gap = await take(out, 3)
    assert {r.symbol for r in after_gap} == {"ETH-USDT"}

    await bus.publish(
        book("binance", "BTC-USDT", [("90", "1")], [("91", "1")], snapshot=True, seq=50)
    )
    resumed = await until(out, lambda r: isinstance(r, BookSnapshot) and r.symbol == "BTC-USDT")
    assert isinstance(resumed, BookSnapshot)
    assert (resumed.seq, resumed.bids) == (50, [(D(90), D(1))])
    bus.close()
    async with asyncio.timeout(5):
        await task  # shutdown: the input subscription ends, the stream returns


# --- config and App ---------------------------------------------------------------------------


def test_derived_config_parses_and_typos_are_named() -> None:
    base = "feeds: [{exchange: binance, symbols: [BTC-USDT], channels: [bbo]}]\n"
    cfg = parse_config(
        base + "derived: {nbbo: {symbols: [BTC-USDT]}, book_snapshots: {depth: 10, interval: 1.0}}"
    )
    assert cfg.derived.nbbo is not None and cfg.derived.nbbo.symbols == ["BTC-USDT"]
    assert cfg.derived.book_snapshots is not None and cfg.derived.book_snapshots.depth == 10
    assert parse_config(base).derived.nbbo is None
    with pytest.raises(ConfigError) as err:
        parse_config(base + "derived: {book_snapshots: {dept: 5}}")
    assert err.value.problems == [
        ("derived.book_snapshots.dept", "unknown key (did you mean 'depth'?)")
    ]


async def test_app_runs_derived_streams_against_the_simulator() -> None:
    cfg = parse_config(
        """
simulator: {rate: 200}
feeds:
  - exchange: binance
    url: simulator
    symbols: [NKN-USDT]
    channels: [bbo, l2_book]
derived:
  nbbo: {symbols: [NKN-USDT], max_age: 30}
  book_snapshots: {depth: 5, interval: 0.05}
"""
    )
    app = App(cfg)
    bbos = app.stream(BBO, symbol="NKN-USDT", name="bbos")
    nbbos = app.stream(NBBO, name="nbbos")
    books = app.stream((Book, Status), name="books")
    snaps = app.stream(BookSnapshot, name="snaps")
    async with app:
        snap = await until(snaps, lambda r: isinstance(r, BookSnapshot), within=15)
        nbbo = await until(nbbos, lambda r: isinstance(r, NBBO), within=15)
    assert [type(s).__name__ for s in app.derived] == ["NbboStream", "BookSnapshotStream"]
    # The NBBO of a single venue is that venue's latest BBO.
    assert isinstance(nbbo, NBBO) and nbbo.exchange == "nbbo" and nbbo.venues == ["binance"]
    quotes = [r for r in bbos.drain_nowait() if isinstance(r, BBO)]
    assert quotes, "the simulator sent BBOs"
    assert (nbbo.bid_price, nbbo.ask_price) in {(q.bid_price, q.ask_price) for q in quotes}
    # The snapshot is the top of an independently maintained copy of the verified book.
    assert isinstance(snap, BookSnapshot) and snap.exchange == "binance"
    assert 0 < len(snap.bids) <= 5 and 0 < len(snap.asks) <= 5
    assert snap.bids == sorted(snap.bids, reverse=True) and snap.asks == sorted(snap.asks)
    assert snap.bids[0][0] < snap.asks[0][0]
    mirror = OrderBook()
    for rec in books.drain_nowait():
        if isinstance(rec, Book):
            if rec.snapshot:
                mirror.apply_snapshot(rec.bids, rec.asks, rec.seq)
            else:
                mirror.apply_delta(rec.bids, rec.asks, rec.seq)
            if rec.seq == snap.seq:
                break
    assert mirror.top(5) == (snap.bids, snap.asks)
