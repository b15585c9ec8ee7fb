"""Kraken's order-book checksum (WebSocket v1 and v2).

CRC32 (unsigned 32-bit) of one string: the top 10 asks (low to high), then the top 10 bids
(high to low); for each level the price, then the quantity, each written as Kraken formats it
with the pair's precision, with the decimal point removed and the leading zeros stripped.

The formatting trap: Kraken computes the checksum over numbers written with the pair's
*precision* (BTC/USD: price 1 decimal, quantity 8), so ``4.0`` must become ``4.00000000`` ->
``400000000`` and ``0.001`` must become ``0.00100000`` -> ``100000``. The live v2 feed writes
its JSON numbers at that precision, and msgspec decodes a JSON number into a Decimal exactly as
written, so the wire token survives; but a number that lost its trailing zeros on the way (a
re-serialized recording, a proxy, a float) must be padded back, and ``str(Decimal)`` must never
be used (``str(Decimal("0.00000010")) == "1.0E-7"``). :class:`Precision` therefore tracks the
decimals of every token seen since the last snapshot (or takes them from configuration), and
:func:`level_token` renders each value with them in fixed-point notation.

Rendering the 40 numbers is most of an update's cost, while an update changes only a few
levels: :class:`CachedChecksum` (what the plugin uses) remembers each level's tokens and
renders only the levels whose price or quantity object is new (the book engine's
:class:`~streamkit.book.LevelTexts`).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from decimal import Decimal

from streamkit.book import LevelTexts, OrderBook
from streamkit.model import PriceLevel

CHECKSUM_LEVELS = 10
"""Levels per side covered by the checksum, whatever the subscribed depth."""


def decimals(value: Decimal) -> int:
    """Digits after the decimal point as written (``Decimal("1797.30")`` -> 2)."""
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int), f"not a finite number: {value}"
    return max(0, -exponent)


def level_token(value: Decimal, places: int | None) -> str:
    """One price or quantity as it enters the checksum: fixed-point with ``places`` decimals
    (None: as written), decimal point removed, leading zeros stripped."""
    text = f"{value:.{places}f}" if places is not None else format(value, "f")
    return text.replace(".", "").lstrip("0")


class Precision:
    """Decimals used to render one pair's prices and quantities for its checksum.

    Configured values are fixed. Otherwise they are learned: the largest number of decimals
    among the tokens of the last snapshot and of every update since. On the live feed every
    token carries the pair's full precision, so the first snapshot already gives it; in a
    recording that dropped trailing zeros, one token with all its digits suffices (a 10-level
    snapshot has 40 numbers). A wrong guess can only cause a checksum mismatch (and a resync),
    never a wrong book.
    """

    __slots__ = ("fixed", "price", "qty")

    def __init__(self, price: int | None = None, qty: int | None = None) -> None:
        self.fixed = price is not None and qty is not None
        self.price = price or 0
        self.qty = qty or 0

    def reset(self) -> None:
        """Forget learned decimals (a new snapshot re-learns them: tick sizes can change)."""
        if not self.fixed:
            self.price = 0
            self.qty = 0

    def observe(self, levels: Iterable[PriceLevel]) -> None:
        if self.fixed:
            return
        for price, qty in levels:
            p, q = decimals(price), decimals(qty)
            if p > self.price:
                self.price = p
            if q > self.qty:
                self.qty = q


def checksum_string(
    asks: list[PriceLevel], bids: list[PriceLevel], precision: Precision | None
) -> str:
    """The string Kraken feeds to CRC32 for the given best-first levels."""
    pp = precision.price if precision is not None else None
    qp = precision.qty if precision is not None else None
    return "".join(
        level_token(price, pp) + level_token(qty, qp)
        for price, qty in (*asks[:CHECKSUM_LEVELS], *bids[:CHECKSUM_LEVELS])
    )


def book_checksum(book: OrderBook, precision: Precision | None) -> int:
    """Kraken's checksum of a local book (``precision`` None: render values as written)."""
    bids, asks = book.top(CHECKSUM_LEVELS)
    return zlib.crc32(checksum_string(asks, bids, precision).encode("ascii"))


class CachedChecksum:
    """:func:`book_checksum` of one book, remembering the tokens of each top level between
    calls (one :class:`~streamkit.book.LevelTexts` per side: tokens are reused only while the
    book holds the very same price and quantity objects at that level). Tokens depend on the
    precision too, so any change of it (learned, reset by a snapshot) drops every entry. Each
    side drops its remembered levels all at once when it reaches ``max_size`` of them."""

    __slots__ = ("_asks", "_bids", "_places")

    def __init__(self, max_size: int = 256) -> None:
        self._places: tuple[int | None, int | None] = (None, None)
        self._bids = LevelTexts(self._price_token, self._qty_token, "", max_size)
        self._asks = LevelTexts(self._price_token, self._qty_token, "", max_size)

    def __call__(self, book: OrderBook, precision: Precision | None) -> int:
        """Same as ``book_checksum(book, precision)``."""
        places = (precision.price, precision.qty) if precision is not None else (None, None)
        if places != self._places:
            self._bids.clear()
            self._asks.clear()
            self._places = places
        bids, asks = book.bids, book.asks
        text = "".join(
            self._asks.texts(asks, asks.prices[:CHECKSUM_LEVELS])
            + self._bids.texts(bids, bids.prices[: -CHECKSUM_LEVELS - 1 : -1])
        )
        return zlib.crc32(text.encode("ascii"))

    def __len__(self) -> int:
        """Levels remembered, both sides (at most ``2 * max_size``)."""
        return len(self._bids) + len(self._asks)

    def _price_token(self, price: Decimal) -> str:
        return level_token(price, self._places[0])

    def _qty_token(self, qty: Decimal) -> str:
        return level_token(qty, self._places[1])
