"""Binance spot feed: combined-stream connection, live SUBSCRIBE with acks, and decoding.

Channels -> streams: ``trades`` -> ``<sym>@aggTrade``, ``bbo`` -> ``<sym>@bookTicker``,
``l2_book`` -> ``<sym>@depth@100ms`` (synchronised with REST snapshots), ``ticker`` ->
``<sym>@ticker``, ``candles`` -> ``<sym>@kline_1m``. Symbols: ``BTC-USDT`` <-> ``BTCUSDT``.

Keepalive: Binance pings every 20 s and libcurl answers its pings, so the client sends no
heartbeat of its own; liveness is judged by the staleness watchdog.
"""

from __future__ import annotations

from collections.abc import Mapping
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
from streamkit.model import BBO, Ticker
from streamkit_binance import schemas, symbols
from streamkit_binance.combined import CombinedStreamProtocol, PayloadHandler
from streamkit_binance.depth_sync import DepthSync

STREAM_SUFFIX = {
    "trades": "@aggTrade",
    "bbo": "@bookTicker",
    "l2_book": "@depth@100ms",
    "ticker": "@ticker",
    "candles": "@kline_1m",
}

_MS = 1_000_000  # Binance times are ms; records carry ns


class BinanceFeed(Feed):
    """Binance spot public market data."""

    id: ClassVar[str] = "binance"
    channels: ClassVar[frozenset[str]] = frozenset(STREAM_SUFFIX)
    default_url: ClassVar[str] = "wss://stream.binance.com:9443/stream"
    default_rest_url: ClassVar[str | None] = "https://api.binance.com"
    limits: ClassVar[Limits] = Limits(
        max_streams_per_connection=1024,
        # Binance documents no per-message cap; 200 keeps each SUBSCRIBE well under frame
        # limits and the 5 messages/s pace still subscribes 1,000 streams in one second.
        max_streams_per_message=200,
        max_messages_per_second=5.0,
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

    def protocol(self, plan: ConnectionPlan, connection: str) -> BinanceProtocol:
        return BinanceProtocol(self, plan, connection)


class BinanceProtocol(CombinedStreamProtocol):
    """One combined-stream connection to Binance spot."""

    def __init__(self, feed: Feed, plan: ConnectionPlan, connection: str) -> None:
        super().__init__(feed, plan, connection)
        self.books: dict[str, DepthSync] = {}
        depth = min(feed.config.book_depth, 5000)
        for s in plan.streams:
            if s.channel == "l2_book":
                ex = feed.exchange_symbol(s.symbol)
                url = f"{feed.rest_url}/api/v3/depth?symbol={ex}&limit={depth}"
                self.books[s.symbol] = DepthSync(feed.id, s.symbol, connection, url)

    tagged_payloads: ClassVar[Mapping[str, type[msgspec.Struct]]] = {
        "trades": schemas.AggTradeEvent,
        "l2_book": schemas.DepthUpdateEvent,
        "ticker": schemas.Ticker24hEvent,
        "candles": schemas.KlineEventTagged,
    }

    payload_decoders: ClassVar[Mapping[str, msgspec.json.Decoder[Any]]] = {
        "trades": schemas.agg_trade_decoder,
        "bbo": schemas.book_ticker_decoder,
        "l2_book": schemas.depth_update_decoder,
        "ticker": schemas.ticker_decoder,
        "candles": schemas.kline_decoder,
    }

    def payload_handlers(self) -> dict[str, PayloadHandler]:
        # trades and candles: the shared aggTrade and kline handlers (CombinedStreamProtocol)
        return {
            "trades": self._on_trade,
            "bbo": self._on_bbo,
            "l2_book": self._on_depth,
            "ticker": self._on_ticker,
            "candles": self._on_kline,
        }

    def _on_bbo(self, symbol: str, b: schemas.BookTicker, recv_ts: int, out: Output) -> None:
        out.records.append(
            BBO(
                exchange=self._exchange,
                symbol=symbol,
                ts=None,
                recv_ts=recv_ts,
                bid_price=b.bid_price,
                bid_size=b.bid_qty,
                ask_price=b.ask_price,
                ask_size=b.ask_qty,
            )
        )

    def _on_depth(self, symbol: str, d: schemas.DepthUpdate, recv_ts: int, out: Output) -> None:
        self.books[symbol].on_diff(d, recv_ts, out)

    def _on_ticker(self, symbol: str, k: schemas.Ticker24h, recv_ts: int, out: Output) -> None:
        out.records.append(
            Ticker(
                exchange=self._exchange,
                symbol=symbol,
                ts=k.event_time * _MS,
                recv_ts=recv_ts,
                last=k.last,
                bid=k.bid,
                ask=k.ask,
                open_24h=k.open,
                high_24h=k.high,
                low_24h=k.low,
                volume_24h=k.volume,
                quote_volume_24h=k.quote_volume,
            )
        )

    def resync(self, symbol: str, reason: str) -> list[Action]:
        # DepthSync already asked for a fresh REST snapshot: the diff stream is intact, so
        # neither a resubscription nor a reconnect is needed.
        return []

    def on_http(
        self, request: HttpGet, status: int, body: bytes, recv_ts: int, out: Output
    ) -> None:
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


__all__ = ["BinanceFeed", "BinanceProtocol", "Stream"]
