"""Kraken spot feed over WebSocket v2: subscriptions with per-symbol acks, and decoding.

Channels -> Kraken v2 channels: ``trades`` -> ``trade`` (taker side as sent), ``l2_book`` ->
``book`` at the subscribed depth (10/25/100/500/1000: the smallest one covering the config's
``book_depth``), CRC32-verified on every snapshot and update, ``ticker`` -> ``ticker``,
``bbo`` -> ``ticker`` with ``event_trigger: "bbo"`` (an update on every change of the best
bid/offer; one subscription serves both ``ticker`` and ``bbo`` of a symbol). The ``heartbeat``
channel (about 1/s on an otherwise idle connection) and the ``status`` channel (engine state)
are read but carry no market data. Symbols: ``BTC-USD`` <-> ``BTC/USD``.

Keepalive: Kraken sends ``heartbeat`` frames by itself; the client also sends the v2
application ping ``{"method":"ping"}`` every 20 s and expects ``{"method":"pong"}`` so that a
half-open connection is detected within the pong timeout.

Options (``options:`` in the feed's config):
    precision: ``{SYMBOL: [price_decimals, qty_decimals]}`` used to render levels for the
        checksum (e.g. ``{"BTC-USD": [1, 8]}``). Without it the decimals are learned from the
        wire tokens (see :mod:`streamkit_kraken.checksum`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import msgspec

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
from streamkit.model import BBO, PriceLevel, Status, StatusEvent, Ticker, Trade
from streamkit_kraken import schemas, symbols
from streamkit_kraken.checksum import Precision
from streamkit_kraken.depth_sync import DepthSync
from streamkit_kraken.schemas import Envelope, Level

VENUE_CHANNEL = {"trades": "trade", "l2_book": "book", "ticker": "ticker", "bbo": "ticker"}
"""Normalized channel -> Kraken v2 channel."""

DEPTHS = (10, 25, 100, 500, 1000)
"""Book depths Kraken v2 accepts."""

OPTIONS = frozenset({"precision"})


def subscribed_depth(book_depth: int) -> int:
    """The smallest depth Kraken offers that covers ``book_depth`` (1000 at most)."""
    return next((d for d in DEPTHS if d >= book_depth), DEPTHS[-1])


def parse_precision(options: Mapping[str, Any]) -> dict[str, Precision]:
    """``options.precision`` -> Precision per normalized symbol. Raises ValueError."""
    try:
        table = msgspec.convert(options.get("precision", {}), dict[str, tuple[int, int]])
    except msgspec.ValidationError as exc:
        raise ValueError(
            f"precision must map symbols to [price_decimals, qty_decimals]: {exc}"
        ) from None
    return {symbol: Precision(price, qty) for symbol, (price, qty) in table.items()}


class KrakenFeed(Feed):
    """Kraken spot public market data (WebSocket v2)."""

    id: ClassVar[str] = "kraken"
    channels: ClassVar[frozenset[str]] = frozenset(VENUE_CHANNEL)
    default_url: ClassVar[str] = "wss://ws.kraken.com/v2"
    limits: ClassVar[Limits] = Limits(
        # Kraken documents no fixed subscription cap and a load-dependent message rate
        # ("Exceeded msg rate"); these stay well inside what its public clients use.
        max_streams_per_connection=200,
        max_streams_per_message=50,
        max_messages_per_second=2.0,
        # Kraken's edge limits connection attempts per IP; ~150 per 10 minutes is safe.
        max_connects=150,
        connect_window=600.0,
    )
    heartbeat: ClassVar[Heartbeat] = Heartbeat(interval=20.0, payload=b'{"method":"ping"}')

    def exchange_symbol(self, symbol: str) -> str:
        return symbols.to_exchange(symbol)

    def normalize_symbol(self, exchange_symbol: str) -> str:
        return symbols.to_normalized(exchange_symbol)

    def stream_name(self, channel: str, symbol: str) -> str:
        return f"{VENUE_CHANNEL[channel]}:{self.exchange_symbol(symbol)}"

    @property
    def depth(self) -> int:
        return subscribed_depth(self.config.book_depth)

    def protocol(self, plan: ConnectionPlan, connection: str) -> KrakenProtocol:
        return KrakenProtocol(self, plan, connection)

    def check(self) -> list[tuple[str, str]]:
        problems = super().check()
        for key in sorted(set(self.config.options) - OPTIONS):
            problems.append((f"options.{key}", f"kraken has no option {key!r} (it has: precision)"))
        try:
            parse_precision(self.config.options)
        except ValueError as exc:
            problems.append(("options.precision", str(exc)))
        return problems


class KrakenProtocol(FeedProtocol):
    """One Kraken v2 connection."""

    feed: KrakenFeed

    def __init__(self, feed: KrakenFeed, plan: ConnectionPlan, connection: str) -> None:
        super().__init__(feed, plan, connection)
        self.symbols: dict[str, str] = {}
        """Kraken pair -> normalized symbol, for every symbol this connection carries."""
        self.wants: dict[str, set[str]] = {}
        """Normalized symbol -> its normalized channels."""
        for s in plan.streams:
            self.symbols[feed.exchange_symbol(s.symbol)] = s.symbol
            self.wants.setdefault(s.symbol, set()).add(s.channel)
        precision = parse_precision(feed.config.options)
        self.books: dict[str, DepthSync] = {
            symbol: DepthSync(feed.id, symbol, connection, feed.depth, precision.get(symbol))
            for symbol, channels in self.wants.items()
            if "l2_book" in channels
        }
        self._next_req_id = 1
        self._unacked: dict[str, set[tuple[str, str]]] = {}
        """Request key -> (Kraken channel, pair) acks still due (one ack per pair)."""
        self._key_of: dict[tuple[str, str], str] = {}
        """(Kraken channel, pair) -> key of the request that subscribed it."""
        self._resync_req_ids: set[int] = set()

    def url(self) -> str:
        return self.feed.url

    # --- subscribing -----------------------------------------------------------------------

    def _req_id(self) -> int:
        rid = self._next_req_id
        self._next_req_id += 1
        return rid

    def _params(self, venue_channel: str, symbol: str) -> dict[str, Any]:
        """Subscription parameters besides channel and symbols."""
        if venue_channel == "book":
            return {"depth": self.feed.depth}
        if venue_channel == "trade":
            # No replay of the last 50 trades: after a reconnect it would duplicate trades.
            return {"snapshot": False}
        if venue_channel == "ticker" and "bbo" in self.wants[symbol]:
            return {"event_trigger": "bbo"}
        return {}

    def _payload(
        self, method: str, channel: str, pairs: list[str], params: dict[str, Any]
    ) -> tuple[int, bytes]:
        """A subscribe/unsubscribe message and its ``req_id``."""
        rid = self._req_id()
        body = {
            "method": method,
            "params": {"channel": channel, "symbol": pairs, **params},
            "req_id": rid,
        }
        return rid, json.dumps(body, separators=(",", ":")).encode()

    def subscriptions(self) -> list[SubscribeRequest]:
        """One subscribe per (Kraken channel, parameters), at most ``max_streams_per_message``
        pairs each. Kraken acks each pair separately; a request counts as acknowledged once
        every pair of it was."""
        groups: dict[tuple[str, str], dict[str, list[Stream]]] = {}
        for s in self.plan.streams:
            channel = VENUE_CHANNEL[s.channel]
            params = json.dumps(self._params(channel, s.symbol), sort_keys=True)
            pairs = groups.setdefault((channel, params), {})
            pairs.setdefault(self.feed.exchange_symbol(s.symbol), []).append(s)
        requests = []
        size = self.feed.limits.max_streams_per_message
        for (channel, params), by_pair in groups.items():
            names = list(by_pair)
            for start in range(0, len(names), size):
                chunk = names[start : start + size]
                rid, payload = self._payload("subscribe", channel, chunk, json.loads(params))
                key = str(rid)
                self._unacked[key] = {(channel, pair) for pair in chunk}
                for pair in chunk:
                    self._key_of[(channel, pair)] = key
                streams = tuple(s for pair in chunk for s in by_pair[pair])
                requests.append(SubscribeRequest(key, streams, payload))
        return requests

    def resync(self, symbol: str, reason: str) -> list[Action]:
        """Resubscribe just this symbol's book: Kraken answers the new subscription with a
        fresh snapshot, which BookSync verifies before publishing anything again."""
        pair = self.feed.exchange_symbol(symbol)
        actions: list[Action] = []
        for method in ("unsubscribe", "subscribe"):
            rid, payload = self._payload(method, "book", [pair], {"depth": self.feed.depth})
            self._resync_req_ids.add(rid)
            actions.append(Send(payload))
        return actions

    # --- decoding --------------------------------------------------------------------------

    def on_message(self, data: bytes, recv_ts: int, out: Output) -> bool:
        env = schemas.envelope_decoder.decode(data)
        channel = env.channel
        if channel is not None:
            if channel == "book":
                self._on_book(env, recv_ts, out)
                return True
            if channel == "trade":
                self._on_trades(env.data, recv_ts, out)
                return True
            if channel == "ticker":
                self._on_ticker(env.data, recv_ts, out)
                return True
            if channel == "heartbeat":
                return False
            if channel == "status":
                self._on_status(env.data, recv_ts, out)
                return False
            raise DecodeError(f"unexpected channel {channel!r}")
        method = env.method
        if method == "pong":
            out.pong = True
            return False
        if method == "subscribe":
            self._on_subscribe_ack(env, recv_ts, out)
            return False
        if method == "unsubscribe":
            if env.success is False and env.req_id not in self._resync_req_ids:
                self._error(None, f"unsubscribe failed: {env.error}", recv_ts, out)
            return False
        if env.error is not None:
            self._error(None, f"{method or 'request'} failed: {env.error}", recv_ts, out)
            return False
        raise DecodeError("unexpected message shape")

    def _route(self, pair: str) -> str:
        symbol = self.symbols.get(pair)
        if symbol is None:
            raise DecodeError(f"data for a pair this connection did not subscribe: {pair}")
        return symbol

    def _on_book(self, env: Envelope, recv_ts: int, out: Output) -> None:
        kind = env.type
        if kind != "snapshot" and kind != "update":
            raise DecodeError(f"unexpected book message type {kind!r}")
        for item in schemas.book_decoder.decode(env.data):
            symbol = self._route(item.symbol)
            book = self.books.get(symbol)
            if book is None:
                raise DecodeError(f"book data for {item.symbol}, whose book was not subscribed")
            bids, asks = _levels(item.bids), _levels(item.asks)
            ts = schemas.to_ns(item.timestamp) if item.timestamp is not None else None
            if kind == "snapshot":
                book.on_snapshot(bids, asks, item.checksum, ts, recv_ts, out)
            else:
                book.on_update(bids, asks, item.checksum, ts, recv_ts, out)

    def _on_trades(self, data: msgspec.Raw, recv_ts: int, out: Output) -> None:
        exchange = self.exchange
        for t in schemas.trade_decoder.decode(data):
            out.records.append(
                Trade(
                    exchange=exchange,
                    symbol=self._route(t.symbol),
                    ts=schemas.to_ns(t.timestamp),
                    recv_ts=recv_ts,
                    price=t.price,
                    size=t.qty,
                    side=t.side,  # Kraken v2 sends the taker's side
                    id=str(t.trade_id),
                )
            )

    def _on_ticker(self, data: msgspec.Raw, recv_ts: int, out: Output) -> None:
        exchange = self.exchange
        for k in schemas.ticker_decoder.decode(data):
            symbol = self._route(k.symbol)
            wants = self.wants[symbol]
            ts = schemas.to_ns(k.timestamp) if k.timestamp is not None else None
            if "ticker" in wants:
                out.records.append(
                    Ticker(
                        exchange=exchange,
                        symbol=symbol,
                        ts=ts,
                        recv_ts=recv_ts,
                        last=k.last,
                        bid=k.bid,
                        ask=k.ask,
                        # ``change`` is the last price minus the price 24 h ago
                        open_24h=k.last - k.change if k.change is not None else None,
                        high_24h=k.high,
                        low_24h=k.low,
                        volume_24h=k.volume,
                    )
                )
            if "bbo" in wants:
                out.records.append(
                    BBO(
                        exchange=exchange,
                        symbol=symbol,
                        ts=ts,
                        recv_ts=recv_ts,
                        bid_price=k.bid,
                        bid_size=k.bid_qty,
                        ask_price=k.ask,
                        ask_size=k.ask_qty,
                    )
                )

    def _on_status(self, data: msgspec.Raw, recv_ts: int, out: Output) -> None:
        for s in schemas.status_decoder.decode(data):
            if s.system != "online":
                # maintenance / cancel_only / post_only / limit_only: data may stop or thin out
                self._error(None, f"Kraken engine status: {s.system}", recv_ts, out)

    def _on_subscribe_ack(self, env: Envelope, recv_ts: int, out: Output) -> None:
        rid = env.req_id
        if rid is not None and rid in self._resync_req_ids:
            if env.success is False:
                pair = env.symbol or (env.result.symbol if env.result else None)
                symbol = self.symbols.get(pair or "")
                self._error(symbol, f"book resubscription failed: {env.error}", recv_ts, out)
            return
        if env.success:
            if env.result is None or env.result.symbol is None:
                raise DecodeError("subscribe ack without result.channel/symbol")
            target = (env.result.channel, env.result.symbol)
            key = str(rid) if rid is not None and str(rid) in self._unacked else None
            key = key or self._key_of.get(target)
            remaining = self._unacked.get(key) if key is not None else None
            if key is None or remaining is None:
                return  # an ack for a request already settled (or rejected)
            remaining.discard(target)
            if not remaining:
                del self._unacked[key]
                out.acks.append(key)
            return
        pair = env.symbol or (env.result.symbol if env.result else None)
        reason = f"{pair}: {env.error}" if pair else str(env.error)
        key = str(rid) if rid is not None and str(rid) in self._unacked else None
        if key is None and pair is not None:
            key = next(
                (k for k, due in self._unacked.items() if any(p == pair for _, p in due)), None
            )
        if key is None:
            self._error(None, f"subscribe failed: {reason}", recv_ts, out)
            return
        del self._unacked[key]
        out.rejects.append((key, reason))

    def _error(self, symbol: str | None, detail: str, recv_ts: int, out: Output) -> None:
        out.records.append(
            Status(
                exchange=self.exchange,
                symbol=symbol,
                ts=None,
                recv_ts=recv_ts,
                event=StatusEvent.ERROR,
                detail=detail,
                connection=self.connection,
            )
        )


def _levels(levels: Iterable[Level]) -> list[PriceLevel]:
    return [(level.price, level.qty) for level in levels]


__all__ = ["KrakenFeed", "KrakenProtocol"]
