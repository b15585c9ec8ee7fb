"""The conformance kit: real plugins pass it on their captured frames, broken ones fail it."""

from __future__ import annotations

import json
from decimal import Decimal
from importlib import resources
from typing import Any, ClassVar

import msgspec
import pytest

from streamkit.feed import (
    ConnectionPlan,
    DecodeError,
    Feed,
    FeedProtocol,
    Limits,
    Output,
    SubscribeRequest,
    chunked,
)
from streamkit.model import (
    BBO,
    Book,
    Candle,
    Funding,
    Liquidation,
    OpenInterest,
    Status,
    StatusEvent,
    Ticker,
    Trade,
)
from streamkit.testing import ConformanceReport, assert_conforms, check_feed
from streamkit_binance import BinanceFeed
from streamkit_binance_futures import BinanceFuturesFeed


def load(name: str) -> list[dict[str, Any]]:
    text = (resources.files("streamkit.simulator") / "data" / name).read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# --- real plugins on real captures -------------------------------------------------------------


def test_binance_spot_conforms_on_its_capture() -> None:
    rows = load("binance_spot.jsonl")
    snapshot = next(r["raw"] for r in rows if r["kind"] == "rest_book_snapshot")
    kinds = {"trade", "bbo", "kline", "book_delta", "subscribe_ack", "error", "server_shutdown"}
    # live-captured data frames, plus the documented control replies and errors
    frames = [r["raw"] for r in rows if r["kind"] in kinds and (r.get("symbol") or "{" in r["raw"])]
    frames = [f for f in frames if '"e":"trade"' not in f]  # a raw @trade example: not subscribed
    report = assert_conforms(
        BinanceFeed,
        frames,
        symbols=["NKN-USDT", "LRC-BTC"],
        channels=["trades", "bbo", "l2_book", "candles"],
        http_answers={"https://api.binance.com/api/v3/depth?symbol=NKNUSDT&limit=1000": snapshot},
        plan_symbols=[f"S{i:03d}-USDT" for i in range(400)],  # 1,600 streams: 2 connections
    )
    counts = report.counts
    assert counts["book"] == 1 + 149  # snapshot + every diff after the straddling one
    assert counts["trade"] == 2 and counts["bbo"] == 8 and counts["candle"] == 2
    assert report.acks == ["1"]
    assert len(report.reconnects) == 2  # both serverShutdown forms
    assert counts["status"] == 6  # the documented error bodies without a request id
    assert not report.unsubscribed_streams


def test_binance_futures_conforms_on_its_capture() -> None:
    rows = load("binance_usdm.jsonl")
    snapshot = next(r["raw"] for r in rows if r["kind"] == "rest_book_snapshot")
    frames = [r["raw"] for r in rows if r["kind"] != "rest_book_snapshot"]
    # Binance's documented examples for the channels the capture lacks
    frames += [
        '{"stream":"sushiusdt@markPrice@1s","data":{"e":"markPriceUpdate","E":1562305380000,'
        '"s":"SUSHIUSDT","p":"11794.15000000","i":"11784.62659091","P":"11784.25641265",'
        '"r":"-0.00038167","T":1562306400000}}',
        '{"stream":"sushiusdt@forceOrder","data":{"e":"forceOrder","E":1568014460893,"o":{'
        '"s":"SUSHIUSDT","S":"SELL","o":"LIMIT","f":"IOC","q":"0.014","p":"9910","ap":"9910",'
        '"X":"FILLED","l":"0.014","z":"0.014","T":1568014460893}}}',
        '{"stream":"sushiusdt@ticker","data":{"e":"24hrTicker","E":1626992741575,'
        '"s":"SUSHIUSDT","p":"0.0015","P":"250.00","w":"0.0018","c":"0.0025","Q":"10",'
        '"o":"0.0010","h":"0.0025","l":"0.0010","v":"10000","q":"18","O":0,"C":86400000,'
        '"F":0,"L":18150,"n":18151}}',
    ]
    rest = "https://fapi.binance.com/fapi/v1"
    report = assert_conforms(
        BinanceFuturesFeed,
        frames,
        symbols=["SUSHI-USDT-PERP", "CTK-USDT-PERP", "AKRO-USDT-PERP", "KEEP-USDT-PERP"],
        channels=[
            "trades",
            "bbo",
            "l2_book",
            "candles",
            "funding",
            "liquidations",
            "ticker",
            "open_interest",
        ],
        http_answers={
            f"{rest}/depth?symbol=SUSHIUSDT&limit=1000": snapshot,
            f"{rest}/openInterest?symbol=SUSHIUSDT": (
                '{"openInterest":"10659.509","symbol":"SUSHIUSDT","time":1589437530011}'
            ),
        },
        plan_symbols=[f"S{i:03d}-USDT-PERP" for i in range(150)],  # 1,200 streams
    )
    counts = report.counts
    assert counts["book"] == 1 + 252
    assert (counts["trade"], counts["bbo"], counts["candle"]) == (8, 6, 2)
    assert counts["funding"] == counts["liquidation"] == counts["ticker"] == 1
    # one poll per symbol on connect; SUSHI's answered twice (http_rounds), each re-armed
    assert counts["open_interest"] == 2
    sushi_polls = [r for r in report.http_requests if "openInterest?symbol=SUSHI" in r.url]
    assert [r.delay for r in sushi_polls] == [0.0, 10.0, 10.0]
    assert {s.channel for s in report.unsubscribed_streams} == {"open_interest"}


