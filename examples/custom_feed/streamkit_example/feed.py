"""examplex feed: subscriptions, heartbeats, decoding, and verified books.

Channels -> venue topics: ``trades`` -> ``trades.<SYM>``, ``bbo`` -> ``bbo.<SYM>``,
``l2_book`` -> ``book.<SYM>`` (a snapshot after subscribing, then updates chained by
``seq``/``prev_seq``). Keepalive: the client sends ``{"op":"ping"}`` every 15 s and the venue
answers ``{"type":"pong"}``. A book that fails verification is resynchronised by
resubscribing just that symbol's book topic (the venue sends a fresh snapshot).
"""

from __future__ import annotations

import json
from typing import ClassVar

from streamkit.book import BookSync
from streamkit.feed import (
    Action,
    ConnectionPlan,
    DecodeError,
    Feed,
    FeedProtocol,
    Heartbeat,
    Limits,
    Output,
    Send,
    SubscribeRequest,
    chunked,
)
from streamkit.model import BBO, Status, StatusEvent, Trade
from streamkit_example import schemas, symbols

TOPIC = {"trades": "trades", "bbo": "bbo", "l2_book": "book"}
"""Normalized channel -> examplex topic prefix."""

_MS = 1_000_000  # examplex times are ms; records carry ns


class ExampleXFeed(Feed):
    """Public market data of the imaginary venue examplex."""

    id: ClassVar[str] = "examplex"
    channels: ClassVar[frozenset[str]] = frozenset(TOPIC)
    default_url: ClassVar[str] = "wss://ws.examplex.invalid/v1"
    limits: ClassVar[Limits] = Limits(
        max_streams_per_connection=50,
        max_streams_per_message=10,
        max_messages_per_second=5.0,
        max_connects=10,
        connect_window=60.0,
    )
    heartbeat: ClassVar[Heartbeat] = Heartbeat(interval=15.0, payload=b'{"op":"ping"}')

    def exchange_symbol(self, symbol: str) -> str:
        return symbols.to_exchange(symbol)

    def normalize_symbol(self, exchange_symbol: str) -> str:
        return symbols.to_normalized(exchange_symbol)

    def stream_name(self, channel: str, symbol: str) -> str:
        return f"{TOPIC[channel]}.{self.exchange_symbol(symbol)}"

    def protocol(self, plan: ConnectionPlan, connection: str) -> ExampleXProtocol:
        return ExampleXProtocol(self, plan, connection)


class ExampleXProtocol(FeedProtocol):
    """The state of one examplex connection attempt (a fresh one after every reconnect)."""

    def __init__(self, feed: Feed, plan: ConnectionPlan, connection: str) -> None:
        super().__init__(feed, plan, connection)
        self.topics = {s.name for s in plan.streams}
        self.books = {
            s.symbol: BookSync(feed.id, s.symbol, connection)
            for s in plan.streams
            if s.channel == "l2_book"
        }
        self._next_id = 1

    def url(self) -> str:
        return self.feed.url

    def _request_id(self) -> int:
        rid = self._next_id
        self._next_id += 1
        return rid

    def subscriptions(self) -> list[SubscribeRequest]:
        requests = []
        for group in chunked(self.plan.streams, self.feed.limits.max_streams_per_message):
            rid = self._request_id()
            payload = _op("subscribe", [s.name for s in group], rid)
            requests.append(SubscribeRequest(str(rid), group, payload))
        return requests

    def on_message(self, data: bytes, recv_ts: int, out: Output) -> bool:
        msg = schemas.message_decoder.decode(data)  # raises on anything that is not ours
        if isinstance(msg, schemas.TradeMsg):
            symbol = self._symbol("trades", msg.symbol)
            out.records.append(
                Trade(
                    exchange=self.exchange,
                    symbol=symbol,
                    ts=msg.ts * _MS,
                    recv_ts=recv_ts,
                    price=msg.price,
                    size=msg.qty,
                    side=msg.taker,  # examplex reports the taker's side, as streamkit does
                    id=msg.id,
                )
            )
            return True
        if isinstance(msg, schemas.BboMsg):
            symbol = self._symbol("bbo", msg.symbol)
            out.records.append(
                BBO(
                    exchange=self.exchange,
                    symbol=symbol,
                    ts=msg.ts * _MS,
                    recv_ts=recv_ts,
                    bid_price=msg.bid,
                    bid_size=msg.bid_qty,
                    ask_price=msg.ask,
                    ask_size=msg.ask_qty,
                )
            )
            return True
        if isinstance(msg, schemas.BookMsg):
            self._on_book(msg, recv_ts, out)
            return True
        if isinstance(msg, schemas.Pong):
            out.pong = True  # answers our heartbeat: the actor's pong timer resets
        elif isinstance(msg, schemas.Ack):
            out.acks.append(str(msg.id))
        elif msg.id is not None:
            out.rejects.append((str(msg.id), msg.message))
        else:
            out.records.append(
                Status(
                    exchange=self.exchange,
                    symbol=None,
                    ts=None,
                    recv_ts=recv_ts,
                    event=StatusEvent.ERROR,
                    detail=msg.message,
                    connection=self.connection,
                )
            )
        return False  # control messages do not prove the data stream is alive

    def _symbol(self, channel: str, venue_symbol: str) -> str:
        """The normalized symbol of a data message, which must be one we subscribed."""
        if f"{TOPIC[channel]}.{venue_symbol}" not in self.topics:
            raise DecodeError(f"{channel} data for {venue_symbol!r}, which is not subscribed")
        return self.feed.normalize_symbol(venue_symbol)

    def _on_book(self, msg: schemas.BookMsg, recv_ts: int, out: Output) -> None:
        sync = self.books[self._symbol("l2_book", msg.symbol)]
        ts = msg.ts * _MS
        if msg.action == "snapshot":
            sync.snapshot(msg.bids, msg.asks, seq=msg.seq, ts=ts, recv_ts=recv_ts, out=out)
        else:
            # BookSync checks prev_seq against the book, publishes only verified states, and
            # on a gap reports gap + resync and emits ResyncBook (answered by resync below).
            sync.delta(
                msg.bids,
                msg.asks,
                seq=msg.seq,
                prev_seq=msg.prev_seq,
                ts=ts,
                recv_ts=recv_ts,
                out=out,
            )

    def resync(self, symbol: str, reason: str) -> list[Action]:
        # examplex sends a fresh snapshot on (re)subscription: resubscribe this book only,
        # leaving every other stream of the connection undisturbed.
        topic = self.feed.stream_name("l2_book", symbol)
        return [
            Send(_op("unsubscribe", [topic])),
            Send(_op("subscribe", [topic], self._request_id())),
        ]


def _op(op: str, args: list[str], rid: int | None = None) -> bytes:
    body: dict[str, object] = {"op": op, "args": args}
    if rid is not None:
        body["id"] = rid
    return json.dumps(body, separators=(",", ":")).encode()
