"""examplex symbol mapping: ``BTC-USD`` <-> ``BTC_USD``; perpetuals ``BTC-USD-PERP`` <->
``BTC_USD_PERP``. The venue spells symbols with ``_`` where streamkit uses ``-``, so the
mapping is a reversible character swap, validated both ways."""

from __future__ import annotations

import re

_NORMALIZED = re.compile(r"^[A-Z0-9]+-[A-Z0-9]+(-PERP)?$")
_VENUE = re.compile(r"^[A-Z0-9]+_[A-Z0-9]+(_PERP)?$")


def to_exchange(symbol: str) -> str:
    """``BTC-USD`` -> ``BTC_USD``. Raises ValueError for a symbol examplex cannot list."""
    if not _NORMALIZED.match(symbol):
        raise ValueError(
            f"{symbol!r} is not an examplex symbol (expected BASE-QUOTE or BASE-QUOTE-PERP)"
        )
    return symbol.replace("-", "_")


def to_normalized(exchange_symbol: str) -> str:
    """``BTC_USD`` -> ``BTC-USD``: the exact inverse of :func:`to_exchange`."""
    if not _VENUE.match(exchange_symbol):
        raise ValueError(f"{exchange_symbol!r} is not an examplex symbol")
    return exchange_symbol.replace("_", "-")
