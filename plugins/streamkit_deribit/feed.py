"""Deribit feed: JSON-RPC ``public/subscribe``, server heartbeats, channels decoded into records.

Channels -> Deribit channels (``<interval>`` is ``100ms`` unless ``options.interval`` says
``agg2`` or ``raw``; ``raw`` needs an authenticated connection on the live venue today):

=================  ================================  ========================================
channel            Deribit channel                   records
=================  ================================  ========================================
``trades``         ``trades.<instrument>.<iv>``      Trade (``direction`` is the taker side,
                                                     ``amount`` the size: USD contracts for
                                                     inverse futures, base units for options)
``bbo``            ``quote.<instrument>``            BBO (skipped while a side is empty)
``l2_book``        ``book.<instrument>.<iv>``        Book, verified by the ``change_id`` chain
``ticker``         ``ticker.<instrument>.<iv>``      Ticker: last, best bid/ask, 24 h high,
                                                     low, volume and ``volume_usd`` as the
                                                     quote volume (no 24 h open is sent)
``funding``        ``ticker.<instrument>.<iv>``      Funding (perpetuals only):
                                                     ``current_funding`` as the rate, mark and
                                                     index prices (``funding_8h``, the funding
                                                     of the past 8 h, has no field to go in)
``open_interest``  ``ticker.<instrument>.<iv>``      OpenInterest
=================  ================================  ========================================

``ticker``, ``funding`` and ``open_interest`` share one ticker channel (subscribed once).

Books: the first ``book`` notification is a ``snapshot``; every ``change`` carries
``prev_change_id``, which must equal the previous message's ``change_id``. The shared
:class:`~streamkit.book.BookSync` checks the chain (and for crossed books); a break is a gap,
resynchronised by unsubscribing and resubscribing that instrument's book channel (Deribit
answers a subscription with a fresh snapshot).

Keepalive: on connect the client calls ``public/set_heartbeat`` (``options.heartbeat_interval``
seconds, default 30, at least 10); the server then sends ``test_request`` heartbeats that must
be answered with ``public/test`` or it closes the connection. The client also sends its own
``public/test`` every 15 s and counts the reply as the pong (half-open connections are caught
by the actor's pong timeout).
"""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any, ClassVar

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
from streamkit.model import (
    BBO,
    Funding,
    OpenInterest,
    PriceLevel,
    Record,
    Status,
    StatusEvent,
    Ticker,
    Trade,
)
from streamkit_deribit import schemas, symbols
from streamkit_deribit.schemas import BookEntry, Envelope

INTERVALS = ("100ms", "agg2", "raw")
DEFAULT_INTERVAL = "100ms"
DEFAULT_HEARTBEAT_INTERVAL = 30
MIN_HEARTBEAT_INTERVAL = 10
"""Deribit rejects ``public/set_heartbeat`` intervals under 10 s."""

_CHANNEL_KIND = {
    "trades": "trades",
    "bbo": "quote",
    "l2_book": "book",
    "ticker": "ticker",
    "funding": "ticker",
    "open_interest": "ticker",
}
"""Normalized channel -> Deribit channel family."""

_MS = 1_000_000  # Deribit times are ms; records carry ns
_ZERO = Decimal(0)


