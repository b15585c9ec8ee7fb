"""OKX v5 public feed: subscriptions, per-arg acks, decoding and verified books.

Channels -> OKX channels (one subscription arg each):

==============  =======================  ==================================================
streamkit       OKX channel              notes
==============  =======================  ==================================================
trades          ``trades``               ``side`` is the taker's side
bbo             ``bbo-tbt``              best level tick by tick (``tickers`` also carries a
                                         best bid/ask, but only as a by-product of 24 h stats)
l2_book         ``books``                400 levels: snapshot + updates, CRC32 checksum of
                                         the top 25, ``seqId``/``prevSeqId`` chain when sent
ticker          ``tickers``
funding         ``funding-rate``         swaps only
open_interest   ``open-interest``        swaps, futures, options
liquidations    ``liquidation-orders``   subscribed per ``instType`` (SWAP / FUTURES) and
                                         filtered to the configured symbols
==============  =======================  ==================================================

Acks: OKX acknowledges every *arg* of a subscribe message separately
(``{"event":"subscribe","arg":{...}}``) and, in the live captures, without echoing a request
id. Each :class:`~streamkit.feed.SubscribeRequest` is therefore acked once all of its args
are. Errors (``{"event":"error","code":..,"msg":..}``) carry no arg: they are attributed by
the request id when the server echoes one (current servers do), else by the channel and
instId named in the message, else to the oldest request still waiting.

Keepalive: OKX drops a connection after 30 s without traffic; the client sends the text
``ping`` every 20 s and OKX answers the text ``pong``.

Resync: a book that fails its checksum or sequence chain is resubscribed on its own
(``unsubscribe`` + ``subscribe`` of that instId's ``books`` arg): OKX then sends a fresh
snapshot. Each resync costs two of the 480 subscribe/unsubscribe requests per hour a
connection may send.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import ClassVar

from streamkit.book import BookSync, PriceInterner
from streamkit.feed import (
    Action,
    ConnectionPlan,
    DecodeError,
    Feed,
    FeedProtocol,
    Heartbeat,
    Limits,
    Output,
    Reconnect,
    Send,
    Stream,
    SubscribeRequest,
)
from streamkit.model import (
    BBO,
    Funding,
    Liquidation,
    OpenInterest,
    Status,
    StatusEvent,
    Ticker,
    Trade,
)
from streamkit_okx import schemas, symbols
from streamkit_okx.checksum import CachedChecksum
from streamkit_okx.schemas import Arg, Envelope

CHANNELS: dict[str, str] = {
    "trades": "trades",
    "bbo": "bbo-tbt",
    "l2_book": "books",
    "ticker": "tickers",
    "funding": "funding-rate",
    "open_interest": "open-interest",
    "liquidations": "liquidation-orders",
}
"""streamkit channel -> OKX channel."""

INST_TYPES: dict[str, frozenset[str]] = {
    "funding": frozenset({"SWAP"}),
    "open_interest": frozenset({"SWAP", "FUTURES", "OPTION"}),
    "liquidations": frozenset({"SWAP", "FUTURES"}),
}
"""Channels that exist only for some instrument types (the others exist for every type)."""

MAX_REQUEST_BYTES = 64 * 1024
"""OKX: the channels of one request may total at most 64 KB."""

ArgKey = tuple[str, str]
"""``(OKX channel, instId)``, or ``(channel, instType)`` for ``liquidation-orders``."""

_MS = 1_000_000  # OKX times are ms; records carry ns
_PONG = b"pong"
_SERVICE_UPGRADE = "64008"  # notice: "the connection will soon be closed for a service upgrade"
_ERROR_ARG = re.compile(r"channel:\s*([\w-]+)\s*,\s*inst(?:Id|Type):\s*([\w-]+)")


def arg_key(stream: Stream) -> ArgKey:
    """The OKX subscription arg of a stream, as a hashable key."""
    channel, _, target = stream.name.partition(":")
    return channel, target


def arg_json(key: ArgKey) -> dict[str, str]:
    channel, target = key
    field = "instType" if channel == "liquidation-orders" else "instId"
    return {"channel": channel, field: target}


def request_payload(op: str, args: list[ArgKey], request_id: str | None = None) -> bytes:
    """A ``subscribe``/``unsubscribe`` message. ``id`` is optional in OKX's protocol."""
    body: dict[str, object] = {"op": op, "args": [arg_json(a) for a in args]}
    if request_id is not None:
        body = {"id": request_id, **body}
    return json.dumps(body, separators=(",", ":")).encode()


