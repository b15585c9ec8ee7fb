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
text and renders only the levels whose price or size object is new (see its docstring).
"""

from __future__ import annotations

import zlib
from decimal import Decimal

from streamkit.book import OrderBook

DEPTH = 25
"""Levels per side covered by the checksum."""


_Entry = tuple[Decimal, Decimal, str, str]
"""A remembered level: ``(price, size, "px:sz", "px")``, the texts rendered from exactly those
two objects."""


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
    """:func:`okx_checksum` of one book, remembering the text of each top level between calls.

    Each side keeps ``{price: (price, size, "px:sz", "px")}`` for the levels it has rendered.
    A remembered text is reused only when the book holds *the very same objects* at that level
    (``is``, not ``==``): the entry keeps both alive, so the identity cannot be a recycled id,
    and a Decimal never changes, so the text is exactly what :func:`_plain` would render
    again. Equality would not do: ``Decimal("1.0") == Decimal("1.00")`` but their texts
    differ. A level whose size changed holds a new Decimal (the decoder builds one per level),
    so only the levels an update touched are rendered (and only their size, when the price
    object is the same); interned prices are rendered once.

    Nothing has to follow the book's updates, deletions, resyncs or snapshots, or the updates
    BookSync drops: the text always comes from the book's current objects, so a stale entry can
    only miss, never be used. Entries of levels that left the top 25 are dropped all at once
    when a side passes ``max_size`` entries (the current levels are then rendered again).
    """

    __slots__ = ("_asks", "_bids", "max_size")

    def __init__(self, max_size: int = 256) -> None:
        self._bids: dict[Decimal, _Entry] = {}
        self._asks: dict[Decimal, _Entry] = {}
        self.max_size = max_size

    def __call__(self, book: OrderBook) -> int:
        bids, asks = book.bids, book.asks
        bid_texts = self._texts(bids, bids.prices[: -DEPTH - 1 : -1], self._bids)
        ask_texts = self._texts(asks, asks.prices[:DEPTH], self._asks)
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

    def _texts(
        self, side: dict[Decimal, Decimal], prices: list[Decimal], cache: dict[Decimal, _Entry]
    ) -> list[str]:
        """``"px:sz"`` of each of ``prices`` (best first). The hot loop of every update: the
        rendering is :func:`_plain`, inlined."""
        get = cache.get
        texts: list[str] = []
        add = texts.append
        for price in prices:
            size = side[price]
            entry = get(price)
            if entry is not None and entry[0] is price:
                if entry[1] is size:
                    add(entry[2])
                    continue
                price_text = entry[3]  # same price object, new size: render the size only
            else:
                if len(cache) >= self.max_size:
                    cache.clear()
                price_text = str(price)
                if "E" in price_text:
                    price_text = format(price, "f")
            size_text = str(size)
            if "E" in size_text:
                size_text = format(size, "f")
            text = f"{price_text}:{size_text}"
            cache[price] = (price, size, text, price_text)
            add(text)
        return texts