# --- a toy plugin, and broken variants the kit must catch ------------------------------------


class ToyTrade(msgspec.Struct):
    s: str
    p: Decimal
    q: Decimal
    side: str
    id: str
    ts: int


class ToyBook(msgspec.Struct):
    s: str
    seq: int
    prev: int | None
    bids: list[tuple[Decimal, Decimal]]
    asks: list[tuple[Decimal, Decimal]]


class ToyFrame(msgspec.Struct):
    type: str
    trade: ToyTrade | None = None
    book: ToyBook | None = None


_toy_decoder = msgspec.json.Decoder(ToyFrame)


class ToyFeed(Feed):
    """Trades and a seq-chained book on a venue whose symbols are ``BTC_USD``."""

    id: ClassVar[str] = "toy"
    channels: ClassVar[frozenset[str]] = frozenset({"trades", "l2_book"})
    default_url: ClassVar[str] = "wss://toy.example/ws"
    limits: ClassVar[Limits] = Limits(max_streams_per_connection=10, max_streams_per_message=3)

    def exchange_symbol(self, symbol: str) -> str:
        return symbol.replace("-", "_")

    def normalize_symbol(self, exchange_symbol: str) -> str:
        return exchange_symbol.replace("_", "-")

    def stream_name(self, channel: str, symbol: str) -> str:
        return f"{channel}:{self.exchange_symbol(symbol)}"

    def protocol(self, plan: ConnectionPlan, connection: str) -> FeedProtocol:
        return ToyProtocol(self, plan, connection)


