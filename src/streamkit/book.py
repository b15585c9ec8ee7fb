"""The L2 order book shared by every plugin: exact decimal levels, snapshot and delta
application, and the sanity checks (crossed book) a book must pass before it is published.

Sequence rules and checksums are venue-specific and live with each plugin's sync logic; this
class only holds state. Sizes are absolute: a size of 0 deletes the level.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from decimal import Decimal

from streamkit.model import PriceLevel

_ZERO = Decimal(0)


class OrderBook:
    """Bids and asks as ``{price: size}``; best levels are computed on demand.

    Not thread-safe; owned by one connection's protocol object.
    """

    __slots__ = ("asks", "bids", "seq")

    def __init__(self) -> None:
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}
        self.seq: int | None = None

    def apply_snapshot(
        self, bids: Iterable[PriceLevel], asks: Iterable[PriceLevel], seq: int | None = None
    ) -> None:
        """Replace the whole book. Zero-size levels in a snapshot are ignored."""
        self.bids = {p: s for p, s in bids if s != _ZERO}
        self.asks = {p: s for p, s in asks if s != _ZERO}
        self.seq = seq

    def apply_delta(
        self, bids: Iterable[PriceLevel], asks: Iterable[PriceLevel], seq: int | None = None
    ) -> None:
        """Set each level's absolute size; size 0 deletes the level (deleting an absent level
        is allowed: venues send those after a level was already removed by a snapshot)."""
        _apply(self.bids, bids)
        _apply(self.asks, asks)
        if seq is not None:
            self.seq = seq

    def best_bid(self) -> PriceLevel | None:
        if not self.bids:
            return None
        price = max(self.bids)
        return price, self.bids[price]

    def best_ask(self) -> PriceLevel | None:
        if not self.asks:
            return None
        price = min(self.asks)
        return price, self.asks[price]

    def is_crossed(self) -> bool:
        """True when the best bid is at or above the best ask: a state no venue publishes, so a
        local book in that state has missed or misapplied an update."""
        if not self.bids or not self.asks:
            return False
        return max(self.bids) >= min(self.asks)

    def top(self, depth: int) -> tuple[list[PriceLevel], list[PriceLevel]]:
        """The best ``depth`` levels: bids high to low, asks low to high."""
        bids = heapq.nlargest(depth, self.bids.items())
        asks = heapq.nsmallest(depth, self.asks.items())
        return bids, asks

    def __len__(self) -> int:
        return len(self.bids) + len(self.asks)


def _apply(side: dict[Decimal, Decimal], levels: Iterable[PriceLevel]) -> None:
    for price, size in levels:
        if size == _ZERO:
            side.pop(price, None)
        else:
            side[price] = size
