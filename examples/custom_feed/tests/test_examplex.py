"""Conformance of the examplex plugin on handwritten frames (replace them with frames you
captured from your venue: recorded bytes are the best test data a plugin can have)."""

from __future__ import annotations

from decimal import Decimal

from streamkit.model import Book, Status, StatusEvent, Trade
from streamkit.testing import assert_conforms
from streamkit_example import ExampleXFeed

FRAMES = [
    '{"type":"ack","id":1}',
    '{"type":"trade","symbol":"BTC_USD","id":"t1","price":"37000.5","qty":"0.01",'
    '"taker":"buy","ts":1700000000123}',
    '{"type":"bbo","symbol":"BTC_USD","bid":"37000","bid_qty":"1.5","ask":"37001",'
    '"ask_qty":"2","ts":1700000000124}',
    '{"type":"book","symbol":"BTC_USD","action":"snapshot","seq":100,"prev_seq":null,'
    '"bids":[["37000","1.5"],["36999","3"]],"asks":[["37001","2"]],"ts":1700000000125}',
    '{"type":"book","symbol":"BTC_USD","action":"update","seq":101,"prev_seq":100,'
    '"bids":[["37000","0"]],"asks":[],"ts":1700000000126}',
    # seq 102 never arrived: a gap. No book may be published until the next snapshot.
    '{"type":"book","symbol":"BTC_USD","action":"update","seq":103,"prev_seq":102,'
    '"bids":[["36998","1"]],"asks":[],"ts":1700000000127}',
    '{"type":"book","symbol":"BTC_USD","action":"snapshot","seq":110,"prev_seq":null,'
    '"bids":[["36999","3"]],"asks":[["37001","2"]],"ts":1700000000128}',
    '{"type":"pong"}',
    '{"type":"trade","symbol":"ETH_USD_PERP","id":"t2","price":"2000","qty":"1",'
    '"taker":"sell","ts":1700000000129}',
]


def test_examplex_conforms() -> None:
    report = assert_conforms(
        ExampleXFeed,
        FRAMES,
        symbols=["BTC-USD", "ETH-USD-PERP"],
        channels=["trades", "bbo", "l2_book"],
    )
    trades = report.of_type(Trade)
    assert [(t.symbol, t.price, t.side) for t in trades] == [
        ("BTC-USD", Decimal("37000.5"), "buy"),
        ("ETH-USD-PERP", Decimal("2000"), "sell"),
    ]
    books = report.of_type(Book)
    assert [(b.snapshot, b.seq) for b in books] == [(True, 100), (False, 101), (True, 110)]
    events = [s.event for s in report.of_type(Status)]
    assert events == [StatusEvent.GAP, StatusEvent.RESYNC]
    # the gap resubscribed just that book
    assert [s.payload for s in report.sends] == [
        b'{"op":"unsubscribe","args":["book.BTC_USD"]}',
        b'{"op":"subscribe","args":["book.BTC_USD"],"id":2}',  # after subscription 1
    ]