class ToyProtocol(FeedProtocol):
    def __init__(self, feed: Feed, plan: ConnectionPlan, connection: str) -> None:
        super().__init__(feed, plan, connection)
        self.seq: dict[str, int] = {}

    def url(self) -> str:
        return self.feed.url

    def subscriptions(self) -> list[SubscribeRequest]:
        size = self.feed.limits.max_streams_per_message
        return [
            SubscribeRequest(str(i), group, json.dumps([s.name for s in group]).encode())
            for i, group in enumerate(chunked(self.plan.streams, size))
        ]

    def on_message(self, data: bytes, recv_ts: int, out: Output) -> bool:
        frame = _toy_decoder.decode(data)
        if frame.trade is not None:
            t = frame.trade
            out.records.append(self.trade(t, recv_ts))
            return True
        if frame.book is not None:
            self.on_book(frame.book, recv_ts, out)
            return True
        raise DecodeError(f"unexpected frame type {frame.type!r}")

    def trade(self, t: ToyTrade, recv_ts: int) -> Trade:
        side = "buy" if t.side == "buy" else "sell"
        return Trade(
            exchange=self.exchange,
            symbol=self.feed.normalize_symbol(t.s),
            ts=t.ts,
            recv_ts=recv_ts,
            price=t.p,
            size=t.q,
            side=side,
            id=t.id,
        )

    def on_book(self, b: ToyBook, recv_ts: int, out: Output) -> None:
        symbol = self.feed.normalize_symbol(b.s)
        snapshot = b.prev is None
        if not snapshot and self.seq.get(symbol) != b.prev:
            out.records.append(
                Status(
                    exchange=self.exchange,
                    symbol=symbol,
                    ts=None,
                    recv_ts=recv_ts,
                    event=StatusEvent.GAP,
                    connection=self.connection,
                )
            )
            self.seq.pop(symbol, None)
            return
        if not snapshot and symbol not in self.seq:
            return
        self.seq[symbol] = b.seq
        out.records.append(
            Book(
                exchange=self.exchange,
                symbol=symbol,
                ts=None,
                recv_ts=recv_ts,
                snapshot=snapshot,
                bids=b.bids,
                asks=b.asks,
                seq=b.seq,
            )
        )


T0 = 1_700_000_000_000_000_000


def trade_frame(price: str = "100.5", side: str = "buy", ts: int = T0) -> str:
    return json.dumps(
        {
            "type": "trade",
            "trade": {"s": "BTC_USD", "p": price, "q": "2", "side": side, "id": "7", "ts": ts},
        }
    )


def book_frame(seq: int, prev: int | None, bid: str = "99", ask: str = "101") -> str:
    return json.dumps(
        {
            "type": "book",
            "book": {
                "s": "BTC_USD",
                "seq": seq,
                "prev": prev,
                "bids": [[bid, "1"]],
                "asks": [[ask, "1"]],
            },
        }
    )


GOOD_FRAMES = [trade_frame(), book_frame(1, None), book_frame(2, 1), trade_frame(side="sell")]


def toy_check(feed_cls: type[Feed], frames: list[str], **kwargs: Any) -> ConformanceReport:
    return check_feed(
        feed_cls, frames, symbols=["BTC-USD"], channels=["trades", "l2_book"], **kwargs
    )


def checks(report: ConformanceReport) -> set[str]:
    return {v.check for v in report.violations}


def test_toy_feed_conforms() -> None:
    report = toy_check(ToyFeed, GOOD_FRAMES)
    assert report.ok, report.summary()
    assert report.data_frames == 4 and report.counts == {"trade": 2, "book": 2}


def test_gap_then_delta_without_snapshot_is_caught() -> None:
    class PublishesThroughGaps(ToyProtocol):
        def on_book(self, b: ToyBook, recv_ts: int, out: Output) -> None:
            symbol = self.feed.normalize_symbol(b.s)
            if b.prev is not None and self.seq.get(symbol) != b.prev:
                out.records.append(
                    Status(
                        exchange=self.exchange,
                        symbol=symbol,
                        ts=None,
                        recv_ts=recv_ts,
                        event=StatusEvent.GAP,
                    )
                )
            self.seq[symbol] = b.seq  # bug: carries on after the gap
            out.records.append(
                Book(
                    exchange=self.exchange,
                    symbol=symbol,
                    ts=None,
                    recv_ts=recv_ts,
                    snapshot=b.prev is None,
                    bids=b.bids,
                    asks=b.asks,
                    seq=b.seq,
                )
            )

    class Leaky(ToyFeed):
        def protocol(self, plan: ConnectionPlan, connection: str) -> FeedProtocol:
            return PublishesThroughGaps(self, plan, connection)

    frames = [book_frame(1, None), book_frame(2, 1), book_frame(5, 4), book_frame(6, 5)]
    report = toy_check(Leaky, frames)
    book_violations = [v.detail for v in report.violations if v.check == "book"]
    assert len(book_violations) == 2 and "after a gap" in book_violations[0]
    # the correct toy plugin on the same frames: gap reported, nothing published after it
    assert toy_check(ToyFeed, frames).ok
    # a new snapshot clears the broken state; a seq going backwards is caught
    resnap = [*frames[:3], book_frame(9, None), book_frame(10, 9)]
    assert toy_check(ToyFeed, resnap).ok
    assert "book" in checks(toy_check(Leaky, [book_frame(5, None), book_frame(3, 5)]))