class OkxFeed(Feed):
    """OKX v5 public market data (spot, swaps, dated futures, options)."""

    id: ClassVar[str] = "okx"
    channels: ClassVar[frozenset[str]] = frozenset(CHANNELS)
    default_url: ClassVar[str] = "wss://ws.okx.com:8443/ws/v5/public"
    limits: ClassVar[Limits] = Limits(
        # OKX caps requests, not args per connection; 200 args keep one connection's
        # subscription to a single message (~12 KB) and its resync budget meaningful.
        max_streams_per_connection=200,
        max_streams_per_message=200,
        # 480 subscribe/unsubscribe/login requests per hour per connection.
        max_messages_per_second=480 / 3600,
        # 3 connection requests per second per IP.
        max_connects=3,
        connect_window=1.0,
    )
    heartbeat: ClassVar[Heartbeat] = Heartbeat(interval=20.0, payload=b"ping")

    def exchange_symbol(self, symbol: str) -> str:
        return symbols.to_exchange(symbol)

    def normalize_symbol(self, exchange_symbol: str) -> str:
        return symbols.to_normalized(exchange_symbol)

    def stream_name(self, channel: str, symbol: str) -> str:
        """``<OKX channel>:<instId>``, or ``liquidation-orders:<instType>``."""
        okx_channel = CHANNELS[channel]
        if channel == "liquidations":
            return f"{okx_channel}:{symbols.inst_type(symbol)}"
        return f"{okx_channel}:{symbols.to_exchange(symbol)}"

    def check(self) -> list[tuple[str, str]]:
        problems = super().check()
        if problems:
            return problems
        for i, symbol in enumerate(self.config.symbols):
            kind = symbols.inst_type(symbol)
            for channel in self.config.channels:
                allowed = INST_TYPES.get(channel)
                if allowed is not None and kind not in allowed:
                    problems.append(
                        (
                            f"symbols[{i}]",
                            f"okx has no {channel!r} for {symbol} ({kind}); it has "
                            f"{channel} for {', '.join(sorted(allowed))} instruments",
                        )
                    )
        return problems

    def protocol(self, plan: ConnectionPlan, connection: str) -> OkxProtocol:
        return OkxProtocol(self, plan, connection)


