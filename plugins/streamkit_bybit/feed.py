"""Bybit v5 public feed (spot and linear): subscriptions, acks, decoding and verified books.

One exchange id, ``bybit``, for both categories. A feed streams one category, because Bybit
serves each on its own endpoint and spells spot pairs and USDT perpetuals the same way
(``BTCUSDT``): ``options: {category: spot|linear}``; without the option the category follows
from the symbols (``BTC-USDT`` spot, ``BTC-USDT-PERP`` / ``BTC-USDT-251226`` linear). Mixing
both in one feed is a config error: configure two ``bybit`` feeds with different ``name`` s.
The default URL is ``wss://stream.bybit.com/v5/public/<category>``.

Channels -> topics:

==============  ==========================  ===============================================
streamkit       Bybit topic                 notes
==============  ==========================  ===============================================
trades          ``publicTrade.{s}``         ``S`` is the taker's side
bbo             ``orderbook.1.{s}``         level-1 snapshots (spot tickers have no bid/ask)
l2_book         ``orderbook.50.{s}``        snapshot + deltas, ``u`` must be consecutive,
                                            ``u == 1`` overwrites the book; kept to 50 levels
ticker          ``tickers.{s}``             linear deltas are merged into the last state
funding         ``tickers.{s}``             linear perpetuals: rate, mark, index, next time
open_interest   ``tickers.{s}``             linear: ``openInterest`` (base units)
liquidations    ``allLiquidation.{s}``      linear; ``S`` is the liquidated position's side
==============  ==========================  ===============================================

Acks: ``{"success":true,"ret_msg":"","op":"subscribe","req_id":<ours>}``; ``success:false``
rejects the request. Keepalive: ``{"op":"ping"}`` every 20 s, answered by
``{"success":true,"ret_msg":"pong","op":"ping"}`` (or ``{"op":"pong"}``). Resync:
unsubscribe and resubscribe that symbol's ``orderbook.50`` topic; Bybit answers with a
snapshot. Bybit sends no checksum: the ``u`` chain and the crossed-book check are what
verify a book.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from streamkit.book import BookSync, OrderBook, PriceInterner
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
from streamkit_bybit import schemas, symbols
from streamkit_bybit.schemas import Envelope, TickerData
from streamkit_bybit.symbols import CATEGORIES, Category

if TYPE_CHECKING:
    from streamkit.config import FeedConfig

TOPICS: dict[str, str] = {
    "trades": "publicTrade",
    "bbo": "orderbook.1",
    "l2_book": "orderbook.50",
    "ticker": "tickers",
    "funding": "tickers",
    "open_interest": "tickers",
    "liquidations": "allLiquidation",
}
"""streamkit channel -> Bybit topic prefix (the topic is ``<prefix>.<symbol>``)."""

LINEAR_ONLY = frozenset({"funding", "open_interest", "liquidations"})
BOOK_DEPTH = 50
URLS: dict[Category, str] = {
    "spot": "wss://stream.bybit.com/v5/public/spot",
    "linear": "wss://stream.bybit.com/v5/public/linear",
}

_MS = 1_000_000  # Bybit times are ms; records carry ns


def _category(config: FeedConfig) -> tuple[Category, str | None]:
    """The feed's category and, when the option is invalid, what is wrong with it."""
    option = config.options.get("category")
    if option is not None:
        if option in CATEGORIES:
            return option, None
        return "spot", f"options.category must be one of {', '.join(CATEGORIES)}, not {option!r}"
    for symbol in config.symbols:
        try:
            return symbols.category_of(symbol), None
        except ValueError:
            continue
    return "spot", None