def test_swallowed_garbage_and_non_bool_returns_are_caught() -> None:
    class Swallows(ToyProtocol):
        def on_message(self, data: bytes, recv_ts: int, out: Output) -> bool:
            try:
                return super().on_message(data, recv_ts, out)
            except ValueError:
                return False

    class KeyErrors(ToyProtocol):
        def on_message(self, data: bytes, recv_ts: int, out: Output) -> bool:
            if not data.startswith(b'{"type"'):
                raise KeyError("type")
            return super().on_message(data, recv_ts, out)

    class ReturnsNone(ToyProtocol):
        def on_message(self, data: bytes, recv_ts: int, out: Output) -> bool:
            super().on_message(data, recv_ts, out)
            return None  # type: ignore[return-value]

    for protocol_cls, expected in [
        (Swallows, "garbage"),
        (KeyErrors, "garbage"),
        (ReturnsNone, "decode"),
    ]:

        class Variant(ToyFeed):
            proto: ClassVar[type[ToyProtocol]] = protocol_cls

            def protocol(self, plan: ConnectionPlan, connection: str) -> FeedProtocol:
                return self.proto(self, plan, connection)

        report = toy_check(Variant, GOOD_FRAMES)
        assert expected in checks(report), (protocol_cls.__name__, report.summary())
    swallowed = [v for v in toy_check(Variant, GOOD_FRAMES).violations if v.check == "decode"]
    assert len(swallowed) == 4  # every frame's None return, garbage aside


def test_bad_records_are_caught() -> None:
    class BadRecords(ToyProtocol):
        def trade(self, t: ToyTrade, recv_ts: int) -> Trade:
            good = super().trade(t, recv_ts)
            return Trade(
                exchange="other",  # not the feed id
                symbol="BTCUSD",  # not normalized / not configured
                ts=t.ts // 1_000_000,  # ms, not ns
                recv_ts=recv_ts + 1,  # not the frame's receive time
                price=float(good.price),  # type: ignore[arg-type]  # a float, not a Decimal
                size=Decimal(0),
                side="taker",  # type: ignore[arg-type]
                id="",
            )

    class Bad(ToyFeed):
        def protocol(self, plan: ConnectionPlan, connection: str) -> FeedProtocol:
            return BadRecords(self, plan, connection)

    details = " | ".join(v.detail for v in toy_check(Bad, GOOD_FRAMES).violations)
    for needle in [
        "exchange 'other'",
        "not a configured symbol",
        "not a plausible ns time",
        "recv_ts",
        "price must be a finite Decimal",
        "size 0 must be >0",
        "side 'taker'",
        "id must be a non-empty str",
    ]:
        assert needle in details, needle


def test_class_symbols_and_subscription_limits_are_checked() -> None:
    class BadClass(ToyFeed):
        id: ClassVar[str] = "Bad Id"
        channels: ClassVar[frozenset[str]] = frozenset({"trades", "orderbook"})

    assert {"class.id", "class.channels"} <= checks(toy_check(BadClass, GOOD_FRAMES))

    class NoRoundTrip(ToyFeed):
        def normalize_symbol(self, exchange_symbol: str) -> str:
            return exchange_symbol.replace("_", "/")

    assert "symbols" in checks(toy_check(NoRoundTrip, []))

    class OneBigSubscribe(ToyProtocol):
        def subscriptions(self) -> list[SubscribeRequest]:
            return [SubscribeRequest("1", self.plan.streams, b"sub")]

    class Greedy(ToyFeed):
        def protocol(self, plan: ConnectionPlan, connection: str) -> FeedProtocol:
            return OneBigSubscribe(self, plan, connection)

    symbols = [f"C{i}-USD" for i in range(4)]  # 8 streams: over 3 per message
    report = check_feed(
        Greedy, [], symbols=["BTC-USD"], channels=["trades", "l2_book"], plan_symbols=symbols
    )
    assert "subscriptions" in checks(report), report.summary()

    class OnePlan(ToyFeed):
        def plan(self) -> list[ConnectionPlan]:
            return [ConnectionPlan(0, tuple(self.streams()))]  # ignores the 10-stream limit

    many = [f"C{i}-USD" for i in range(6)]  # 12 streams
    report = check_feed(OnePlan, [], symbols=["BTC-USD"], channels=["trades"], plan_symbols=many)
    assert report.ok  # 6 streams fit
    report = check_feed(
        OnePlan, [], symbols=["BTC-USD"], channels=["trades", "l2_book"], plan_symbols=many
    )
    assert "plan" in checks(report)