class OkxProtocol(FeedProtocol):
    """One connection to ``/ws/v5/public``."""

    def __init__(self, feed: Feed, plan: ConnectionPlan, connection: str) -> None:
        super().__init__(feed, plan, connection)
        # (OKX channel, instId) -> normalized symbol: one dict lookup routes each data frame.
        self.routes: dict[ArgKey, str] = {}
        # Liquidations arrive per instType; only these instIds are published.
        self.liquidation_symbols: dict[str, str] = {}
        self.books: dict[str, BookSync] = {}
        # instId -> its books' price strings -> shared Decimals (one cache per book).
        self.prices: dict[str, PriceInterner] = {}
        for stream in plan.streams:
            inst_id = feed.exchange_symbol(stream.symbol)
            if stream.channel == "liquidations":
                self.liquidation_symbols[inst_id] = stream.symbol
            else:
                self.routes[(CHANNELS[stream.channel], inst_id)] = stream.symbol
            if stream.channel == "l2_book":
                self.books[inst_id] = BookSync(
                    feed.id, stream.symbol, connection, checksum=CachedChecksum()
                )
                self.prices[inst_id] = PriceInterner()
        self.pending: dict[str, set[ArgKey]] = {}
        """Request key -> its args OKX has not acknowledged yet."""
        self.request_of: dict[ArgKey, str] = {}
        self._handlers: dict[str, Callable[[Envelope, Arg, int, Output], None]] = {
            "trades": self._on_trades,
            "bbo-tbt": self._on_bbo,
            "books": self._on_books,
            "tickers": self._on_ticker,
            "funding-rate": self._on_funding,
            "open-interest": self._on_open_interest,
            "liquidation-orders": self._on_liquidations,
        }

    def url(self) -> str:
        return self.feed.url

    # --- subscribing -----------------------------------------------------------------------

    def subscriptions(self) -> list[SubscribeRequest]:
        """One arg per distinct (channel, instId); several symbols' liquidations share one
        ``instType`` arg. Args are packed into as few messages as the count and 64 KB byte
        limits allow."""
        streams_of: dict[ArgKey, list[Stream]] = {}
        for stream in self.plan.streams:
            streams_of.setdefault(arg_key(stream), []).append(stream)
        per_message = self.feed.limits.max_streams_per_message
        # Bytes of a request without args (with room for a long id), then each arg's JSON
        # plus its separating comma: the payload's size, counted without re-encoding it.
        overhead = len(request_payload("subscribe", [], "x" * 12))
        groups: list[list[ArgKey]] = [[]]
        size = overhead
        for key in streams_of:
            arg_size = len(json.dumps(arg_json(key), separators=(",", ":"))) + 1
            group = groups[-1]
            if group and (len(group) >= per_message or size + arg_size > MAX_REQUEST_BYTES):
                groups.append([key])
                size = overhead + arg_size
            else:
                group.append(key)
                size += arg_size
        self.pending.clear()
        self.request_of.clear()
        requests = []
        for n, group in enumerate(g for g in groups if g):
            request = str(n + 1)
            self.pending[request] = set(group)
            for arg in group:
                self.request_of[arg] = request
            streams = tuple(s for arg in group for s in streams_of[arg])
            payload = request_payload("subscribe", group, request)
            requests.append(SubscribeRequest(request, streams, payload))
        return requests

    def resync(self, symbol: str, reason: str) -> list[Action]:
        """Resubscribe just this symbol's ``books``; OKX answers with a new snapshot."""
        book = [("books", self.feed.exchange_symbol(symbol))]
        return [
            Send(request_payload("unsubscribe", book)),
            Send(request_payload("subscribe", book)),
        ]

    # --- decoding --------------------------------------------------------------------------

    def on_message(self, data: bytes, recv_ts: int, out: Output) -> bool:
        if data == _PONG:
            out.pong = True
            return False
        env = schemas.envelope_decoder.decode(data)
        if env.event is not None:
            self._on_event(env, recv_ts, out)
            return False
        arg = env.arg
        if arg is None or not env.data:
            raise DecodeError("neither an event nor channel data")
        handler = self._handlers.get(arg.channel)
        if handler is None:
            raise DecodeError(f"data for an unknown channel {arg.channel!r}")
        handler(env, arg, recv_ts, out)
        return True

    def _symbol(self, channel: str, arg: Arg) -> str:
        symbol = self.routes.get((channel, arg.inst_id or ""))
        if symbol is None:
            raise DecodeError(f"{channel} data for {arg.inst_id!r}, not subscribed here")
        return symbol

    def _on_trades(self, env: Envelope, arg: Arg, recv_ts: int, out: Output) -> None:
        symbol = self._symbol("trades", arg)
        for t in schemas.trades_decoder.decode(env.data):
            out.records.append(
                Trade(
                    exchange=self.exchange,
                    symbol=symbol,
                    ts=t.ts * _MS,
                    recv_ts=recv_ts,
                    price=t.px,
                    size=t.sz,
                    side=t.side,
                    id=t.trade_id,
                )
            )

    def _on_bbo(self, env: Envelope, arg: Arg, recv_ts: int, out: Output) -> None:
        symbol = self._symbol("bbo-tbt", arg)
        for b in schemas.bbo_decoder.decode(env.data):
            if not b.bids or not b.asks:
                continue  # one side empty: there is no best bid *and* offer to publish
            out.records.append(
                BBO(
                    exchange=self.exchange,
                    symbol=symbol,
                    ts=b.ts * _MS,
                    recv_ts=recv_ts,
                    bid_price=b.bids[0][0],
                    bid_size=b.bids[0][1],
                    ask_price=b.asks[0][0],
                    ask_size=b.asks[0][1],
                )
            )

    def _on_books(self, env: Envelope, arg: Arg, recv_ts: int, out: Output) -> None:
        """Raises ``decimal.InvalidOperation`` for a level price that is not a number (the
        actor counts it as a decode error, like msgspec's)."""
        inst_id = arg.inst_id or ""
        sync = self.books.get(inst_id)
        if sync is None:
            raise DecodeError(f"books data for {arg.inst_id!r}, not subscribed here")
        snapshot = env.action == "snapshot"
        if not snapshot and env.action != "update":
            raise DecodeError(f"books frame with action {env.action!r}")
        prices = self.prices[inst_id]
        # Every entry's prices are interned before the first entry reaches the book, so a
        # malformed price fails the whole frame, as a msgspec error would.
        entries = [
            (
                d,
                prices((level[0], level[1]) for level in d.bids),
                prices((level[0], level[1]) for level in d.asks),
            )
            for d in schemas.book_decoder.decode(env.data)
        ]
        for d, bids, asks in entries:
            if snapshot:
                sync.snapshot(
                    bids,
                    asks,
                    recv_ts=recv_ts,
                    out=out,
                    seq=d.seq_id,
                    ts=d.ts * _MS,
                    checksum=d.checksum,
                )
            else:
                # An unchanged book is re-sent with seqId == prevSeqId and no levels: the
                # shared engine drops it as a duplicate (it covers nothing new).
                sync.delta(
                    bids,
                    asks,
                    recv_ts=recv_ts,
                    out=out,
                    seq=d.seq_id,
                    prev_seq=d.prev_seq_id,
                    ts=d.ts * _MS,
                    checksum=d.checksum,
                )

    def _on_ticker(self, env: Envelope, arg: Arg, recv_ts: int, out: Output) -> None:
        symbol = self._symbol("tickers", arg)
        spot = symbols.inst_type(symbol) == "SPOT"
        for t in schemas.ticker_decoder.decode(env.data):
            out.records.append(
                Ticker(
                    exchange=self.exchange,
                    symbol=symbol,
                    ts=t.ts * _MS,
                    recv_ts=recv_ts,
                    last=_dec(t.last),
                    bid=_dec(t.bid_px),
                    ask=_dec(t.ask_px),
                    open_24h=_dec(t.open24h),
                    high_24h=_dec(t.high24h),
                    low_24h=_dec(t.low24h),
                    # spot: vol24h is base, volCcy24h quote; derivatives: vol24h counts
                    # contracts and volCcy24h is the base-currency volume.
                    volume_24h=_dec(t.vol24h if spot else t.vol_ccy24h),
                    quote_volume_24h=_dec(t.vol_ccy24h) if spot else None,
                )
            )

    def _on_funding(self, env: Envelope, arg: Arg, recv_ts: int, out: Output) -> None:
        symbol = self._symbol("funding-rate", arg)
        for f in schemas.funding_decoder.decode(env.data):
            rate = _dec(f.funding_rate)
            if rate is None:
                continue
            out.records.append(
                Funding(
                    exchange=self.exchange,
                    symbol=symbol,
                    ts=_ms_to_ns(f.ts),
                    recv_ts=recv_ts,
                    rate=rate,
                    predicted_rate=_dec(f.next_funding_rate),
                    # fundingRate is the rate that settles at fundingTime.
                    next_funding_ts=_ms_to_ns(f.funding_time),
                )
            )

    def _on_open_interest(self, env: Envelope, arg: Arg, recv_ts: int, out: Output) -> None:
        symbol = self._symbol("open-interest", arg)
        for o in schemas.open_interest_decoder.decode(env.data):
            out.records.append(
                OpenInterest(
                    exchange=self.exchange,
                    symbol=symbol,
                    ts=o.ts * _MS,
                    recv_ts=recv_ts,
                    open_interest=o.oi,
                )
            )

    def _on_liquidations(self, env: Envelope, arg: Arg, recv_ts: int, out: Output) -> None:
        for entry in schemas.liquidation_decoder.decode(env.data):
            symbol = self.liquidation_symbols.get(entry.inst_id)
            if symbol is None:
                continue  # the channel carries every instrument of the type
            for d in entry.details:
                out.records.append(
                    Liquidation(
                        exchange=self.exchange,
                        symbol=symbol,
                        ts=d.ts * _MS,
                        recv_ts=recv_ts,
                        side=d.side,
                        price=d.bk_px,
                        size=d.sz,
                    )
                )

    # --- events ----------------------------------------------------------------------------

    def _on_event(self, env: Envelope, recv_ts: int, out: Output) -> None:
        event = env.event
        if event == "subscribe":
            if env.arg is None:
                raise DecodeError("subscribe ack without an arg")
            self._acked((env.arg.channel, env.arg.inst_id or env.arg.inst_type or ""), out)
        elif event == "unsubscribe":
            pass  # the first half of a book resync
        elif event == "error":
            self._rejected(env, recv_ts, out)
        elif event == "notice":
            out.records.append(self._status(f"notice {env.code}: {env.msg}", recv_ts))
            if env.code == _SERVICE_UPGRADE:
                out.actions.append(Reconnect(f"OKX notice {env.code}: {env.msg}"))
        else:
            raise DecodeError(f"unknown event {event!r}")

    def _acked(self, key: ArgKey, out: Output) -> None:
        request = self.request_of.get(key)
        waiting = self.pending.get(request) if request is not None else None
        if request is None or waiting is None or key not in waiting:
            return  # a resync's resubscription, or a repeated ack: nothing to settle
        waiting.discard(key)
        if not waiting:
            del self.pending[request]
            out.acks.append(request)

    def _rejected(self, env: Envelope, recv_ts: int, out: Output) -> None:
        reason = f"code {env.code}: {env.msg}"
        request = env.id if env.id in self.pending else None
        if request is None and env.msg:
            named = _ERROR_ARG.search(env.msg)
            if named is not None:
                request = self.request_of.get((named.group(1), named.group(2)))
        if request is None and self.pending:
            request = next(iter(self.pending))  # the oldest request still waiting
        if request is not None and request in self.pending:
            del self.pending[request]
            out.rejects.append((request, reason))
        else:
            out.records.append(self._status(reason, recv_ts))

    def _status(self, detail: str, recv_ts: int) -> Status:
        return Status(
            exchange=self.exchange,
            symbol=None,
            ts=None,
            recv_ts=recv_ts,
            event=StatusEvent.ERROR,
            detail=detail,
            connection=self.connection,
        )


def _dec(text: str) -> Decimal | None:
    """OKX's optional decimal strings: ``""`` means absent."""
    if not text:
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        raise DecodeError(f"not a decimal: {text!r}") from None


def _ms_to_ns(text: str) -> int | None:
    if not text:
        return None
    if not text.isdigit():
        raise DecodeError(f"not a millisecond timestamp: {text!r}")
    return int(text) * _MS


__all__ = ["CHANNELS", "OkxFeed", "OkxProtocol"]
