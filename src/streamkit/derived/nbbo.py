"""Cross-venue NBBO: the best bid and the best offer of one normalized symbol across every
configured feed, from their BBO records.

:class:`NbboBook` is the sans-I/O core (feed it records and a clock, get NBBO records back);
:class:`NbboStream` runs it as a derived stream on the bus.

Rules:

- each venue's latest BBO for a symbol is its quote; a quote older than ``max_age`` seconds
  (by its ``recv_ts``) is dropped on the next sweep;
- a ``disconnected``, ``reconnecting``, ``stale`` or ``error`` status of a venue drops its
  quotes at once: for its symbol, or for every symbol of that venue when the status is
  connection-wide (symbol null). The venue comes back with its next BBO;
- the best bid is the highest bid price among live quotes (ties: the larger size, then the
  venue name, so the choice is deterministic); the best offer likewise with the lowest ask.
  The size is the named venue's size at that price, not a sum across venues;
- an NBBO record is published only when the result changed (a side's price, size or venue,
  or the set of live venues); when the last venue drops out, one record with null sides
  says so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal

from streamkit.channel import Bus, Policy, Subscription, SubscriptionClosed
from streamkit.config import NbboConfig
from streamkit.derived.base import DerivedStream
from streamkit.model import BBO, NBBO, Record, Status, StatusEvent

NBBO_EXCHANGE = "nbbo"
"""The ``exchange`` of every NBBO record."""

DROP_EVENTS = frozenset(
    {
        StatusEvent.DISCONNECTED,
        StatusEvent.RECONNECTING,
        StatusEvent.STALE,
        StatusEvent.ERROR,
    }
)
"""Status events after which a venue's quotes cannot be trusted to be current."""

MIN_SWEEP_INTERVAL = 0.05
"""Floor of the age sweep period (a quarter of ``max_age``), so tiny ages cannot spin."""


@dataclass(frozen=True, slots=True)
class _Side:
    price: Decimal
    size: Decimal
    exchange: str