class BybitFeed(Feed):
    """Bybit v5 public market data, spot or linear (``options.category``)."""

    id: ClassVar[str] = "bybit"
    channels: ClassVar[frozenset[str]] = frozenset(TOPICS)
    default_url: ClassVar[str] = URLS["spot"]
    limits: ClassVar[Limits] = Limits(
        # Bybit caps the total length of a public connection's args at 21,000 characters;
        # 400 topics of up to ~50 characters stay under it.
        max_streams_per_connection=400,
        # Spot accepts at most 10 args per subscribe request (linear has no cap; one class
        # serves both, so the stricter rule applies).
        max_streams_per_message=10,
        # Bybit documents no inbound message rate for public streams; 10/s subscribes a
        # full connection in 4 s.
        max_messages_per_second=10.0,
        # At most 500 new connections per 5 minutes per domain.
        max_connects=500,
        connect_window=300.0,
    )
    heartbeat: ClassVar[Heartbeat] = Heartbeat(interval=20.0, payload=b'{"op":"ping"}')

    def __init__(
        self, config: FeedConfig, *, url: str | None = None, rest_url: str | None = None
    ) -> None:
        self.category, self._category_problem = _category(config)
        super().__init__(config, url=url or config.url or URLS[self.category], rest_url=rest_url)

    def exchange_symbol(self, symbol: str) -> str:
        return symbols.to_exchange(symbol, self.category)

    def normalize_symbol(self, exchange_symbol: str) -> str:
        return symbols.to_normalized(exchange_symbol, self.category)

    def stream_name(self, channel: str, symbol: str) -> str:
        return f"{TOPICS[channel]}.{self.exchange_symbol(symbol)}"

    def check(self) -> list[tuple[str, str]]:
        if self._category_problem is not None:
            return [("options.category", self._category_problem)]
        problems = super().check()
        if self.category == "spot":
            for i, channel in enumerate(self.config.channels):
                if channel in LINEAR_ONLY:
                    problems.append(
                        (f"channels[{i}]", f"bybit has {channel!r} for linear contracts only")
                    )
        else:
            for i, symbol in enumerate(self.config.symbols):
                dated = not symbol.endswith("-PERP")
                if dated and "funding" in self.config.channels:
                    problems.append((f"symbols[{i}]", f"{symbol} is a dated future: no funding"))
        return problems

    def protocol(self, plan: ConnectionPlan, connection: str) -> BybitProtocol:
        return BybitProtocol(self, plan, connection)


