"""Coinbase Exchange feed (``wss://ws-feed.exchange.coinbase.com``): subscriptions, acks,
sequence/trade-id checks and decoding.

Channels -> Coinbase channels: ``trades`` -> ``matches`` (taker side = the opposite of the
match's ``side``, which is the maker's), ``l2_book`` -> ``level2_batch`` (``level2`` when the
``level2_channel`` option says so: Coinbase requires authentication for ``level2``), ``ticker``
and ``bbo`` -> ``ticker`` (``best_bid``/``best_ask``; a BBO record needs the sizes Coinbase
added in 2022, so a ticker frame without them yields no BBO). The ``heartbeat`` channel is
always subscribed for every product: it proves each product's stream is alive and carries
``last_trade_id``. Symbols: ``BTC-USD`` <-> ``BTC-USD``.

Coinbase disconnects a client that has not subscribed within 5 s of connecting: the
connection actor sends :meth:`CoinbaseProtocol.subscriptions` right after the WebSocket opens
(before reading anything), so this holds as long as the first request is not paced behind
others; each request carries every channel of its products, so a connection of up to
``max_streams_per_message`` streams needs a single subscribe.

Acks: every subscribe/unsubscribe is answered by one ``subscriptions`` message listing ALL
current subscriptions (or by an ``error``). Answers come in request order, so the first answer
after a request is its ack; the request is confirmed if every (channel, product) it asked for
is listed, rejected otherwise.

Gaps: ``sequence`` numbers the product's full order stream, and the channels used here see only
some of its messages (consecutive captured matches of SKL-BTC carry sequences 177100030 and
177100140), so a jump in ``sequence`` is normal and is *not* a gap; a sequence that goes
backwards is a stale frame (dropped). Trade ids, however, are consecutive per product: a match
whose ``trade_id`` skips ids, or a heartbeat whose ``last_trade_id`` is ahead of the last match
seen, means messages were lost. That is reported as a ``gap`` and, since ``l2update`` has no
sequence of its own, the product's book is resynchronised by resubscribing its level-2 channel
(Coinbase answers with a fresh snapshot).

Options (``options:`` in the feed's config):
    level2_channel: ``level2_batch`` (default; public) or ``level2`` (authenticated feeds).
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from typing import ClassVar

import msgspec

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
    Send,
    Stream,
    SubscribeRequest,
)
from streamkit.model import BBO, PriceLevel, Side, Status, StatusEvent, Ticker, Trade
from streamkit_coinbase import schemas, symbols
from streamkit_coinbase.schemas import (
    Error,
    HeartbeatMessage,
    L2Update,
    LastMatch,
    Match,
    Snapshot,
    Subscriptions,
    TickerMessage,
)

LEVEL2_CHANNELS = ("level2_batch", "level2")
_SAME_SUBSCRIPTION = {"level2_batch": "level2", "level2_50": "level2"}
"""Names an ack may list for one level-2 subscription (``level2_batch`` is ``level2`` in
batches), compared as one so an ack is never rejected over the spelling."""
OPTIONS = frozenset({"level2_channel"})
_TAKER: dict[Side, Side] = {"buy": "sell", "sell": "buy"}
"""Maker side of a match -> taker side."""


class CoinbaseFeed(Feed):
    """Coinbase Exchange public market data (the ``ws-feed`` WebSocket)."""

    id: ClassVar[str] = "coinbase"
    channels: ClassVar[frozenset[str]] = frozenset({"trades", "l2_book", "ticker", "bbo"})
    default_url: ClassVar[str] = "wss://ws-feed.exchange.coinbase.com"
    limits: ClassVar[Limits] = Limits(
        # No documented cap per connection; level2 snapshots of many products arrive at once,
        # so keep a connection's share moderate.
        max_streams_per_connection=400,
        max_streams_per_message=400,
        # Documented per IP: 8 requests/s (20 in bursts), 100 client messages/s.
        max_messages_per_second=5.0,
        max_connects=8,
        connect_window=1.0,
    )
    # Coinbase needs no client ping; its heartbeat channel and WebSocket pings keep the
    # connection alive, and the staleness watchdog judges it.
    heartbeat: ClassVar[Heartbeat] = Heartbeat()

    def exchange_symbol(self, symbol: str) -> str:
        return symbols.to_exchange(symbol)

    def normalize_symbol(self, exchange_symbol: str) -> str:
        return symbols.to_normalized(exchange_symbol)

    @property
    def level2_channel(self) -> str:
        channel = self.config.options.get("level2_channel", LEVEL2_CHANNELS[0])
        if channel not in LEVEL2_CHANNELS:
            raise ValueError(f"level2_channel must be one of {', '.join(LEVEL2_CHANNELS)}")
        return str(channel)

    def venue_channel(self, channel: str) -> str:
        """Normalized channel -> Coinbase channel."""
        if channel == "l2_book":
            return self.level2_channel
        return {"trades": "matches", "ticker": "ticker", "bbo": "ticker"}[channel]

    def stream_name(self, channel: str, symbol: str) -> str:
        return f"{self.venue_channel(channel)}:{self.exchange_symbol(symbol)}"

    def protocol(self, plan: ConnectionPlan, connection: str) -> CoinbaseProtocol:
        return CoinbaseProtocol(self, plan, connection)

    def check(self) -> list[tuple[str, str]]:
        problems = super().check()
        for key in sorted(set(self.config.options) - OPTIONS):
            problems.append(
                (f"options.{key}", f"coinbase has no option {key!r} (it has: level2_channel)")
            )
        try:
            self.level2_channel  # noqa: B018 - validates the option
        except ValueError as exc:
            problems.append(("options.level2_channel", str(exc)))
        return problems


@dataclass(frozen=True, slots=True)
class _Awaited:
    """A request whose answer has not arrived yet. ``key`` is None for the protocol's own
    resubscriptions (not in the actor's ledger)."""

    key: str | None
    wanted: frozenset[tuple[str, str]]
    symbol: str | None = None


class CoinbaseProtocol(FeedProtocol):
    """One Coinbase Exchange feed connection."""

    feed: CoinbaseFeed

    def __init__(self, feed: CoinbaseFeed, plan: ConnectionPlan, connection: str) -> None:
        super().__init__(feed, plan, connection)
        self.wants: dict[str, set[str]] = {}
        """Product id -> its normalized channels."""
        for s in plan.streams:
            self.wants.setdefault(feed.exchange_symbol(s.symbol), set()).add(s.channel)
        self.level2 = feed.level2_channel
        self.books: dict[str, BookSync] = {
            product: BookSync(feed.id, feed.normalize_symbol(product), connection)
            for product, channels in self.wants.items()
            if "l2_book" in channels
        }
        self.prices: dict[str, PriceInterner] = {product: PriceInterner() for product in self.books}
        """Product -> its book's price strings -> shared Decimals (one cache per book)."""
        self.sequence: dict[str, int] = {}
        """Product -> highest ``sequence`` seen (ticker, matches, heartbeat)."""
        self.trade_id: dict[str, int] = {}
        """Product -> last trade id seen (matches, last_match, heartbeat)."""
        self.stale = 0
        self.duplicates = 0
        self.ignored = 0
        self._awaited: deque[_Awaited] = deque()
        self._initial_unanswered = 0
        self._deferred_resyncs: list[str] = []

    def url(self) -> str:
        return self.feed.url

    # --- subscribing -----------------------------------------------------------------------

    def subscriptions(self) -> list[SubscribeRequest]:
        """One subscribe per group of products, with all their channels plus ``heartbeat``."""
        by_product: dict[str, list[Stream]] = {}
        for s in self.plan.streams:
            by_product.setdefault(self.feed.exchange_symbol(s.symbol), []).append(s)
        per_product = max(len(v) for v in by_product.values()) if by_product else 1
        size = max(1, self.feed.limits.max_streams_per_message // per_product)
        products = list(by_product)
        requests: list[SubscribeRequest] = []
        for start in range(0, len(products), size):
            chunk = products[start : start + size]
            streams = tuple(s for p in chunk for s in by_product[p])
            venue = sorted({self.feed.venue_channel(s.channel) for s in streams})
            channels = [*venue, "heartbeat"]
            key = str(len(requests) + 1)
            payload = _message("subscribe", chunk, channels)
            wanted = frozenset((_canonical(c), p) for c in channels for p in chunk)
            self._awaited.append(_Awaited(key, wanted))
            requests.append(SubscribeRequest(key, streams, payload))
        self._initial_unanswered = len(requests)
        return requests

    def resync(self, symbol: str, reason: str) -> list[Action]:
        """Resubscribe the product's level-2 channel (Coinbase then sends a new snapshot).
        Deferred until the initial subscriptions are answered, so that answers keep matching
        requests in order."""
        product = self.feed.exchange_symbol(symbol)
        if self._initial_unanswered:
            if product not in self._deferred_resyncs:
                self._deferred_resyncs.append(product)
            return []
        return self._resubscribe(product)

    def _resubscribe(self, product: str) -> list[Action]:
        actions: list[Action] = []
        for method in ("unsubscribe", "subscribe"):
            self._awaited.append(_Awaited(None, frozenset(), product))
            actions.append(Send(_message(method, [product], [self.level2])))
        return actions

    # --- decoding --------------------------------------------------------------------------

    def on_message(self, data: bytes, recv_ts: int, out: Output) -> bool:
        try:
            msg = schemas.message_decoder.decode(data)
        except msgspec.ValidationError:
            # Coinbase may add message types at any time and asks clients to ignore them; a
            # known type with a bad shape is still an error.
            if schemas.type_decoder.decode(data).type not in schemas.KNOWN_TYPES:
                self.ignored += 1
                return False
            raise
        if isinstance(msg, L2Update):
            self._on_l2update(msg, recv_ts, out)
            return True
        if isinstance(msg, LastMatch):
            self._route(msg.product_id)
            self._advance(msg.product_id, msg.sequence)
            self.trade_id[msg.product_id] = max(self.trade_id.get(msg.product_id, 0), msg.trade_id)
            return False
        if isinstance(msg, Match):
            self._on_match(msg, recv_ts, out)
            return True
        if isinstance(msg, TickerMessage):
            self._on_ticker(msg, recv_ts, out)
            return True
        if isinstance(msg, Snapshot):
            book = self._book(msg.product_id)
            prices = self.prices[msg.product_id]
            bids, asks = prices(msg.bids), prices(msg.asks)  # InvalidOperation: a decode error
            book.snapshot(bids, asks, recv_ts=recv_ts, out=out)
            return True
        if isinstance(msg, HeartbeatMessage):
            self._on_heartbeat(msg, recv_ts, out)
            return False
        if isinstance(msg, Subscriptions):
            self._on_answer(msg, None, recv_ts, out)
            return False
        self._on_answer(None, msg, recv_ts, out)
        return False

    def _route(self, product: str) -> set[str]:
        wants = self.wants.get(product)
        if wants is None:
            raise DecodeError(f"data for a product this connection did not subscribe: {product}")
        return wants

    def _book(self, product: str) -> BookSync:
        self._route(product)
        book = self.books.get(product)
        if book is None:
            raise DecodeError(f"level-2 data for {product}, whose book was not subscribed")
        return book

    def _advance(self, product: str, sequence: int) -> bool:
        """Record a product's sequence; False for a stale frame (older than one seen)."""
        last = self.sequence.get(product)
        if last is not None and sequence < last:
            self.stale += 1
            return False
        self.sequence[product] = sequence
        return True

    def _on_l2update(self, msg: L2Update, recv_ts: int, out: Output) -> None:
        """Raises ``decimal.InvalidOperation`` for a price that is not a number (the actor
        counts it as a decode error, like msgspec's)."""
        book = self._book(msg.product_id)
        changes = msg.changes
        # One interner pass for both sides, then split: level2 sends a single change per
        # message, where a second call costs about what interning saves.
        levels = self.prices[msg.product_id]((price, size) for _, price, size in changes)
        bids: list[PriceLevel] = []
        asks: list[PriceLevel] = []
        for change, level in zip(changes, levels, strict=True):
            (bids if change[0] == "buy" else asks).append(level)
        ts = schemas.to_ns(msg.time) if msg.time is not None else None
        book.delta(bids, asks, ts=ts, recv_ts=recv_ts, out=out)

    def _on_match(self, msg: Match, recv_ts: int, out: Output) -> None:
        product = msg.product_id
        self._route(product)
        self._advance(product, msg.sequence)
        last = self.trade_id.get(product)
        if last is not None:
            if msg.trade_id <= last:
                self.duplicates += 1  # already seen (e.g. the last_match replay)
                return
            if msg.trade_id > last + 1:
                self._gap(product, f"trade ids {last + 1}..{msg.trade_id - 1} missed", recv_ts, out)
        self.trade_id[product] = msg.trade_id
        out.records.append(
            Trade(
                exchange=self.exchange,
                symbol=product,
                ts=schemas.to_ns(msg.time),
                recv_ts=recv_ts,
                price=msg.price,
                size=msg.size,
                side=_TAKER[msg.side],  # ``side`` is the maker's
                id=str(msg.trade_id),
            )
        )

    def _on_ticker(self, msg: TickerMessage, recv_ts: int, out: Output) -> None:
        product = msg.product_id
        wants = self._route(product)
        if not self._advance(product, msg.sequence):
            return  # older than what was published: never move a BBO backwards
        ts = schemas.to_ns(msg.time) if msg.time is not None else None
        if "ticker" in wants:
            out.records.append(
                Ticker(
                    exchange=self.exchange,
                    symbol=product,
                    ts=ts,
                    recv_ts=recv_ts,
                    last=msg.price,
                    bid=msg.best_bid,
                    ask=msg.best_ask,
                    open_24h=msg.open_24h,
                    high_24h=msg.high_24h,
                    low_24h=msg.low_24h,
                    volume_24h=msg.volume_24h,
                )
            )
        if "bbo" in wants and msg.best_bid_size is not None and msg.best_ask_size is not None:
            out.records.append(
                BBO(
                    exchange=self.exchange,
                    symbol=product,
                    ts=ts,
                    recv_ts=recv_ts,
                    bid_price=msg.best_bid,
                    bid_size=msg.best_bid_size,
                    ask_price=msg.best_ask,
                    ask_size=msg.best_ask_size,
                )
            )

    def _on_heartbeat(self, msg: HeartbeatMessage, recv_ts: int, out: Output) -> None:
        product = msg.product_id
        wants = self._route(product)
        if not self._advance(product, msg.sequence):
            return
        last = self.trade_id.get(product)
        if "trades" in wants and last is not None and msg.last_trade_id > last:
            self._gap(
                product,
                f"heartbeat reports trade {msg.last_trade_id}, last match seen was {last}",
                recv_ts,
                out,
            )
        if last is None or msg.last_trade_id > last:
            self.trade_id[product] = msg.last_trade_id

    def _gap(self, product: str, detail: str, recv_ts: int, out: Output) -> None:
        """Report lost messages for a product; resync its book if it has a live one."""
        book = self.books.get(product)
        if book is not None and book.live:
            book.fail(StatusEvent.GAP, detail, recv_ts, out)  # gap + resync + ResyncBook
            return
        out.records.append(self._status(product, StatusEvent.GAP, detail, recv_ts))

    def _on_answer(
        self, subs: Subscriptions | None, error: Error | None, recv_ts: int, out: Output
    ) -> None:
        """The answer to the oldest unanswered request: a ``subscriptions`` list or an error."""
        awaited = self._awaited.popleft() if self._awaited else None
        if error is not None:
            detail = f"{error.message}: {error.reason}" if error.reason else error.message
            if awaited is not None and awaited.key is not None:
                out.rejects.append((awaited.key, detail))
            else:
                symbol = awaited.symbol if awaited is not None else None
                out.records.append(self._status(symbol, StatusEvent.ERROR, detail, recv_ts))
        elif awaited is not None and awaited.key is not None and subs is not None:
            listed = {(_canonical(c.name), p) for c in subs.channels for p in c.product_ids}
            missing = sorted(f"{c}:{p}" for c, p in awaited.wanted - listed)
            if missing:
                out.rejects.append((awaited.key, f"not subscribed: {', '.join(missing)}"))
            else:
                out.acks.append(awaited.key)
        if awaited is not None and awaited.key is not None:
            self._initial_unanswered -= 1
            if not self._initial_unanswered:
                for product in self._deferred_resyncs:
                    out.actions.extend(self._resubscribe(product))
                self._deferred_resyncs.clear()

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


def _canonical(channel: str) -> str:
    return _SAME_SUBSCRIPTION.get(channel, channel)


def _message(kind: str, products: list[str], channels: list[str]) -> bytes:
    return json.dumps(
        {"type": kind, "product_ids": products, "channels": channels}, separators=(",", ":")
    ).encode()


__all__ = ["CoinbaseFeed", "CoinbaseProtocol"]