class DeribitFeed(Feed):
    """Deribit public market data (API v2, JSON-RPC over WebSocket)."""

    id: ClassVar[str] = "deribit"
    channels: ClassVar[frozenset[str]] = frozenset(_CHANNEL_KIND)
    default_url: ClassVar[str] = "wss://www.deribit.com/ws/api/v2"
    limits: ClassVar[Limits] = Limits(
        # No documented per-connection channel cap; 500 keeps one connection's traffic sane.
        max_streams_per_connection=500,
        max_streams_per_message=100,
        # public/subscribe costs 3,000 of a 30,000-credit pool: about 3.3 calls/s sustained.
        max_messages_per_second=3.0,
        # 32 simultaneous connections per IP (HTTP and WebSocket together).
        max_connects=32,
        connect_window=60.0,
    )
    # The protocol numbers each public/test call (heartbeat_payload); this is the shape.
    heartbeat: ClassVar[Heartbeat] = Heartbeat(
        interval=15.0, payload=b'{"jsonrpc":"2.0","id":0,"method":"public/test","params":{}}'
    )

    @property
    def interval(self) -> str:
        value = self.config.options.get("interval", DEFAULT_INTERVAL)
        return value if isinstance(value, str) else DEFAULT_INTERVAL

    @property
    def heartbeat_interval(self) -> int:
        value = self.config.options.get("heartbeat_interval", DEFAULT_HEARTBEAT_INTERVAL)
        return value if isinstance(value, int) else DEFAULT_HEARTBEAT_INTERVAL

    def exchange_symbol(self, symbol: str) -> str:
        return symbols.to_exchange(symbol)

    def normalize_symbol(self, exchange_symbol: str) -> str:
        return symbols.to_normalized(exchange_symbol)

    def stream_name(self, channel: str, symbol: str) -> str:
        kind = _CHANNEL_KIND[channel]
        instrument = self.exchange_symbol(symbol)
        if kind == "quote":
            return f"quote.{instrument}"  # the quote channel has no interval
        return f"{kind}.{instrument}.{self.interval}"

    def protocol(self, plan: ConnectionPlan, connection: str) -> DeribitProtocol:
        return DeribitProtocol(self, plan, connection)

    def check(self) -> list[tuple[str, str]]:
        problems = super().check()
        interval = self.config.options.get("interval", DEFAULT_INTERVAL)
        if interval not in INTERVALS:
            problems.append(
                ("options.interval", f"{interval!r} is not one of {', '.join(INTERVALS)}")
            )
        beat = self.config.options.get("heartbeat_interval", DEFAULT_HEARTBEAT_INTERVAL)
        if not isinstance(beat, int) or isinstance(beat, bool) or beat < MIN_HEARTBEAT_INTERVAL:
            problems.append(
                (
                    "options.heartbeat_interval",
                    f"{beat!r}: Deribit needs whole seconds, at least {MIN_HEARTBEAT_INTERVAL}",
                )
            )
        return problems


