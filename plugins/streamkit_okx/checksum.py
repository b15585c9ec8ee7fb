"""OKX ``books`` checksum: CRC32 of the best 25 levels, interleaved, as a signed int32.

The string is ``bid1Px:bid1Sz:ask1Px:ask1Sz:bid2Px:...`` over the best 25 bids (high to low)
and asks (low to high); when one side has fewer levels its missing entries are skipped. Prices
and sizes must be exactly the strings OKX sent (``"0.35210000"`` is not ``"0.3521"``).

The book keeps levels as :class:`~decimal.Decimal`, which preserves the digits it was built
from, but ``str()`` switches to scientific notation for small values
(``str(Decimal("0.00000062")) == "6.2E-7"``); ``format(d, "f")`` gives back the plain digits
OKX sent, trailing zeros included, so that is what is hashed (``str`` is used where it is
already plain: it is faster).
"""

from __future__ import annotations

import zlib
from decimal import Decimal

from streamkit.book import OrderBook

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