class NbboBook:
    """Live quotes per symbol and venue, and the NBBO they make.

    ``symbols``/``exchanges`` empty means all. ``clock`` returns wall-clock ns (the time base
    of ``recv_ts``); tests pass their own.
    """

    def __init__(
        self,
        *,
        symbols: Iterable[str] = (),
        exchanges: Iterable[str] = (),
        max_age: float = 10.0,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.symbols = frozenset(symbols)
        self.exchanges = frozenset(exchanges)
        self.max_age_ns = int(max_age * 1e9)
        self.clock = clock
        self.quotes: dict[str, dict[str, BBO]] = {}  # symbol -> venue -> latest BBO
        self._last: dict[str, tuple[object, ...]] = {}  # symbol -> what was last published

    def wants(self, exchange: str, symbol: str | None) -> bool:
        if self.exchanges and exchange not in self.exchanges:
            return False
        return symbol is None or not self.symbols or symbol in self.symbols

    def on_record(self, record: Record) -> list[NBBO]:
        """Take one input record; the NBBO records it changes (zero or one per symbol)."""
        if isinstance(record, BBO):
            return self.on_bbo(record)
        if isinstance(record, Status):
            return self.on_status(record)
        return []

    def on_bbo(self, bbo: BBO) -> list[NBBO]:
        if bbo.symbol is None or not self.wants(bbo.exchange, bbo.symbol):
            return []
        self.quotes.setdefault(bbo.symbol, {})[bbo.exchange] = bbo
        return self._changed([bbo.symbol])

    def on_status(self, status: Status) -> list[NBBO]:
        if status.event not in DROP_EVENTS or not self.wants(status.exchange, status.symbol):
            return []
        touched = []
        for symbol, venues in self.quotes.items():
            if status.symbol not in (None, symbol):
                continue
            if venues.pop(status.exchange, None) is not None:
                touched.append(symbol)
        return self._changed(touched)

    def sweep(self) -> list[NBBO]:
        """Drop quotes older than ``max_age``; the NBBO records that changes."""
        oldest = self.clock() - self.max_age_ns
        touched = []
        for symbol, venues in self.quotes.items():
            expired = [v for v, bbo in venues.items() if bbo.recv_ts < oldest]
            for venue in expired:
                del venues[venue]
            if expired:
                touched.append(symbol)
        return self._changed(touched)

    def current(self, symbol: str) -> NBBO | None:
        """The NBBO of ``symbol`` now (None before its first quote)."""
        venues = self.quotes.get(symbol)
        if venues is None:
            return None
        bid: _Side | None = None
        ask: _Side | None = None
        ts: int | None = None
        for venue in sorted(venues):
            q = venues[venue]
            if q.ts is not None and (ts is None or q.ts > ts):
                ts = q.ts
            # Strict comparisons over venues in name order: ties keep the larger size, then
            # the first venue by name.
            if bid is None or (q.bid_price, q.bid_size) > (bid.price, bid.size):
                bid = _Side(q.bid_price, q.bid_size, venue)
            if ask is None or (q.ask_price, -q.ask_size) < (ask.price, -ask.size):
                ask = _Side(q.ask_price, q.ask_size, venue)
        return NBBO(
            exchange=NBBO_EXCHANGE,
            symbol=symbol,
            ts=ts,
            recv_ts=self.clock(),
            bid_price=bid.price if bid else None,
            bid_size=bid.size if bid else None,
            bid_exchange=bid.exchange if bid else None,
            ask_price=ask.price if ask else None,
            ask_size=ask.size if ask else None,
            ask_exchange=ask.exchange if ask else None,
            venues=sorted(venues),
        )

    def _changed(self, symbols: Iterable[str]) -> list[NBBO]:
        out = []
        for symbol in symbols:
            nbbo = self.current(symbol)
            if nbbo is None:
                continue
            key = (
                nbbo.bid_price,
                nbbo.bid_size,
                nbbo.bid_exchange,
                nbbo.ask_price,
                nbbo.ask_size,
                nbbo.ask_exchange,
                tuple(nbbo.venues),
            )
            if self._last.get(symbol) != key:
                self._last[symbol] = key
                out.append(nbbo)
        return out


class NbboStream(DerivedStream):
    """Runs an :class:`NbboBook` on the bus: reads BBO and status records (``conflate``
    queue: the latest BBO per venue and symbol is all it needs, so it never slows a feed)
    and publishes ``nbbo`` records."""

    def __init__(
        self,
        bus: Bus,
        config: NbboConfig,
        *,
        name: str = "derived:nbbo",
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        super().__init__(name, bus)
        self.config = config
        self.clock = clock
        self.book = self._new_book()

    def _new_book(self) -> NbboBook:
        cfg = self.config
        return NbboBook(
            symbols=cfg.symbols, exchanges=cfg.exchanges, max_age=cfg.max_age, clock=self.clock
        )

    def subscribe(self) -> Subscription:
        return self.bus.subscribe(
            (BBO, Status),
            maxsize=self.config.queue_size,
            policy=Policy.CONFLATE,
            name=self.name,
        )

    async def run(self, subscription: Subscription) -> None:
        # A restart starts from nothing: quotes seen before the crash may be stale by now.
        self.book = book = self._new_book()
        sweep_every = max(self.config.max_age / 4, MIN_SWEEP_INTERVAL)
        loop = asyncio.get_running_loop()
        next_sweep = loop.time() + sweep_every
        while True:
            try:
                async with asyncio.timeout_at(next_sweep):
                    batch = await subscription.get_batch()
            except TimeoutError:
                batch = []
            except SubscriptionClosed:
                return  # the bus closed and the queue is drained: shutdown
            out: list[Record] = []
            for record in batch:
                out.extend(book.on_record(record))
            if loop.time() >= next_sweep:
                out.extend(book.sweep())
                next_sweep = loop.time() + sweep_every
            if not await self.publish(out):
                return
