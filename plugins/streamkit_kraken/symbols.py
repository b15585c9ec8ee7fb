"""Kraken spot symbol mapping: ``BTC-USD`` <-> ``BTC/USD`` (WebSocket v2 names).

WebSocket v2 names pairs ``BASE/QUOTE`` with the common asset codes (``BTC``, ``DOGE``) and
rejects v1's legacy codes (``XBT/USD`` -> "Currency pair not supported"). Normalized symbols
use ``BTC`` as well, so the mapping is a plain separator swap and exactly reversible. Legacy
names seen on the way back (``XBT``, ``XDG``) are read as their modern codes, so a v1 name
never leaks into a normalized record.
"""

from __future__ import annotations

LEGACY_ASSETS = {"XBT": "BTC", "XDG": "DOGE"}
"""Kraken's v1 asset codes -> the codes v2 and normalized symbols use."""


def _valid_asset(code: str) -> bool:
    return code.isalnum() and code.isupper()


def to_exchange(symbol: str) -> str:
    """``BTC-USD`` -> ``BTC/USD``. Raises ValueError for anything but ``BASE-QUOTE`` or for a
    legacy code (``XBT-USD``: write ``BTC-USD``)."""
    parts = symbol.split("-")
    if len(parts) != 2 or not all(_valid_asset(p) for p in parts):
        raise ValueError(
            f"{symbol!r} is not a Kraken spot symbol (expected BASE-QUOTE, e.g. BTC-USD)"
        )
    for code in parts:
        if code in LEGACY_ASSETS:
            raise ValueError(
                f"{symbol!r} uses Kraken's legacy code {code}; "
                f"normalized symbols use {LEGACY_ASSETS[code]}"
            )
    return f"{parts[0]}/{parts[1]}"


def to_normalized(exchange_symbol: str) -> str:
    """``BTC/USD`` (or v1's ``XBT/USD``) -> ``BTC-USD``."""
    parts = exchange_symbol.split("/")
    if len(parts) != 2 or not all(_valid_asset(p) for p in parts):
        raise ValueError(f"{exchange_symbol!r} is not a Kraken pair name (expected BASE/QUOTE)")
    base, quote = (LEGACY_ASSETS.get(p, p) for p in parts)
    return f"{base}-{quote}"
