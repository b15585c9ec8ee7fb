"""examplex wire formats: every server message is a JSON object tagged by ``type``.

One msgspec tagged union decodes any frame straight from bytes into the right Struct (no
intermediate dict); a frame that matches none of them raises ``msgspec.ValidationError``,
which the connection actor reports as a ``decode_error``. Prices and sizes are JSON strings
and decode into Decimal, exact. Times are milliseconds since the epoch.

Server -> client::

    {"type":"ack","id":1}
    {"type":"error","id":1,"message":"unknown symbol"}
    {"type":"pong"}
    {"type":"trade","symbol":"BTC_USD","id":"t1","price":"37000.5","qty":"0.01",
     "taker":"buy","ts":1700000000123}
    {"type":"bbo","symbol":"BTC_USD","bid":"37000","bid_qty":"1.5","ask":"37001",
     "ask_qty":"2","ts":1700000000123}
    {"type":"book","symbol":"BTC_USD","action":"snapshot","seq":100,"prev_seq":null,
     "bids":[["37000","1.5"]],"asks":[["37001","2"]],"ts":1700000000123}
    {"type":"book","symbol":"BTC_USD","action":"update","seq":101,"prev_seq":100,
     "bids":[["37000","0"]],"asks":[],"ts":1700000000124}

Client -> server: ``{"op":"subscribe","id":1,"args":["trades.BTC_USD","book.BTC_USD"]}``,
``{"op":"unsubscribe","args":[...]}``, ``{"op":"ping"}``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec

Level = tuple[Decimal, Decimal]


class Ack(msgspec.Struct, tag="ack", tag_field="type", gc=False):
    id: int


class Error(msgspec.Struct, tag="error", tag_field="type", gc=False):
    message: str
    id: int | None = None


class Pong(msgspec.Struct, tag="pong", tag_field="type", gc=False):
    pass


class TradeMsg(msgspec.Struct, tag="trade", tag_field="type", gc=False):
    symbol: str
    id: str
    price: Decimal
    qty: Decimal
    taker: Literal["buy", "sell"]
    ts: int


class BboMsg(msgspec.Struct, tag="bbo", tag_field="type", gc=False):
    symbol: str
    bid: Decimal
    bid_qty: Decimal
    ask: Decimal
    ask_qty: Decimal
    ts: int


class BookMsg(msgspec.Struct, tag="book", tag_field="type", gc=False):
    """A full book (``action="snapshot"``) or absolute sizes at changed levels (size 0
    deletes). ``prev_seq`` is the ``seq`` of the previous book message for the symbol."""

    symbol: str
    action: Literal["snapshot", "update"]
    seq: int
    bids: list[Level]
    asks: list[Level]
    ts: int
    prev_seq: int | None = None


Message = Ack | Error | Pong | TradeMsg | BboMsg | BookMsg

# Built once: building a decoder compiles its decoding plan.
message_decoder = msgspec.json.Decoder(Message)
