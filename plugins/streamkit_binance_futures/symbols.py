"""Binance USD-M symbol mapping.

- perpetuals: ``BTC-USDT-PERP`` <-> ``BTCUSDT``
- quarterly (dated) futures: ``BTC-USDT-231229`` <-> ``BTCUSDT_231229``

The base/quote split of the pair is the spot plugin's (longest known quote suffix), so a
symbol maps back exactly as it was configured.
"""

from __future__ import annotations

from streamkit_binance import symbols as spot

PERP = "PERP"


def _is_expiry(text: str) -> bool:
    return len(text) == 6 and text.isdigit()


def to_exchange(symbol: str) -> str:
    """``BTC-USDT-PERP`` -> ``BTCUSDT``; ``BTC-USDT-231229`` -> ``BTCUSDT_231229``.
    Raises ValueError for anything else (spot pairs, options, lowercase)."""
    base, _, kind = symbol.rpartition("-")
    if kind != PERP and not _is_expiry(kind):
        raise ValueError(
            f"{symbol!r} is not a Binance USD-M symbol (expected BASE-QUOTE-PERP, e.g. "
            "BTC-USDT-PERP, or BASE-QUOTE-YYMMDD, e.g. BTC-USDT-231229)"
        )
    try:
        pair = spot.to_exchange(base)
    except ValueError:
        raise ValueError(
            f"{symbol!r} is not a Binance USD-M symbol (expected BASE-QUOTE-PERP or "
            "BASE-QUOTE-YYMMDD)"
        ) from None
    return pair if kind == PERP else f"{pair}_{kind}"


def to_normalized(exchange_symbol: str) -> str:
    """``BTCUSDT`` -> ``BTC-USDT-PERP``; ``BTCUSDT_231229`` -> ``BTC-USDT-231229``."""
    pair, sep, expiry = exchange_symbol.upper().partition("_")
    if sep and not _is_expiry(expiry):
        raise ValueError(f"{exchange_symbol!r}: expected a YYMMDD delivery date after '_'")
    return f"{spot.to_normalized(pair)}-{expiry if sep else PERP}"


def is_perpetual(symbol: str) -> bool:
    """True for a normalized perpetual (only perpetuals pay funding)."""
    return symbol.endswith(f"-{PERP}")
