"""Binance USD-M futures feed: combined-stream connection (the spot envelope, shared), live
SUBSCRIBE with acks, futures payloads, and open interest polled over REST.

Channels -> streams:

======================  =========================  ==========================================
channel                 stream                     record
======================  =========================  ==========================================
``trades``              ``<sym>@aggTrade``         Trade (taker side from ``m``)
``bbo``                 ``<sym>@bookTicker``       BBO (``ts`` = transaction time ``T``)
``l2_book``             ``<sym>@depth@100ms``      Book, synchronised with REST snapshots
                                                   and the ``pu`` chain (see depth_sync)
``funding``             ``<sym>@markPrice@1s``     Funding (rate, mark, index, next time)
``liquidations``        ``<sym>@forceOrder``       Liquidation
``ticker``              ``<sym>@ticker``           Ticker (futures sends no bid/ask)
``candles``             ``<sym>@kline_1m``         Candle
``open_interest``       REST poll (no stream)      OpenInterest
======================  =========================  ==========================================

Open interest: Binance serves it only over REST (``GET /fapi/v1/openInterest?symbol=X``),
so the protocol polls it: one request per symbol when the connection opens, then a new
request from each answer, ``options.open_interest_interval`` seconds later (default 10 s;
the endpoint weighs 1 of the 2,400/min request budget). The polls belong to the connection:
they stop when it ends and start again on reconnect. Its streams are in the plan (so sharding
keeps a symbol's channels together) but are never sent in a SUBSCRIBE. Because REST answers
are not WebSocket data, a config whose only channel is ``open_interest`` is rejected: such a
connection would carry no frames and the staleness watchdog would keep replacing it.

Keepalive: the server pings every 3 minutes and libcurl answers, so the client sends no
heartbeat of its own. Limits (USD-M docs): 1,024 streams per connection, 10 incoming
messages per second, 24 h connection lifetime.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

import msgspec

from streamkit.feed import (
    Action,
    ConnectionPlan,
    Feed,
    Heartbeat,
    HttpGet,
    Limits,
    Output,
    Stream,
)
from streamkit.model import (
    BBO,
    Funding,
    Liquidation,
    OpenInterest,
    Status,
    StatusEvent,
    Ticker,
)
from streamkit_binance.combined import CombinedStreamProtocol, PayloadHandler
from streamkit_binance_futures import schemas, symbols
from streamkit_binance_futures.depth_sync import FuturesDepthSync

STREAM_SUFFIX = {
    "trades": "@aggTrade",
    "bbo": "@bookTicker",
    "l2_book": "@depth@100ms",
    "funding": "@markPrice@1s",
    "liquidations": "@forceOrder",
    "ticker": "@ticker",
    "candles": "@kline_1m",
    "open_interest": "@openInterest",  # a REST poll: never subscribed on the WebSocket
}
REST_ONLY_CHANNELS = frozenset({"open_interest"})

DEFAULT_OPEN_INTEREST_INTERVAL = 10.0
SNAPSHOT_DEPTH = 1000
"""The futures depth endpoint serves at most 1,000 levels (Binance's documented sync uses it)."""

_MS = 1_000_000  # Binance times are ms; records carry ns

_OI_TAG = "oi:"


class BinanceFuturesFeed(Feed):
    """Binance USD-M futures public market data.

    Options (``options:`` in the feed's config): ``open_interest_interval`` — seconds
    between open-interest polls per symbol (default 10).
    """

    id: ClassVar[str] = "binance_futures"
    channels: ClassVar[frozenset[str]] = frozenset(STREAM_SUFFIX)
    default_url: ClassVar[str] = "wss://fstream.binance.com/stream"
    default_rest_url: ClassVar[str | None] = "https://fapi.binance.com"
    limits: ClassVar[Limits] = Limits(
        max_streams_per_connection=1024,
        # No documented per-message cap; 200 keeps a SUBSCRIBE small, and 10 messages/s still
        # subscribe 1,024 streams in about half a second.
        max_streams_per_message=200,
        max_messages_per_second=10.0,
        max_connects=300,
        connect_window=300.0,
        max_connection_age=24 * 3600.0,
    )
    heartbeat: ClassVar[Heartbeat] = Heartbeat()

    def exchange_symbol(self, symbol: str) -> str:
        return symbols.to_exchange(symbol)

    def normalize_symbol(self, exchange_symbol: str) -> str:
        return symbols.to_normalized(exchange_symbol)

    def stream_name(self, channel: str, symbol: str) -> str:
        return self.exchange_symbol(symbol).lower() + STREAM_SUFFIX[channel]

    @property
    def open_interest_interval(self) -> float:
        value = self.config.options.get("open_interest_interval", DEFAULT_OPEN_INTEREST_INTERVAL)
        return float(value)

    def protocol(self, plan: ConnectionPlan, connection: str) -> BinanceFuturesProtocol:
        return BinanceFuturesProtocol(self, plan, connection)

    def check(self) -> list[tuple[str, str]]:
        problems = super().check()
        channels = set(self.config.channels)
        if channels and channels <= REST_ONLY_CHANNELS:
            problems.append(
                (
                    "channels",
                    "open_interest is polled over REST and carries no WebSocket data; add a "
                    "streamed channel (e.g. funding) so the connection is not judged stale",
                )
            )
        if "funding" in channels:
            for i, symbol in enumerate(self.config.symbols):
                if not symbols.is_perpetual(symbol):
                    problems.append(
                        (f"symbols[{i}]", f"{symbol} is a dated future: it pays no funding")
                    )
        interval = self.config.options.get("open_interest_interval")
        if interval is not None and (
            isinstance(interval, bool) or not isinstance(interval, int | float) or not interval > 0
        ):
            problems.append(
                ("options.open_interest_interval", f"must be a positive number, not {interval!r}")
            )
        return problems


class BinanceFuturesProtocol(CombinedStreamProtocol):
    """One combined-stream connection to Binance USD-M."""

    def __init__(self, feed: BinanceFuturesFeed, plan: ConnectionPlan, connection: str) -> None:
        super().__init__(feed, plan, connection)
        self.futures = feed
        self.books: dict[str, FuturesDepthSync] = {}
        self.open_interest_urls: dict[str, str] = {}
        for s in plan.streams:
            ex = feed.exchange_symbol(s.symbol)
            if s.channel == "l2_book":
                url = f"{feed.rest_url}/fapi/v1/depth?symbol={ex}&limit={SNAPSHOT_DEPTH}"
                self.books[s.symbol] = FuturesDepthSync(feed.id, s.symbol, connection, url)
            elif s.channel == "open_interest":
                url = f"{feed.rest_url}/fapi/v1/openInterest?symbol={ex}"
                self.open_interest_urls[s.symbol] = url

    def subscribed_streams(self) -> list[Stream]:
        return [s for s in self.plan.streams if s.channel not in REST_ONLY_CHANNELS]

    def on_connected(self, recv_ts: int, out: Output) -> None:
        for symbol, url in self.open_interest_urls.items():
            out.actions.append(HttpGet(url, tag=_OI_TAG + symbol))

    tagged_payloads: ClassVar[Mapping[str, type[msgspec.Struct]]] = {
        "trades": schemas.AggTradeEvent,
        "bbo": schemas.FuturesBookTickerEvent,
        "l2_book": schemas.FuturesDepthUpdateEvent,
        "funding": schemas.MarkPriceEvent,
        "liquidations": schemas.ForceOrderEvent,
        "ticker": schemas.FuturesTickerEvent,
        "candles": schemas.KlineEventTagged,
    }

    payload_decoders: ClassVar[Mapping[str, msgspec.json.Decoder[Any]]] = {
        "trades": schemas.agg_trade_decoder,
        "bbo": schemas.book_ticker_decoder,
        "l2_book": schemas.depth_update_decoder,
        "funding": schemas.mark_price_decoder,
        "liquidations": schemas.force_order_decoder,
        "ticker": schemas.ticker_decoder,
        "candles": schemas.kline_decoder,
    }

    def payload_handlers(self) -> dict[str, PayloadHandler]:
        # trades and candles: the shared aggTrade and kline handlers (CombinedStreamProtocol)
        return {
            "trades": self._on_trade,
            "bbo": self._on_bbo,
            "l2_book": self._on_depth,
            "funding": self._on_funding,
            "liquidations": self._on_liquidation,
            "ticker": self._on_ticker,
            "candles": self._on_kline,
        }

    def _on_bbo(self, symbol: str, b: schemas.FuturesBookTicker, recv_ts: int, out: Output) -> None:
        out.records.append(
            BBO(
                exchange=self._exchange,
                symbol=symbol,
                ts=b.transaction_time * _MS,
                recv_ts=recv_ts,
                bid_price=b.bid_price,
                bid_size=b.bid_qty,
                ask_price=b.ask_price,
                ask_size=b.ask_qty,
            )
        )

    def _on_depth(
        self, symbol: str, d: schemas.FuturesDepthUpdate, recv_ts: int, out: Output
    ) -> None:
        self.books[symbol].on_diff(d, recv_ts, out)

    def _on_liquidation(
        self, symbol: str, f: schemas.ForceOrder, recv_ts: int, out: Output
    ) -> None:
        o = f.order
        out.records.append(
            Liquidation(
                exchange=self._exchange,
                symbol=symbol,
                ts=o.trade_time * _MS,
                recv_ts=recv_ts,
                side="buy" if o.side == "BUY" else "sell",
                # What the forced order executed at and how much of it filled; an order not
                # (yet) filled reports 0 for both, so fall back to the order's own.
                price=o.average_price or o.price,
                size=o.filled_qty or o.orig_qty,
            )
        )

    def _on_ticker(self, symbol: str, k: schemas.FuturesTicker, recv_ts: int, out: Output) -> None:
        out.records.append(
            Ticker(
                exchange=self._exchange,
                symbol=symbol,
                ts=k.event_time * _MS,
                recv_ts=recv_ts,
                last=k.last,
                open_24h=k.open,
                high_24h=k.high,
                low_24h=k.low,
                volume_24h=k.volume,
                quote_volume_24h=k.quote_volume,
            )
        )

    def _on_funding(self, symbol: str, m: schemas.MarkPrice, recv_ts: int, out: Output) -> None:
        if not m.funding_rate:
            return  # a dated contract: mark price only, no funding (check() warns of it)
        try:
            rate = Decimal(m.funding_rate)
        except InvalidOperation:
            raise msgspec.ValidationError(
                f"markPriceUpdate funding rate {m.funding_rate!r} is not a decimal"
            ) from None
        out.records.append(
            Funding(
                exchange=self._exchange,
                symbol=symbol,
                ts=m.event_time * _MS,
                recv_ts=recv_ts,
                rate=rate,
                mark_price=m.mark_price,
                index_price=m.index_price,
                next_funding_ts=m.next_funding_time * _MS if m.next_funding_time else None,
            )
        )

    def resync(self, symbol: str, reason: str) -> list[Action]:
        # FuturesDepthSync already asked for a fresh REST snapshot: the diff stream is intact,
        # so neither a resubscription nor a reconnect is needed.
        return []

    def on_http(
        self, request: HttpGet, status: int, body: bytes, recv_ts: int, out: Output
    ) -> None:
        if request.tag.startswith(_OI_TAG):
            self._on_open_interest(request, status, body, recv_ts, out)
            return
        sync = self.books.get(request.tag)
        if sync is None:
            return
        if status != 200:
            sync.on_snapshot_failed(f"HTTP {status}: {body[:200]!r}", recv_ts, out)
            return
        try:
            snap = schemas.depth_snapshot_decoder.decode(body)
        except msgspec.DecodeError as exc:
            sync.on_snapshot_failed(f"bad snapshot body: {exc}", recv_ts, out)
            return
        sync.on_snapshot(snap, recv_ts, out)

    def _on_open_interest(
        self, request: HttpGet, status: int, body: bytes, recv_ts: int, out: Output
    ) -> None:
        symbol = request.tag[len(_OI_TAG) :]
        problem = f"HTTP {status}: {body[:200]!r}" if status != 200 else None
        if problem is None:
            try:
                answer = schemas.open_interest_decoder.decode(body)
            except msgspec.DecodeError as exc:
                problem = f"bad open interest body: {exc}"
            else:
                out.records.append(
                    OpenInterest(
                        exchange=self.exchange,
                        symbol=symbol,
                        ts=answer.time * _MS,
                        recv_ts=recv_ts,
                        open_interest=answer.open_interest,
                    )
                )
        if problem is not None:
            out.records.append(
                Status(
                    exchange=self.exchange,
                    symbol=symbol,
                    ts=None,
                    recv_ts=recv_ts,
                    event=StatusEvent.ERROR,
                    detail=f"open interest poll failed: {problem}",
                    connection=self.connection,
                )
            )
        # Poll again whatever happened: a failed poll is retried at the same pace.
        interval = self.futures.open_interest_interval
        out.actions.append(HttpGet(request.url, tag=request.tag, delay=interval))