class DeribitProtocol(FeedProtocol):
    """One JSON-RPC connection."""

    feed: DeribitFeed

    def __init__(self, feed: DeribitFeed, plan: ConnectionPlan, connection: str) -> None:
        super().__init__(feed, plan, connection)
        routes: dict[str, tuple[str, set[str]]] = {}
        for s in plan.streams:
            routes.setdefault(s.name, (s.symbol, set()))[1].add(s.channel)
        self.routes: dict[str, tuple[str, frozenset[str]]] = {
            name: (symbol, frozenset(chs)) for name, (symbol, chs) in routes.items()
        }
        """Deribit channel -> (normalized symbol, the normalized channels it feeds)."""
        self.books: dict[str, BookSync] = {
            s.symbol: BookSync(feed.id, s.symbol, connection)
            for s in plan.streams
            if s.channel == "l2_book"
        }
        self._ids = itertools.count(1)
        self._subscribe_requests: dict[int, list[str]] = {}
        """Request id -> channels, for the ledger's subscribe requests."""
        self._test_ids: set[int] = set()
        """Ids of the client's own ``public/test`` heartbeats, whose replies are pongs."""

    def url(self) -> str:
        return self.feed.url

    def _request(self, method: str, params: dict[str, Any]) -> tuple[int, bytes]:
        rid = next(self._ids)
        payload = schemas.request_encoder.encode(
            {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}
        )
        return rid, payload

    def on_connected(self, recv_ts: int, out: Output) -> None:
        """Ask for server heartbeats first: Deribit then sends ``test_request``s, and the
        answers keep the connection open."""
        _, payload = self._request(
            "public/set_heartbeat", {"interval": self.feed.heartbeat_interval}
        )
        out.actions.append(Send(payload))

    def subscriptions(self) -> list[SubscribeRequest]:
        names = list(self.routes)
        per_message = self.feed.limits.max_streams_per_message
        requests = []
        for start in range(0, len(names), per_message):
            group = names[start : start + per_message]
            rid, payload = self._request("public/subscribe", {"channels": group})
            streams = tuple(s for s in self.plan.streams if s.name in group)
            self._subscribe_requests[rid] = group
            requests.append(SubscribeRequest(str(rid), streams, payload))
        return requests

    def heartbeat_payload(self) -> bytes:
        rid, payload = self._request("public/test", {})
        self._test_ids.add(rid)
        return payload

    def resync(self, symbol: str, reason: str) -> list[Action]:
        """Resubscribe just this instrument's book channel: Deribit answers a subscription
        with a fresh snapshot (BookSync drops changes until it arrives)."""
        channel = self.feed.stream_name("l2_book", symbol)
        _, unsubscribe = self._request("public/unsubscribe", {"channels": [channel]})
        _, subscribe = self._request("public/subscribe", {"channels": [channel]})
        return [Send(unsubscribe), Send(subscribe)]

    # --- decoding --------------------------------------------------------------------------

    def on_message(self, data: bytes, recv_ts: int, out: Output) -> bool:
        env = schemas.envelope_decoder.decode(data)
        if env.method == "subscription":
            params = env.params
            if params is None or params.channel is None or not params.data:
                raise DecodeError("subscription notification without channel or data")
            self._data(params.channel, params.data, recv_ts, out)
            return True
        if env.method == "heartbeat":
            if env.params is not None and env.params.type == "test_request":
                _, payload = self._request("public/test", {})
                out.actions.append(Send(payload))
            out.pong = True  # the server is alive and writing to us
            return False
        if env.id is not None:
            self._reply(env, recv_ts, out)
            return False
        raise DecodeError("unexpected message shape")

    def _reply(self, env: Envelope, recv_ts: int, out: Output) -> None:
        rid = env.id if isinstance(env.id, int) else None
        channels = self._subscribe_requests.get(rid) if rid is not None else None
        if env.error is not None:
            reason = f"code {env.error.code}: {env.error.message}"
            if channels is not None:
                out.rejects.append((str(rid), reason))
            else:
                out.records.append(self._status(StatusEvent.ERROR, reason, recv_ts))
            return
        if not env.result:
            raise DecodeError(f"reply {env.id} without result or error")
        if rid in self._test_ids:
            self._test_ids.discard(rid)
            out.pong = True
        elif channels is not None:
            confirmed = set(schemas.channels_decoder.decode(env.result))
            missing = [c for c in channels if c not in confirmed]
            if missing:
                out.rejects.append((str(rid), f"not subscribed: {', '.join(missing)}"))
            else:
                out.acks.append(str(rid))
        # anything else answers set_heartbeat, a resync's (un)subscribe or a test_request

    def _data(self, channel: str, raw: msgspec.Raw, recv_ts: int, out: Output) -> None:
        route = self.routes.get(channel)
        if route is None:
            raise DecodeError(f"data for a channel this connection did not subscribe: {channel}")
        symbol, wanted = route
        kind = channel.partition(".")[0]
        if kind == "book":
            self._book(symbol, schemas.book_decoder.decode(raw), recv_ts, out)
        elif kind == "trades":
            out.records.extend(self._trades(symbol, raw, recv_ts))
        elif kind == "quote":
            self._quote(symbol, schemas.quote_decoder.decode(raw), recv_ts, out)
        else:
            self._ticker(symbol, wanted, schemas.ticker_decoder.decode(raw), recv_ts, out)

    def _trades(self, symbol: str, raw: msgspec.Raw, recv_ts: int) -> list[Record]:
        return [
            Trade(
                exchange=self.exchange,
                symbol=symbol,
                ts=t.timestamp * _MS,
                recv_ts=recv_ts,
                price=t.price,
                size=t.amount,
                side=t.direction,
                id=t.trade_id,
            )
            for t in schemas.trades_decoder.decode(raw)
        ]

    def _book(self, symbol: str, book: schemas.BookData, recv_ts: int, out: Output) -> None:
        sync = self.books[symbol]
        bids, asks = _levels(book.bids), _levels(book.asks)
        ts = book.timestamp * _MS
        if book.type == "snapshot":
            sync.snapshot(bids, asks, seq=book.change_id, ts=ts, recv_ts=recv_ts, out=out)
            return
        if book.prev_change_id is None:
            raise DecodeError(f"book change {book.change_id} without prev_change_id")
        sync.delta(
            bids,
            asks,
            seq=book.change_id,
            prev_seq=book.prev_change_id,
            ts=ts,
            recv_ts=recv_ts,
            out=out,
        )

    def _quote(self, symbol: str, q: schemas.QuoteData, recv_ts: int, out: Output) -> None:
        bid, bid_size = _side(q.best_bid_price, q.best_bid_amount)
        ask, ask_size = _side(q.best_ask_price, q.best_ask_amount)
        if bid is None or bid_size is None or ask is None or ask_size is None:
            return
        out.records.append(
            BBO(
                exchange=self.exchange,
                symbol=symbol,
                ts=q.timestamp * _MS,
                recv_ts=recv_ts,
                bid_price=bid,
                bid_size=bid_size,
                ask_price=ask,
                ask_size=ask_size,
            )
        )

    def _ticker(
        self,
        symbol: str,
        wanted: frozenset[str],
        t: schemas.TickerData,
        recv_ts: int,
        out: Output,
    ) -> None:
        exchange, ts = self.exchange, t.timestamp * _MS
        if "ticker" in wanted:
            out.records.append(
                Ticker(
                    exchange=exchange,
                    symbol=symbol,
                    ts=ts,
                    recv_ts=recv_ts,
                    last=t.last_price,
                    bid=_side(t.best_bid_price, t.best_bid_amount)[0],
                    ask=_side(t.best_ask_price, t.best_ask_amount)[0],
                    high_24h=t.stats.high,
                    low_24h=t.stats.low,
                    volume_24h=t.stats.volume,
                    quote_volume_24h=t.stats.volume_usd,
                )
            )
        if "funding" in wanted and t.current_funding is not None:
            out.records.append(
                Funding(
                    exchange=exchange,
                    symbol=symbol,
                    ts=ts,
                    recv_ts=recv_ts,
                    rate=t.current_funding,
                    mark_price=t.mark_price,
                    index_price=t.index_price,
                )
            )
        if "open_interest" in wanted and t.open_interest is not None:
            out.records.append(
                OpenInterest(
                    exchange=exchange,
                    symbol=symbol,
                    ts=ts,
                    recv_ts=recv_ts,
                    open_interest=t.open_interest,
                )
            )

    def _status(self, event: StatusEvent, detail: str, recv_ts: int) -> Status:
        return Status(
            exchange=self.exchange,
            symbol=None,
            ts=None,
            recv_ts=recv_ts,
            event=event,
            detail=detail,
            connection=self.connection,
        )


def _levels(entries: list[BookEntry]) -> list[PriceLevel]:
    """``[action, price, amount]`` -> absolute levels (``delete`` -> size 0)."""
    return [(price, _ZERO if action == "delete" else amount) for action, price, amount in entries]


def _side(price: Decimal | None, amount: Decimal | None) -> tuple[Decimal | None, Decimal | None]:
    """A best bid or ask, (None, None) while that side is empty (Deribit sends 0 or null)."""
    if price is None or amount is None or amount == _ZERO:
        return None, None
    return price, amount


__all__ = ["DeribitFeed", "DeribitProtocol", "Stream"]
