"""Coinbase Advanced Trade market data (``wss://advanced-trade-ws.coinbase.com``): subscriptions,
acks, the ``sequence_num`` check, decoding and normalization.

Channels -> Advanced Trade channels: ``trades`` -> ``market_trades``, ``l2_book`` -> ``level2``
(public, no JWT needed; frames arrive on channel ``l2_data``), ``ticker`` and ``bbo`` ->
``ticker`` (a BBO needs ``best_bid``/``best_ask`` and their quantities; a ticker without them
yields no BBO), ``candles`` -> ``candles`` (5-minute bars). ``heartbeats`` is always
subscribed, once per connection: Coinbase closes channels that see no update for 60-90 s, and
heartbeats keep them open (they are not data: the staleness watchdog ignores them). The
``status`` channel is subscribed when the ``product_status`` option is on: a product going
``offline``/``delisted`` is published as an ``error`` status record for that symbol.
Symbols: see :mod:`streamkit_coinbase_advanced.symbols`.

Subscribing: one channel per message, so a connection sends one request per channel (more
when its products exceed ``max_streams_per_message``). Coinbase disconnects a client that has
not subscribed within 5 s; the ``heartbeats`` subscribe is sent from ``on_connected``, before
the paced data requests, so that deadline holds however many requests follow.

Trade side: the normalized ``side`` is the taker's. On the Exchange feed, ``matches.side`` is
the MAKER's (Coinbase documents it), but Advanced Trade's ``market_trades.side`` is taken as
the TAKER's, on this evidence: the JSON schemas derived from Coinbase's OpenAPI files
(github.com/api-evangelist/coinbase) describe the Advanced Trade market trade's ``side``
(``BUY``/``SELL``) as "Taker side of the trade" and the Exchange API trade's (``buy``/``sell``)
as "Maker side"; NautilusTrader's Advanced Trade adapter maps it straight to the aggressor
side. Coinbase's own channel page says nothing either way, and the captured
``market_trades`` frame is synthetic (no attributed live capture exists), so this is NOT
verified against live prices; the ``trade_side`` option (``taker`` default, ``maker``
inverts) is the switch if the live feed turns out otherwise.

Gaps: ``sequence_num`` numbers every message of the connection (all channels, acks and
heartbeats included) from 0, one by one. A jump means messages were lost, whichever channel
they were on: a connection-wide ``gap`` status is published, every book of the connection
fails (``gap`` + ``resync`` + :class:`~streamkit.feed.ResyncBook`) and is resynchronised by
resubscribing its ``level2`` channel (unsubscribe + subscribe, for all failed products in one
pair of messages; Coinbase answers with a fresh snapshot). Lost trades cannot be recovered.
A ``sequence_num`` that does not advance is a stale frame: dropped. Error frames carry no
``sequence_num``.

Options (``options:`` in the feed's config):
    trade_side: ``taker`` (default) or ``maker``: what ``market_trades.side`` means.
    product_status: true to subscribe the ``status`` channel (default false).
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

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
    Stream,
    SubscribeRequest,
)
from streamkit.model import BBO, Candle, PriceLevel, Side, Status, StatusEvent, Ticker, Trade
from streamkit_coinbase_advanced import schemas, subscriptions, symbols
from streamkit_coinbase_advanced.schemas import (
    Candles,
    Heartbeats,
    L2Data,
    MarketTrades,
    StatusMessage,
    Subscriptions,
    TickerBatch,
    TickerMessage,
)
from streamkit_coinbase_advanced.subscriptions import HEARTBEATS, AnswerQueue, Awaited

VENUE_CHANNELS = {
    "trades": "market_trades",
    "l2_book": "level2",
    "ticker": "ticker",
    "bbo": "ticker",
    "candles": "candles",
}
"""Normalized channel -> Advanced Trade channel."""
KNOWN_CHANNELS = frozenset(
    {"l2_data", "market_trades", "ticker", "ticker_batch", "candles", "status"}
    | {HEARTBEATS, "subscriptions"}
)
"""Channels of data frames (``l2_data`` is what ``level2`` delivers). A frame on one of them
that does not decode is malformed; a frame on any other channel is ignored (Coinbase adds
channels; ``user`` frames belong to the user endpoint)."""
CANDLE_INTERVAL = "5m"
CANDLE_NS = 300 * 1_000_000_000
OPTIONS = frozenset({"trade_side", "product_status"})
TRADE_SIDES: dict[str, dict[str, Side]] = {
    "taker": {"BUY": "buy", "SELL": "sell"},
    "maker": {"BUY": "sell", "SELL": "buy"},
}
"""``trade_side`` option -> wire side -> normalized (taker) side."""


class CoinbaseAdvancedFeed(Feed):
    """Coinbase Advanced Trade public market data."""

    id: ClassVar[str] = "coinbase_advanced"
    channels: ClassVar[frozenset[str]] = frozenset(VENUE_CHANNELS)
    default_url: ClassVar[str] = "wss://advanced-trade-ws.coinbase.com"
    limits: ClassVar[Limits] = Limits(
        # No documented cap per connection; level2 snapshots of many products arrive at once,
        # so keep a connection's share moderate.
        max_streams_per_connection=200,
        max_streams_per_message=100,
        # Documented per IP: 8 unauthenticated messages/s; 750 connections/s.
        max_messages_per_second=5.0,
        max_connects=8,
        connect_window=1.0,
    )
    # No client ping: the heartbeats channel and WebSocket pings keep the connection open.
    heartbeat: ClassVar[Heartbeat] = Heartbeat()

    def exchange_symbol(self, symbol: str) -> str:
        return symbols.to_exchange(symbol)

    def normalize_symbol(self, exchange_symbol: str) -> str:
        return symbols.to_normalized(exchange_symbol)

    def stream_name(self, channel: str, symbol: str) -> str:
        return f"{VENUE_CHANNELS[channel]}:{self.exchange_symbol(symbol)}"

    @property
    def trade_sides(self) -> dict[str, Side]:
        """Wire side -> taker side, per the ``trade_side`` option."""
        option = self.config.options.get("trade_side", "taker")
        if option not in TRADE_SIDES:
            raise ValueError(f"trade_side must be one of {', '.join(TRADE_SIDES)}")
        return TRADE_SIDES[str(option)]

    @property
    def product_status(self) -> bool:
        option = self.config.options.get("product_status", False)
        if not isinstance(option, bool):
            raise ValueError("product_status must be true or false")
        return option

    def protocol(self, plan: ConnectionPlan, connection: str) -> CoinbaseAdvancedProtocol:
        return CoinbaseAdvancedProtocol(self, plan, connection)

    def check(self) -> list[tuple[str, str]]:
        problems = super().check()
        for key in sorted(set(self.config.options) - OPTIONS):
            known = ", ".join(sorted(OPTIONS))
            problems.append(
                (f"options.{key}", f"coinbase_advanced has no option {key!r} (it has: {known})")
            )
        for key, getter in (
            ("trade_side", lambda: self.trade_sides),
            ("product_status", lambda: self.product_status),
        ):
            try:
                getter()
            except ValueError as exc:
                problems.append((f"options.{key}", str(exc)))
        return problems


class CoinbaseAdvancedProtocol(FeedProtocol):
    """One Advanced Trade market-data connection."""

    feed: CoinbaseAdvancedFeed

    def __init__(self, feed: CoinbaseAdvancedFeed, plan: ConnectionPlan, connection: str) -> None:
        super().__init__(feed, plan, connection)
        self.wants: dict[str, set[str]] = {}
        """Product id -> its normalized channels."""
        for s in plan.streams:
            self.wants.setdefault(feed.exchange_symbol(s.symbol), set()).add(s.channel)
        self.symbol_of = {product: feed.normalize_symbol(product) for product in self.wants}
        self.books: dict[str, BookSync] = {
            product: BookSync(feed.id, self.symbol_of[product], connection)
            for product, channels in self.wants.items()
            if "l2_book" in channels
        }
        self.trade_sides = feed.trade_sides
        self.last_seq = -1
        """The last ``sequence_num`` accepted (the first message must be number 0)."""
        self.last_trade_id: dict[str, int] = {}
        self.product_states: dict[str, str] = {}
        self.answers = AnswerQueue()
        self._resync_wanted: set[str] = set()
        self._resyncing: set[str] = set()
        # counters (diagnostics; tests read them)
        self.gaps = 0
        self.stale = 0
        self.ignored = 0
        self.duplicate_trades = 0
        self.snapshot_trades = 0
        self.unknown_sides = 0

    def url(self) -> str:
        return self.feed.url

    # --- subscribing -----------------------------------------------------------------------

    def on_connected(self, recv_ts: int, out: Output) -> None:
        """Subscribe ``heartbeats`` (and ``status``) at once: these are the protocol's own
        subscriptions, not streams of the actor's ledger, and the first one meets the 5 s
        subscribe deadline."""
        products = list(self.wants)
        own = [HEARTBEATS, "status"] if self.feed.product_status else [HEARTBEATS]
        for channel in own:
            self.answers.expect(Awaited(None, "subscribe", channel, frozenset(products)))
            out.actions.append(Send(subscriptions.message("subscribe", channel, products)))

    def subscriptions(self) -> list[SubscribeRequest]:
        """One subscribe per channel (per chunk of products within the per-message limit)."""
        by_channel: dict[str, dict[str, list[Stream]]] = {}
        for s in self.plan.streams:
            product = self.feed.exchange_symbol(s.symbol)
            by_channel.setdefault(VENUE_CHANNELS[s.channel], {}).setdefault(product, []).append(s)
        requests: list[SubscribeRequest] = []
        limit = self.feed.limits.max_streams_per_message
        for channel, products in by_channel.items():
            chunk: list[str] = []
            streams: list[Stream] = []
            for product, own in [*products.items(), ("", [])]:
                if chunk and (not product or len(streams) + len(own) > limit):
                    key = str(len(requests) + 1)
                    payload = subscriptions.message("subscribe", channel, chunk)
                    self.answers.expect(Awaited(key, "subscribe", channel, frozenset(chunk)))
                    requests.append(SubscribeRequest(key, tuple(streams), payload))
                    chunk, streams = [], []
                chunk.append(product)
                streams.extend(own)
        return requests

    def resync(self, symbol: str, reason: str) -> list[Action]:
        """Resubscribe the product's ``level2`` channel (Coinbase then sends a fresh
        snapshot), together with every other product waiting for a resync, in one
        unsubscribe + subscribe pair. Deferred until the initial subscriptions are answered,
        so that a resubscription never races the first subscribe of the same product."""
        self._resync_wanted.add(self.feed.exchange_symbol(symbol))
        if self.answers.keyed_pending():
            return []
        return self._flush_resyncs()

    def _flush_resyncs(self) -> list[Action]:
        products = sorted(self._resync_wanted - self._resyncing)
        self._resync_wanted.clear()
        if not products:
            return []
        self._resyncing.update(products)
        actions: list[Action] = []
        for kind in ("unsubscribe", "subscribe"):
            symbol = self.symbol_of[products[0]] if len(products) == 1 else None
            self.answers.expect(Awaited(None, kind, "level2", frozenset(products), symbol))
            actions.append(Send(subscriptions.message(kind, "level2", products)))
        return actions

    # --- decoding --------------------------------------------------------------------------

    def on_message(self, data: bytes, recv_ts: int, out: Output) -> bool:
        try:
            msg = schemas.message_decoder.decode(data)
        except msgspec.ValidationError:
            return self._on_other(data, recv_ts, out)
        if not self._in_sequence(msg.sequence_num, recv_ts, out):
            return False
        if isinstance(msg, L2Data):
            self._on_level2(msg, recv_ts, out)
            return True
        if isinstance(msg, MarketTrades):
            self._on_trades(msg, recv_ts, out)
            return True
        if isinstance(msg, TickerMessage | TickerBatch):
            self._on_ticker(msg, recv_ts, out)
            return True
        if isinstance(msg, Candles):
            self._on_candles(msg, recv_ts, out)
            return True
        if isinstance(msg, Subscriptions):
            listed: dict[str, list[str]] = {}
            for event in msg.events:
                listed.update(event.subscriptions)
            self._on_answer(listed, None, recv_ts, out)
            return False
        if isinstance(msg, StatusMessage):
            self._on_status(msg, recv_ts, out)
            return False
        assert isinstance(msg, Heartbeats)  # keeps the connection open; not data
        return False

    def _on_other(self, data: bytes, recv_ts: int, out: Output) -> bool:
        """A frame that is no known channel's: an error, a channel this plugin does not know
        (ignored, but it took a ``sequence_num``), or malformed (raises)."""
        head = schemas.head_decoder.decode(data)
        if head.type == "error" and head.message is not None:
            detail = f"{head.message}: {head.reason}" if head.reason else head.message
            self._on_answer(None, detail, recv_ts, out)
            return False
        if (
            head.channel is not None
            and head.channel not in KNOWN_CHANNELS
            and head.sequence_num is not None
        ):
            self._in_sequence(head.sequence_num, recv_ts, out)
            self.ignored += 1
            return False
        raise DecodeError(f"malformed {head.channel or 'frame'}: {data[:120]!r}")

    def _in_sequence(self, seq: int, recv_ts: int, out: Output) -> bool:
        """Check the connection's message counter; False for a stale frame (drop it)."""
        expected = self.last_seq + 1
        if seq < expected:
            self.stale += 1
            return False
        if seq > expected:
            self._gap(
                f"sequence_num {seq} after {self.last_seq}: {seq - expected} lost", recv_ts, out
            )
        self.last_seq = seq
        return True

    def _gap(self, detail: str, recv_ts: int, out: Output) -> None:
        """Messages were lost on some channel: report it for the connection, and fail and
        resync every book (the lost message may be any book's update, or its snapshot)."""
        self.gaps += 1
        out.records.append(self._status(None, StatusEvent.GAP, detail, recv_ts))
        # A resubscription in flight may have lost its snapshot too: redo them all.
        self._resyncing.clear()
        self._resync_wanted.update(self.books)
        for book in self.books.values():
            book.fail(StatusEvent.GAP, detail, recv_ts, out)

    def _route(self, product: str) -> str:
        """The subscribed product a frame's product id is for (USD may stand for USDC)."""
        if product in self.wants:
            return product
        if product.endswith("-USD") and product + "C" in self.wants:
            return product + "C"
        raise DecodeError(f"data for a product this connection did not subscribe: {product}")

    def _on_level2(self, msg: L2Data, recv_ts: int, out: Output) -> None:
        ts = schemas.to_ns(msg.timestamp)
        seen: set[str] = set()
        for event in msg.events:
            product = self._route(event.product_id)
            book = self.books.get(product)
            if book is None:
                raise DecodeError(f"level2 data for {product}, whose book was not subscribed")
            bids: list[PriceLevel] = []
            asks: list[PriceLevel] = []
            for level in event.updates:
                (bids if level.side == "bid" else asks).append(
                    (level.price_level, level.new_quantity)
                )
            # The connection's sequence_num is the book's seq; a second event for the same
            # product in one message has no number of its own (BookSync would drop it).
            seq = None if product in seen else msg.sequence_num
            seen.add(product)
            if event.type == "snapshot":
                self._resyncing.discard(product)
                book.snapshot(bids, asks, seq=seq, ts=ts, recv_ts=recv_ts, out=out)
            else:
                book.delta(bids, asks, seq=seq, ts=ts, recv_ts=recv_ts, out=out)

    def _on_trades(self, msg: MarketTrades, recv_ts: int, out: Output) -> None:
        """Publish new trades. A ``snapshot`` event (sent once after subscribing) holds trades
        from before the subscription: they only seed the duplicate filter. Numeric trade ids
        filter replays and are published in id order (a batch may list newest first)."""
        sides = self.trade_sides
        for event in msg.events:
            fresh: list[tuple[str, int | None, schemas.WireTrade]] = []
            for trade in event.trades:
                product = self._route(trade.product_id)
                number = int(trade.trade_id) if trade.trade_id.isdigit() else None
                floor = self.last_trade_id.get(product)
                if number is not None and floor is not None and number <= floor:
                    self.duplicate_trades += 1
                    continue
                fresh.append((product, number, trade))
            for product, number, _ in fresh:
                if number is not None and number > self.last_trade_id.get(product, -1):
                    self.last_trade_id[product] = number
            if event.type == "snapshot":
                self.snapshot_trades += len(fresh)
                continue
            if all(number is not None for _, number, _ in fresh):
                fresh.sort(key=lambda item: item[1] or 0)
            for product, _, trade in fresh:
                side = sides.get(trade.side)
                if side is None:
                    self.unknown_sides += 1  # e.g. UNKNOWN_ORDER_SIDE: no taker side to give
                    continue
                if "trades" not in self.wants[product]:
                    continue  # the product is on this connection for other channels
                out.records.append(
                    Trade(
                        exchange=self.exchange,
                        symbol=self.symbol_of[product],
                        ts=schemas.to_ns(trade.time),
                        recv_ts=recv_ts,
                        price=trade.price,
                        size=trade.size,
                        side=side,
                        id=trade.trade_id,
                    )
                )

    def _on_ticker(self, msg: TickerMessage | TickerBatch, recv_ts: int, out: Output) -> None:
        ts = schemas.to_ns(msg.timestamp)
        for event in msg.events:
            for t in event.tickers:
                product = self._route(t.product_id)
                wants = self.wants[product]
                symbol = self.symbol_of[product]
                if "ticker" in wants:
                    out.records.append(
                        Ticker(
                            exchange=self.exchange,
                            symbol=symbol,
                            ts=ts,
                            recv_ts=recv_ts,
                            last=t.price,
                            bid=t.best_bid,
                            ask=t.best_ask,
                            high_24h=t.high_24_h,
                            low_24h=t.low_24_h,
                            volume_24h=t.volume_24_h,
                        )
                    )
                if (
                    "bbo" in wants
                    and t.best_bid is not None
                    and t.best_bid_quantity is not None
                    and t.best_ask is not None
                    and t.best_ask_quantity is not None
                ):
                    out.records.append(
                        BBO(
                            exchange=self.exchange,
                            symbol=symbol,
                            ts=ts,
                            recv_ts=recv_ts,
                            bid_price=t.best_bid,
                            bid_size=t.best_bid_quantity,
                            ask_price=t.best_ask,
                            ask_size=t.best_ask_quantity,
                        )
                    )

    def _on_candles(self, msg: Candles, recv_ts: int, out: Output) -> None:
        """5-minute bars, updated as trades happen. Coinbase marks no bar final, so every
        record has ``closed=False``; a bar is final once one with a later ``start`` arrives."""
        ts = schemas.to_ns(msg.timestamp)
        for event in msg.events:
            for c in event.candles:
                product = self._route(c.product_id)
                if "candles" not in self.wants[product]:
                    continue
                start = schemas.seconds_to_ns(c.start)
                out.records.append(
                    Candle(
                        exchange=self.exchange,
                        symbol=self.symbol_of[product],
                        ts=ts,
                        recv_ts=recv_ts,
                        interval=CANDLE_INTERVAL,
                        start=start,
                        end=start + CANDLE_NS,
                        open=c.open,
                        high=c.high,
                        low=c.low,
                        close=c.close,
                        volume=c.volume,
                        closed=False,
                    )
                )

    def _on_status(self, msg: StatusMessage, recv_ts: int, out: Output) -> None:
        """Report a subscribed product that is not ``online`` (once per change of state)."""
        for event in msg.events:
            for p in event.products:
                try:
                    product = self._route(p.id)
                except DecodeError:
                    continue  # the status channel may speak of other products
                previous = self.product_states.get(product)
                self.product_states[product] = p.status
                if p.status in ("online", "") or p.status == previous:
                    continue
                detail = f"product {p.id} is {p.status}"
                if p.status_message:
                    detail += f": {p.status_message}"
                out.records.append(
                    self._status(self.symbol_of[product], StatusEvent.ERROR, detail, recv_ts)
                )

    def _on_answer(
        self, listed: dict[str, list[str]] | None, error: str | None, recv_ts: int, out: Output
    ) -> None:
        """Pair a ``subscriptions`` answer (or an error) with the request(s) it answers."""
        if listed is not None:
            done, failed = self.answers.settle(listed)
            out.acks.extend(a.key for a in done if a.key is not None)
            if failed is not None:
                self._fail_request(
                    failed, f"not subscribed: {', '.join(failed.missing(listed))}", recv_ts, out
                )
        else:
            failed = self.answers.pop()
            detail = error or "error"
            if failed is not None:
                self._fail_request(failed, detail, recv_ts, out)
            else:
                out.records.append(self._status(None, StatusEvent.ERROR, detail, recv_ts))
        if self._resync_wanted and not self.answers.keyed_pending():
            out.actions.extend(self._flush_resyncs())

    def _fail_request(self, failed: Awaited, detail: str, recv_ts: int, out: Output) -> None:
        if failed.key is not None:
            out.rejects.append((failed.key, detail))
            return
        detail = f"{failed.kind} {failed.channel} failed: {detail}"
        out.records.append(self._status(failed.symbol, StatusEvent.ERROR, detail, recv_ts))

    def _status(self, symbol: str | None, event: StatusEvent, detail: str, recv_ts: int) -> Status:
        return Status(
            exchange=self.exchange,
            symbol=symbol,
            ts=None,
            recv_ts=recv_ts,
            event=event,
            detail=detail,
            connection=self.connection,
        )


__all__ = ["CoinbaseAdvancedFeed", "CoinbaseAdvancedProtocol"]
