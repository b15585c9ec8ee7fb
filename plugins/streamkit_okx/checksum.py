"""OKX ``books`` checksum: CRC32 of the best 25 levels, interleaved, as a signed int32.

The string is ``bid1Px:bid1Sz:ask1Px:ask1Sz:bid2Px:...`` over the best 25 bids (high to low)
and asks (low to high); when one side has fewer levels its missing entries are skipped. Prices
and sizes must be exactly the strings OKX sent (``"0.35210000"`` is not ``"0.3521"``).

The book keeps levels as :class:`~decimal.Decimal`, which preserves the digits it was built
from, but ``str()`` switches to scientific notation for small values
(``str(Decimal("0.00000062")) == "6.2E-7"``); ``format(d, "f")`` gives back the plain digits
OKX sent, trailing zeros included, so that is what is hashed (``str`` is used where it is
already plain: it is faster).

Rendering 100 Decimals per update is most of an update's cost, while an update changes only a
few of the top 25 levels: :class:`CachedChecksum` (what the plugin uses) remembers each level's
text and renders only the levels whose price or size object is new (the book engine's
:class:`~streamkit.book.LevelTexts`).
"""

from __future__ import annotations

import zlib
from decimal import Decimal

from streamkit.book import LevelTexts, OrderBook

DEPTH = 25
"""Levels per side covered by the checksum."""


def _plain(value: Decimal) -> str:
    text = str(value)  # fast, and exact unless Decimal chose scientific notation
    return format(value, "f") if "E" in text else text


def checksum_string(
    bids: list[tuple[Decimal, Decimal]], asks: list[tuple[Decimal, Decimal]]
) -> str:
    """The interleaved ``px:sz`` string of the given best-first levels."""
    parts: list[str] = []
    for i in range(max(len(bids), len(asks))):
        if i < len(bids):
            parts.append(_plain(bids[i][0]))
            parts.append(_plain(bids[i][1]))
        if i < len(asks):
            parts.append(_plain(asks[i][0]))
            parts.append(_plain(asks[i][1]))
    return ":".join(parts)


def signed_crc32(text: str) -> int:
    """CRC32 of ``text`` interpreted as a signed 32-bit integer (what OKX sends)."""
    value = zlib.crc32(text.encode("ascii"))
    return value - (1 << 32) if value >= 1 << 31 else value


def okx_checksum(book: OrderBook) -> int:
    """The checksum OKX would send for this book (a :data:`streamkit.book.ChecksumFn`)."""
    bids, asks = book.top(DEPTH)
    return signed_crc32(checksum_string(bids, asks))


class CachedChecksum:
    """:func:`okx_checksum` of one book, remembering the ``"px:sz"`` text of each top level
    between calls (one :class:`~streamkit.book.LevelTexts` per side: a text is reused only
    while the book holds the very same price and size objects at that level). Each side
    drops its remembered levels all at once when it reaches ``max_size`` of them."""

    __slots__ = ("_asks", "_bids")

    def __init__(self, max_size: int = 256) -> None:
        self._bids = LevelTexts(_plain, _plain, ":", max_size)
        self._asks = LevelTexts(_plain, _plain, ":", max_size)

    def __call__(self, book: OrderBook) -> int:
        bids, asks = book.bids, book.asks
        bid_texts = self._bids.texts(bids, bids.prices[: -DEPTH - 1 : -1])
        ask_texts = self._asks.texts(asks, asks.prices[:DEPTH])
        n_bids, n_asks = len(bid_texts), len(ask_texts)
        n = min(n_bids, n_asks)
        parts = [""] * (2 * n)  # bid1, ask1, bid2, ask2, ... then the longer side's rest
        parts[0::2] = bid_texts[:n] if n_bids > n else bid_texts
        parts[1::2] = ask_texts[:n] if n_asks > n else ask_texts
        if n_bids > n:
            parts += bid_texts[n:]
        elif n_asks > n:
            parts += ask_texts[n:]
        return signed_crc32(":".join(parts))

    def __len__(self) -> int:
        """Levels remembered, both sides (at most ``2 * max_size``)."""
        return len(self._bids) + len(self._asks)