def test_frames_that_produce_nothing_are_flagged() -> None:
    report = toy_check(ToyFeed, [book_frame(2, 1)])  # a delta with no snapshot: dropped
    assert "replay" in checks(report)
    assert toy_check(ToyFeed, [book_frame(2, 1)], require_records=False).ok


def test_frame_errors_are_violations_unless_allowed() -> None:
    frames = [*GOOD_FRAMES, '{"type":"mystery"}']
    assert "decode" in checks(toy_check(ToyFeed, frames))
    report = toy_check(ToyFeed, frames, allow_frame_errors=True)
    assert report.ok and [e.index for e in report.frame_errors] == [4]


def test_assert_conforms_raises_with_the_violations() -> None:
    with pytest.raises(AssertionError, match=r"garbage"):

        class Swallows(ToyProtocol):
            def on_message(self, data: bytes, recv_ts: int, out: Output) -> bool:
                return False

        class Quiet(ToyFeed):
            def protocol(self, plan: ConnectionPlan, connection: str) -> FeedProtocol:
                return Swallows(self, plan, connection)

        assert_conforms(Quiet, [], symbols=["BTC-USD"], channels=["trades"])


@pytest.mark.parametrize(
    "record",
    [
        Ticker(exchange="toy", symbol="BTC-USD", ts=T0, recv_ts=0, last=Decimal("-1")),
        Funding(exchange="toy", symbol="BTC-USD", ts=T0, recv_ts=0, rate=Decimal("NaN")),
        OpenInterest(exchange="toy", symbol="BTC-USD", ts=T0, recv_ts=0, open_interest=Decimal(-5)),
        Liquidation(
            exchange="toy",
            symbol="BTC-USD",
            ts=T0,
            recv_ts=0,
            side="sell",
            price=Decimal(0),
            size=Decimal(1),
        ),
        Candle(
            exchange="toy",
            symbol="BTC-USD",
            ts=T0,
            recv_ts=0,
            interval="1m",
            start=T0,
            end=T0 + 1,
            open=Decimal(5),
            high=Decimal(4),
            low=Decimal(3),
            close=Decimal(4),
            volume=Decimal(1),
            closed=True,
        ),
        BBO(
            exchange="toy",
            symbol="BTC-USD",
            ts=T0,
            recv_ts=0,
            bid_price=Decimal(1),
            bid_size=Decimal(-1),
            ask_price=Decimal(2),
            ask_size=Decimal(1),
        ),
    ],
    ids=lambda r: type(r).__name__,
)
def test_each_record_type_is_validated(record: Any) -> None:
    class Emits(ToyProtocol):
        def on_message(self, data: bytes, recv_ts: int, out: Output) -> bool:
            super().on_message(data, recv_ts, out)
            out.records.append(msgspec.structs.replace(record, recv_ts=recv_ts))
            return True

    class Feed_(ToyFeed):
        def protocol(self, plan: ConnectionPlan, connection: str) -> FeedProtocol:
            return Emits(self, plan, connection)

    report = toy_check(Feed_, [trade_frame()])
    assert checks(report) == {"record"}, report.summary()