class BybitProtocol(FeedProtocol):
    """One connection to ``/v5/public/<category>``."""

    def __init__(self, feed: Feed, plan: ConnectionPlan, connection: str) -> None:
        super().__init__(feed, plan, connection)
        handlers: dict[str, Callable[[str, Envelope, int, Output], None]] = {
            "publicTrade": self._on_trades,
            "orderbook.1": self._on_bbo,
            "orderbook.50": self._on_book,
            "tickers": self._on_ticker,
            "allLiquidation": self._on_liquidations,
        }
        # topic -> (handler, normalized symbol): one dict lookup routes each data frame.
        self.routes: dict[str, tuple[Callable[[str, Envelope, int, Output], None], str]] = {}
        self.ticker_channels: dict[str, set[str]] = {}
        self.books: dict[str, BookSync] = {}
        # symbol -> its book's price strings -> shared Decimals (one cache per book).
        self.prices: dict[str, PriceInterner] = {}
        for stream in plan.streams:
            self.routes[stream.name] = (handlers[TOPICS[stream.channel]], stream.symbol)
            if TOPICS[stream.channel] == "tickers":
                self.ticker_channels.setdefault(stream.symbol, set()).add(stream.channel)
            if stream.channel == "l2_book":
                self.books[stream.symbol] = BookSync(feed.id, stream.symbol, connection)
                self.prices[stream.symbol] = PriceInterner()
        self.tickers: dict[str, TickerData] = {}
        """The merged ``tickers`` state per symbol (linear sends deltas)."""
        self.pending: list[str] = []
        """Request ids not yet answered, oldest first."""
        self._resync_ids = itertools.count(1)

    def url(self) -> str:
        return self.feed.url

    # --- subscribing -----------------------------------------------------------------------

    def subscriptions(self) -> list[SubscribeRequest]:
        """Distinct topics (``tickers`` serves three channels), at most 10 per request."""
        streams_of: dict[str, list[Stream]] = {}
        for stream in self.plan.streams:
            streams_of.setdefault(stream.name, []).append(stream)
        topics = list(streams_of)
        requests = []
        for n, group in enumerate(chunked_topics(topics, self.feed.limits.max_streams_per_message)):
            key = str(n + 1)
            streams = tuple(s for topic in group for s in streams_of[topic])
            requests.append(SubscribeRequest(key, streams, command("subscribe", group, key)))
        self.pending = [r.key for r in requests]
        return requests

    def resync(self, symbol: str, reason: str) -> list[Action]:
        """Resubscribe just this symbol's book topic; Bybit answers with a fresh snapshot."""
        topic = [f"{TOPICS['l2_book']}.{self.feed.exchange_symbol(symbol)}"]
        n = next(self._resync_ids)
        return [
            Send(command("unsubscribe", topic, f"resync-{n}-unsub")),
            Send(command("subscribe", topic, f"resync-{n}")),
        ]

    # --- decoding --------------------------------------------------------------------------

    def on_message(self, data: bytes, recv_ts: int, out: Output) -> bool:
        env = schemas.envelope_decoder.decode(data)
        topic = env.topic
        if topic is not None:
            route = self.routes.get(topic)
            if route is None:
                raise DecodeError(f"data for a topic this connection did not subscribe: {topic}")
            if not env.data:
                raise DecodeError(f"{topic} frame without data")
            handler, symbol = route
            handler(symbol, env, recv_ts, out)
            return True
        op = env.op
        if op == "pong" or (op == "ping" and env.success):
            out.pong = True
        elif op in ("subscribe", "unsubscribe") and env.success is not None:
            self._on_reply(env, recv_ts, out)
        else:
            raise DecodeError("neither topic data nor a command reply")
        return False

    def _on_reply(self, env: Envelope, recv_ts: int, out: Output) -> None:
        request = env.req_id or ""
        if request not in self.pending:
            if request.startswith("resync-") or not self.pending or env.op != "subscribe":
                if not env.success:
                    out.records.append(
                        self._status(f"{env.op} {request!r} failed: {env.ret_msg}", recv_ts)
                    )
                return
            # A server that does not echo req_id: replies come in request order.
            request = self.pending[0]
        self.pending.remove(request)
        if env.success:
            out.acks.append(request)
        else:
            out.rejects.append((request, env.ret_msg or "subscription failed"))

    def _on_trades(self, symbol: str, env: Envelope, recv_ts: int, out: Output) -> None:
        for t in schemas.trades_decoder.decode(env.data):
            out.records.append(
                Trade(
                    exchange=self.exchange,
                    symbol=symbol,
                    ts=t.time * _MS,
                    recv_ts=recv_ts,
                    price=t.price,
                    size=t.size,
                    side="buy" if t.side == "Buy" else "sell",
                    id=t.trade_id,
                )
            )

    def _on_bbo(self, symbol: str, env: Envelope, recv_ts: int, out: Output) -> None:
        d = schemas.orderbook_decoder.decode(env.data)
        if not d.bids or not d.asks:
            return  # one side empty: there is no best bid *and* offer to publish
        out.records.append(
            BBO(
                exchange=self.exchange,
                symbol=symbol,
                ts=_ns(env.ts),
                recv_ts=recv_ts,
                bid_price=Decimal(d.bids[0][0]),
                bid_size=d.bids[0][1],
                ask_price=Decimal(d.asks[0][0]),
                ask_size=d.asks[0][1],
            )
        )

    def _on_book(self, symbol: str, env: Envelope, recv_ts: int, out: Output) -> None:
        """Raises ``decimal.InvalidOperation`` for a level price that is not a number (the
        actor counts it as a decode error, like msgspec's)."""
        sync = self.books[symbol]
        d = schemas.orderbook_decoder.decode(env.data)
        prices = self.prices[symbol]
        bids, asks = prices(d.bids), prices(d.asks)
        ts = _ns(env.ts)
        if env.type == "snapshot" or d.update_id == 1:
            # u == 1: Bybit restarted its service and this message replaces the book.
            sync.snapshot(bids, asks, recv_ts=recv_ts, out=out, seq=d.update_id, ts=ts)
        elif env.type == "delta":
            sync.delta(
                bids,
                asks,
                recv_ts=recv_ts,
                out=out,
                seq=d.update_id,
                prev_seq=d.update_id - 1,
                ts=ts,
            )
        else:
            raise DecodeError(f"{env.topic} frame of type {env.type!r}")
        if sync.live:
            trim(sync.book, BOOK_DEPTH)

    def _on_ticker(self, symbol: str, env: Envelope, recv_ts: int, out: Output) -> None:
        update = schemas.ticker_decoder.decode(env.data)
        previous = self.tickers.get(symbol)
        if env.type == "delta":
            if previous is None:
                return  # a delta before any snapshot has nothing to apply to
            changes = {k: v for k, v in msgspec.structs.asdict(update).items() if v is not None}
            state = msgspec.structs.replace(previous, **changes)
        else:
            changes = msgspec.structs.asdict(update)
            state = update
        self.tickers[symbol] = state
        wanted = self.ticker_channels.get(symbol, set())
        ts = _ns(env.ts)
        if "ticker" in wanted and _touched(changes, schemas.TICKER_FIELDS):
            out.records.append(
                Ticker(
                    exchange=self.exchange,
                    symbol=symbol,
                    ts=ts,
                    recv_ts=recv_ts,
                    last=_dec(state.last_price),
                    bid=_dec(state.bid1_price),
                    ask=_dec(state.ask1_price),
                    open_24h=_dec(state.prev_price_24h),
                    high_24h=_dec(state.high_price_24h),
                    low_24h=_dec(state.low_price_24h),
                    volume_24h=_dec(state.volume_24h),
                    quote_volume_24h=_dec(state.turnover_24h),
                )
            )
        rate = _dec(state.funding_rate)
        if "funding" in wanted and rate is not None and _touched(changes, schemas.FUNDING_FIELDS):
            out.records.append(
                Funding(
                    exchange=self.exchange,
                    symbol=symbol,
                    ts=ts,
                    recv_ts=recv_ts,
                    rate=rate,
                    mark_price=_dec(state.mark_price),
                    index_price=_dec(state.index_price),
                    next_funding_ts=_ms_text(state.next_funding_time),
                )
            )
        open_interest = _dec(state.open_interest)
        if "open_interest" in wanted and open_interest is not None and "open_interest" in changes:
            out.records.append(
                OpenInterest(
                    exchange=self.exchange,
                    symbol=symbol,
                    ts=ts,
                    recv_ts=recv_ts,
                    open_interest=open_interest,
                )
            )

    def _on_liquidations(self, symbol: str, env: Envelope, recv_ts: int, out: Output) -> None:
        for liq in schemas.liquidation_decoder.decode(env.data):
            out.records.append(
                Liquidation(
                    exchange=self.exchange,
                    symbol=symbol,
                    ts=liq.time * _MS,
                    recv_ts=recv_ts,
                    # A liquidated long (S=Buy) is closed by a forced sell.
                    side="sell" if liq.position_side == "Buy" else "buy",
                    price=liq.price,
                    size=liq.size,
                )
            )

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


