"""BitMEX realtime feed: topic subscriptions with per-topic acks, tables decoded into records.

Channels -> BitMEX topics (``<table>:<symbol>``):

=================  ==========================  ==============================================
channel            topic                       records
=================  ==========================  ==============================================
``trades``         ``trade:XBTUSD``            Trade (``side`` is the taker's; settlement
                                               prints, which have no side, are skipped)
``bbo``            ``quote:XBTUSD``            BBO (rows with an empty side are skipped)
``l2_book``        ``orderBookL2:XBTUSD``      Book, verified by :mod:`.l2_table`
``ticker``         ``instrument:XBTUSD``       Ticker: last/bid/ask, ``prevPrice24h`` as
                                               ``open_24h``, high/low, ``volume24h``
                                               (contracts), ``foreignNotional24h`` as
                                               ``quote_volume_24h``
``funding``        ``instrument:XBTUSD``       Funding: ``fundingRate`` (the rate of the next
                                               funding), ``markPrice``,
                                               ``indicativeSettlePrice`` as the index price,
                                               ``indicativeFundingRate`` as the predicted
                                               rate, ``fundingTimestamp``; also a ``funding``
                                               table row (an applied funding), should one
                                               arrive
``open_interest``  ``instrument:XBTUSD``       OpenInterest (contracts)
``liquidations``   ``liquidation:XBTUSD``      Liquidation, one per new liquidation order
=================  ==========================  ==============================================

``ticker``, ``funding`` and ``open_interest`` share one ``instrument`` topic (subscribed once).
BitMEX sends instrument *changes*: the plugin merges them into the full row per symbol, like
BitMEX's own table model, and publishes a record whenever a field it carries changed.
Sizes are contracts, as BitMEX reports them. The ``partial`` image of the ``trade``,
``funding`` and ``liquidation`` tables repeats events from before the subscription (a
reconnect would publish them twice), so it is not published.

Keepalive: BitMEX sends no heartbeat of its own; the client sends the text ``ping`` every
5 s and BitMEX answers ``pong``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

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
    Record,
    Side,
    Status,
    StatusEvent,
    Ticker,
    Trade,
)
from streamkit_bitmex import schemas, symbols
from streamkit_bitmex.l2_table import L2Table, to_ns
from streamkit_bitmex.schemas import Envelope, InstrumentRow, WireSide

TABLE = {
    "trades": "trade",
    "bbo": "quote",
    "l2_book": "orderBookL2",
    "ticker": "instrument",
    "funding": "instrument",
    "open_interest": "instrument",
    "liquidations": "liquidation",
}
"""Normalized channel -> BitMEX table."""

_T = TypeVar("_T")

_SIDE: dict[WireSide, Side] = {"Buy": "buy", "Sell": "sell"}
_PING = b"ping"
_PONG = b"pong"

_TICKER_FIELDS = (
    "last_price",
    "bid_price",
    "ask_price",
    "prev_price24h",
    "high_price",
    "low_price",
    "volume24h",
    "foreign_notional24h",
)
_FUNDING_FIELDS = (
    "funding_rate",
    "indicative_funding_rate",
    "funding_timestamp",
    "mark_price",
    "indicative_settle_price",
)


class BitmexFeed(Feed):
    """BitMEX public market data (realtime WebSocket API)."""

    id: ClassVar[str] = "bitmex"
    channels: ClassVar[frozenset[str]] = frozenset(TABLE)
    default_url: ClassVar[str] = "wss://ws.bitmex.com/realtime"
    limits: ClassVar[Limits] = Limits(
        # BitMEX documents no per-connection topic cap; these keep subscribe messages small
        # (the captured client sent 10 topics per message) and connections moderate.
        max_streams_per_connection=200,
        max_streams_per_message=20,
        max_messages_per_second=2.0,
        # The welcome frame reports a connection budget ("limit": {"remaining": 39}):
        # 40 connects per hour per IP.
        max_connects=40,
        connect_window=3600.0,
    )
    heartbeat: ClassVar[Heartbeat] = Heartbeat(interval=5.0, payload=_PING)

    def exchange_symbol(self, symbol: str) -> str:
        return symbols.to_exchange(symbol)

    def normalize_symbol(self, exchange_symbol: str) -> str:
        return symbols.to_normalized(exchange_symbol)

    def stream_name(self, channel: str, symbol: str) -> str:
        return f"{TABLE[channel]}:{self.exchange_symbol(symbol)}"

    def protocol(self, plan: ConnectionPlan, connection: str) -> BitmexProtocol:
        return BitmexProtocol(self, plan, connection)


class BitmexProtocol(FeedProtocol):
    """One realtime connection."""

    def __init__(self, feed: Feed, plan: ConnectionPlan, connection: str) -> None:
        super().__init__(feed, plan, connection)
        self.symbols: dict[str, str] = {}
        """BitMEX symbol -> normalized, for the symbols of this connection."""
        self.channels: dict[tuple[str, str], frozenset[str]] = {}
        """(table, BitMEX symbol) -> the normalized channels fed by it."""
        routes: dict[tuple[str, str], set[str]] = {}
        for s in plan.streams:
            table, _, ex = s.name.partition(":")
            self.symbols[ex] = s.symbol
            routes.setdefault((table, ex), set()).add(s.channel)
        self.channels = {key: frozenset(chs) for key, chs in routes.items()}
        self.books: dict[str, L2Table] = {
            ex: L2Table(feed.id, self.symbols[ex], connection)
            for (table, ex) in self.channels
            if table == "orderBookL2"
        }
        self.instruments: dict[str, InstrumentRow] = {}
        """The merged ``instrument`` row per BitMEX symbol."""
        self._request_of: dict[str, str] = {}
        """Topic -> key of the subscribe request that carries it (acks come per topic)."""
        self._unacked: dict[str, set[str]] = {}

    def url(self) -> str:
        return self.feed.url

    def subscriptions(self) -> list[SubscribeRequest]:
        topics = list(dict.fromkeys(s.name for s in self.plan.streams))
        per_message = self.feed.limits.max_streams_per_message
        requests = []
        for start in range(0, len(topics), per_message):
            group = topics[start : start + per_message]
            key = group[0]
            streams = tuple(s for s in self.plan.streams if s.name in group)
            payload = schemas.request_encoder.encode({"op": "subscribe", "args": group})
            requests.append(SubscribeRequest(key, streams, payload))
            self._unacked[key] = set(group)
            self._request_of.update(dict.fromkeys(group, key))
        return requests

    def resync(self, symbol: str, reason: str) -> list[Action]:
        """Resubscribe just this symbol's ``orderBookL2`` topic: BitMEX answers a
        subscription with a fresh ``partial``."""
        ex = self.feed.exchange_symbol(symbol)
        self.books[ex].reset()
        topic = f"orderBookL2:{ex}"
        return [
            Send(schemas.request_encoder.encode({"op": "unsubscribe", "args": [topic]})),
            Send(schemas.request_encoder.encode({"op": "subscribe", "args": [topic]})),
        ]

    # --- decoding --------------------------------------------------------------------------

    def on_message(self, data: bytes, recv_ts: int, out: Output) -> bool:
        if data == _PONG:
            out.pong = True
            return False
        env = schemas.envelope_decoder.decode(data)
        if env.table is not None:
            if env.action is None or not env.data:
                raise DecodeError(f"{env.table} message without action or data")
            self._table(env, recv_ts, out)
            return True
        if env.success is not None:
            self._ack(env, out)
            return False
        if env.error is not None:
            self._error(env, recv_ts, out)
            return False
        if env.info is not None:
            return False  # the welcome message
        raise DecodeError("unexpected message shape")

    def _ack(self, env: Envelope, out: Output) -> None:
        topic = env.subscribe
        if topic is None:
            return  # an unsubscribe ack (resync)
        if not env.success:
            key = self._request_of.get(topic)
            if key is not None:
                out.rejects.append((key, f"subscription of {topic} failed"))
            return
        key = self._request_of.get(topic)
        pending = self._unacked.get(key) if key is not None else None
        if key is None or pending is None or topic not in pending:
            return  # a resubscription after a resync: the ledger has it already
        pending.discard(topic)
        if not pending:
            out.acks.append(key)

    def _error(self, env: Envelope, recv_ts: int, out: Output) -> None:
        reason = f"status {env.status}: {env.error}"
        args = env.request.args if env.request is not None else []
        keys = dict.fromkeys(self._request_of[a] for a in args if a in self._request_of)
        if env.request is not None and env.request.op == "subscribe" and keys:
            out.rejects.extend((key, reason) for key in keys)
            return
        out.records.append(
            Status(
                exchange=self.exchange,
                symbol=None,
                ts=None,
                recv_ts=recv_ts,
                event=StatusEvent.ERROR,
                detail=reason,
                connection=self.connection,
            )
        )

    def _table(self, env: Envelope, recv_ts: int, out: Output) -> None:
        table, action = env.table, env.action
        assert table is not None and action is not None
        if table == "orderBookL2":
            self._book(env, recv_ts, out)
            return
        records: list[Record] = []
        if table == "trade":
            if action != "partial":
                self._trades(schemas.trade_rows.decode(env.data), recv_ts, records)
        elif table == "quote":
            self._quotes(schemas.quote_rows.decode(env.data), recv_ts, records)
        elif table == "instrument":
            for row in schemas.instrument_rows.decode(env.data):
                self._instrument(row, recv_ts, records)
        elif table == "funding":
            if action != "partial":
                self._funding(schemas.funding_rows.decode(env.data), recv_ts, records)
        elif table == "liquidation":
            rows = schemas.liquidation_rows.decode(env.data)
            if action == "insert":
                self._liquidations(rows, recv_ts, records)
        else:
            raise DecodeError(f"data for a table this plugin does not subscribe: {table}")
        out.records.extend(records)  # only once the whole message decoded

    def _symbol(self, table: str, ex: str) -> tuple[str, frozenset[str]]:
        channels = self.channels.get((table, ex))
        if channels is None:
            raise DecodeError(f"{table} data for {ex}, which this connection did not subscribe")
        return self.symbols[ex], channels

    def _trades(self, rows: list[schemas.TradeRow], recv_ts: int, records: list[Record]) -> None:
        for t in rows:
            symbol, _ = self._symbol("trade", t.symbol)
            if t.side is None:
                continue  # a settlement print: no taker, not a trade anyone took
            records.append(
                Trade(
                    exchange=self.exchange,
                    symbol=symbol,
                    ts=to_ns(t.timestamp),
                    recv_ts=recv_ts,
                    price=t.price,
                    size=t.size,
                    side=_SIDE[t.side],
                    id=t.match_id,
                )
            )

    def _quotes(self, rows: list[schemas.QuoteRow], recv_ts: int, records: list[Record]) -> None:
        for q in rows:
            symbol, _ = self._symbol("quote", q.symbol)
            if q.bid_price is None or q.bid_size is None:
                continue
            if q.ask_price is None or q.ask_size is None:
                continue
            records.append(
                BBO(
                    exchange=self.exchange,
                    symbol=symbol,
                    ts=to_ns(q.timestamp),
                    recv_ts=recv_ts,
                    bid_price=q.bid_price,
                    bid_size=q.bid_size,
                    ask_price=q.ask_price,
                    ask_size=q.ask_size,
                )
            )

    def _book(self, env: Envelope, recv_ts: int, out: Output) -> None:
        assert env.action is not None
        rows = schemas.l2_rows.decode(env.data)
        by_symbol: dict[str, list[schemas.L2Row]] = {}
        if env.action == "partial" and env.filter is not None and env.filter.symbol:
            by_symbol[env.filter.symbol] = []  # a partial of an empty book has no rows
        for row in rows:
            by_symbol.setdefault(row.symbol, []).append(row)
        if not by_symbol:
            raise DecodeError(f"orderBookL2 {env.action} without rows or symbol")
        for ex in by_symbol:
            self._symbol("orderBookL2", ex)  # reject unknown symbols before applying any
        for ex, symbol_rows in by_symbol.items():
            self.books[ex].on_message(env.action, symbol_rows, recv_ts, out)

    def _instrument(self, row: InstrumentRow, recv_ts: int, records: list[Record]) -> None:
        symbol, channels = self._symbol("instrument", row.symbol)
        state = self._merge(row)
        stamp = _value(state.timestamp)
        ts = to_ns(stamp) if stamp is not None else None
        exchange = self.exchange
        if "ticker" in channels and _changed(row, _TICKER_FIELDS):
            records.append(
                Ticker(
                    exchange=exchange,
                    symbol=symbol,
                    ts=ts,
                    recv_ts=recv_ts,
                    last=_value(state.last_price),
                    bid=_value(state.bid_price),
                    ask=_value(state.ask_price),
                    open_24h=_value(state.prev_price24h),
                    high_24h=_value(state.high_price),
                    low_24h=_value(state.low_price),
                    volume_24h=_value(state.volume24h),
                    quote_volume_24h=_value(state.foreign_notional24h),
                )
            )
        rate = _value(state.funding_rate)
        if "funding" in channels and rate is not None and _changed(row, _FUNDING_FIELDS):
            next_funding = _value(state.funding_timestamp)
            records.append(
                Funding(
                    exchange=exchange,
                    symbol=symbol,
                    ts=ts,
                    recv_ts=recv_ts,
                    rate=rate,
                    mark_price=_value(state.mark_price),
                    index_price=_value(state.indicative_settle_price),
                    predicted_rate=_value(state.indicative_funding_rate),
                    next_funding_ts=to_ns(next_funding) if next_funding is not None else None,
                )
            )
        open_interest = _value(row.open_interest)
        if "open_interest" in channels and open_interest is not None:
            records.append(
                OpenInterest(
                    exchange=exchange,
                    symbol=symbol,
                    ts=ts,
                    recv_ts=recv_ts,
                    open_interest=open_interest,
                )
            )

    def _merge(self, row: InstrumentRow) -> InstrumentRow:
        """Fold an instrument change into the symbol's full row (BitMEX's table model)."""
        old = self.instruments.get(row.symbol)
        if old is None:
            merged = row
        else:
            changes: dict[str, Any] = {
                name: value
                for name in row.__struct_fields__
                if (value := getattr(row, name)) is not UNSET
            }
            merged = msgspec.structs.replace(old, **changes)
        self.instruments[row.symbol] = merged
        return merged

    def _funding(self, rows: list[schemas.FundingRow], recv_ts: int, records: list[Record]) -> None:
        for f in rows:
            # the funding channel subscribes the instrument topic; a funding-table row
            # counts as the same channel
            symbol, channels = self._symbol("instrument", f.symbol)
            if "funding" not in channels:
                raise DecodeError(f"funding data for {f.symbol}, whose funding was not asked for")
            records.append(
                Funding(
                    exchange=self.exchange,
                    symbol=symbol,
                    ts=to_ns(f.timestamp),
                    recv_ts=recv_ts,
                    rate=f.funding_rate,
                )
            )

    def _liquidations(
        self, rows: list[schemas.LiquidationRow], recv_ts: int, records: list[Record]
    ) -> None:
        for row in rows:
            if (
                isinstance(row.symbol, UnsetType)
                or isinstance(row.side, UnsetType)
                or not isinstance(row.price, Decimal)
                or not isinstance(row.leaves_qty, Decimal)
            ):
                raise DecodeError(f"liquidation insert without symbol/side/price/size: {row}")
            symbol, _ = self._symbol("liquidation", row.symbol)
            records.append(
                Liquidation(
                    exchange=self.exchange,
                    symbol=symbol,
                    ts=None,  # BitMEX liquidation rows carry no time
                    recv_ts=recv_ts,
                    side=_SIDE[row.side],
                    price=row.price,
                    size=row.leaves_qty,
                    id=row.order_id,
                )
            )


def _value(value: _T | UnsetType | None) -> _T | None:
    """An instrument field's value, None when BitMEX never sent it or sent null."""
    return None if isinstance(value, UnsetType) else value


def _changed(row: InstrumentRow, fields: tuple[str, ...]) -> bool:
    return any(getattr(row, name) is not UNSET for name in fields)


__all__ = ["BitmexFeed", "BitmexProtocol", "Stream"]
