"""Coinbase Exchange symbol mapping: ``BTC-USD`` <-> ``BTC-USD``.

Coinbase product ids already are ``BASE-QUOTE`` in upper case, so the mapping is the identity
after validation (and exactly reversible).
"""

from __future__ import annotations


def _valid(symbol: str) -> bool:
    parts = symbol.split("-")
    return len(parts) == 2 and all(p.isalnum() and p.isupper() for p in parts)


def to_exchange(symbol: str) -> str:
    """``BTC-USD`` -> ``BTC-USD``. Raises ValueError for anything but ``BASE-QUOTE``."""
    if not _valid(symbol):
        raise ValueError(
            f"{symbol!r} is not a Coinbase Exchange product (expected BASE-QUOTE, e.g. BTC-USD)"
        )
    return symbol


def to_normalized(product_id: str) -> str:
    """``BTC-USD`` -> ``BTC-USD``. Raises ValueError for a malformed product id."""
    if not _valid(product_id):
        raise ValueError(f"{product_id!r} is not a Coinbase product id (expected BASE-QUOTE)")
    return product_id