def chunked_topics(topics: list[str], size: int) -> list[list[str]]:
    return [topics[i : i + size] for i in range(0, len(topics), size)]


def command(op: str, args: list[str], req_id: str) -> bytes:
    """A ``subscribe``/``unsubscribe`` request; Bybit echoes ``req_id`` in its reply."""
    return json.dumps({"op": op, "args": args, "req_id": req_id}, separators=(",", ":")).encode()


def trim(book: OrderBook, depth: int) -> None:
    """Drop levels beyond ``depth`` per side: Bybit sends no deletes for levels that fall out
    of the subscribed depth, so without this they would linger as stale levels."""
    while len(book.bids) > depth:
        del book.bids[min(book.bids)]
    while len(book.asks) > depth:
        del book.asks[max(book.asks)]


def _touched(changes: dict[str, Any], fields: tuple[str, ...]) -> bool:
    return any(changes.get(f) is not None for f in fields)


def _ns(ms: int | None) -> int | None:
    return None if ms is None else ms * _MS


def _dec(text: str | None) -> Decimal | None:
    """Bybit's optional decimal strings: missing or ``""`` means absent."""
    if not text:
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        raise DecodeError(f"not a decimal: {text!r}") from None


def _ms_text(text: str | None) -> int | None:
    if not text:
        return None
    if not text.isdigit():
        raise DecodeError(f"not a millisecond timestamp: {text!r}")
    return int(text) * _MS


__all__ = ["TOPICS", "BybitFeed", "BybitProtocol"]
