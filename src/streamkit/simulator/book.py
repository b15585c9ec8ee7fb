"""The simulator's authoritative order book for one symbol, with Binance spot diff semantics.

Levels are keyed by the price *string* exactly as the venue sends it (Binance uses a fixed
number of decimals per symbol, so one price has one spelling); quantities are absolute and a
zero quantity ("0.00000000") removes the level. A diff whose final update id ``u`` is not
newer than the book's ``last_update_id`` is ignored: the same rule a correct client applies,
which keeps the REST snapshot and the diff stream consistent for every client.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

import msgspec

Level = tuple[str, str]
"""``(price, quantity)`` as strings."""


class BookState(msgspec.Struct, frozen=True):
    """A copy of a book: ``{price: quantity}`` per side, plus the last applied update id."""

    last_update_id: int
    bids: dict[str, str]
    asks: dict[str, str]


class _Side:
    """One side's levels with prices kept sorted (ascending floats) for O(1) best price and
    cheap top-N, since the book is read on every simulated ``bookTicker`` and REST request."""

    __slots__ = ("_keys", "_price_of", "descending", "levels")

    def __init__(self, *, descending: bool) -> None:
        self.descending = descending
        self.levels: dict[str, str] = {}
        self._keys: list[float] = []
        self._price_of: dict[float, str] = {}

    def set(self, price: str, quantity: str) -> None:
        if float(quantity) == 0.0:
            if self.levels.pop(price, None) is not None:
                key = float(price)
                del self._keys[bisect.bisect_left(self._keys, key)]
                del self._price_of[key]
            return
        if price not in self.levels:
            key = float(price)
            bisect.insort(self._keys, key)
            self._price_of[key] = price
        self.levels[price] = quantity

    def best(self) -> Level | None:
        if not self._keys:
            return None
        price = self._price_of[self._keys[-1] if self.descending else self._keys[0]]
        return price, self.levels[price]

    def top(self, limit: int) -> list[list[str]]:
        keys = self._keys[-limit:][::-1] if self.descending else self._keys[:limit]
        return [[self._price_of[k], self.levels[self._price_of[k]]] for k in keys]


class OrderBook:
    """Price-level book fed by Binance depth diffs. Not thread-safe (the simulator is async)."""

    __slots__ = ("_asks", "_bids", "last_update_id")

    def __init__(
        self, last_update_id: int, bids: Iterable[Sequence[str]], asks: Iterable[Sequence[str]]
    ) -> None:
        self.last_update_id = last_update_id
        self._bids = _Side(descending=True)
        self._asks = _Side(descending=False)
        for price, quantity in bids:
            self._bids.set(price, quantity)
        for price, quantity in asks:
            self._asks.set(price, quantity)

    @classmethod
    def from_rest(cls, body: str | bytes) -> OrderBook:
        """Seed from a ``GET /api/v3/depth`` response body."""
        snapshot = msgspec.json.decode(body)
        return cls(snapshot["lastUpdateId"], snapshot["bids"], snapshot["asks"])

    def apply(
        self, final_update_id: int, bids: Iterable[Sequence[str]], asks: Iterable[Sequence[str]]
    ) -> bool:
        """Apply one diff; False (and no change) when ``final_update_id`` is not newer."""
        if final_update_id <= self.last_update_id:
            return False
        for price, quantity in bids:
            self._bids.set(price, quantity)
        for price, quantity in asks:
            self._asks.set(price, quantity)
        self.last_update_id = final_update_id
        return True

    def best_bid(self) -> Level | None:
        return self._bids.best()

    def best_ask(self) -> Level | None:
        return self._asks.best()

    def state(self) -> BookState:
        return BookState(self.last_update_id, dict(self._bids.levels), dict(self._asks.levels))

    def rest_body(self, limit: int) -> bytes:
        """The ``/api/v3/depth`` JSON: best ``limit`` levels per side, bids descending, asks
        ascending, compact like Binance (the untouched capture re-renders byte for byte)."""
        return msgspec.json.encode(
            {
                "lastUpdateId": self.last_update_id,
                "bids": self._bids.top(limit),
                "asks": self._asks.top(limit),
            }
        )
