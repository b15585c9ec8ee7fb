"""Bybit v5 symbol mapping, per category.

=================  ===================  ===================  ================================
category           normalized           Bybit                note
=================  ===================  ===================  ================================
spot               ``BTC-USDT``         ``BTCUSDT``          base + quote concatenated
linear             ``BTC-USDT-PERP``    ``BTCUSDT``          USDT perpetual
linear             ``BTC-USDC-PERP``    ``BTCPERP``          USDC perpetual (UI: BTC-PERP)
linear             ``BTC-USDT-251226``  ``BTCUSDT-26DEC25``  USDT dated future
linear             ``BTC-USDC-251226``  ``BTC-26DEC25``      USDC dated future
=================  ===================  ===================  ================================

Spot and linear share symbol strings (``BTCUSDT`` is both the spot pair and the USDT perp),
which is why a connection is bound to one category: the category is what makes the mapping
reversible. Going back from a concatenated spot/perp symbol, the longest known quote asset
that ends it is taken as the quote; the protocol routes by the symbols it subscribed to, so
this is only needed for symbols it did not ask for.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

Category = Literal["spot", "linear"]
CATEGORIES: tuple[Category, ...] = ("spot", "linear")

# Longest first, so that "USDT" wins over a shorter suffix of it.
QUOTES = sorted(
    {"USDT", "USDC", "USDE", "USD1", "FDUSD", "DAI", "BTC", "ETH", "EUR", "BRL", "PLN", "TRY"},
    key=len,
    reverse=True,
)
"""Quote assets of Bybit spot pairs and USDT/USDC linear contracts."""

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


def _is_code(part: str) -> bool:
    return part.isalnum() and part == part.upper() and not part.isdigit()


def _is_date(part: str) -> bool:
    if len(part) != 6 or not part.isdigit():
        return False
    try:
        dt.date(2000 + int(part[:2]), int(part[2:4]), int(part[4:]))
    except ValueError:
        return False
    return True


def category_of(normalized: str) -> Category:
    """``spot`` for ``BASE-QUOTE``, ``linear`` for perpetuals and dated futures."""
    parts = normalized.split("-")
    if len(parts) == 2 and all(_is_code(p) for p in parts):
        return "spot"
    contract = len(parts) == 3 and _is_code(parts[0]) and _is_code(parts[1])
    if contract and (parts[2] == "PERP" or _is_date(parts[2])):
        return "linear"
    raise ValueError(
        f"{normalized!r} is not a Bybit symbol (expected BASE-QUOTE for spot, "
        "BASE-QUOTE-PERP or BASE-QUOTE-YYMMDD for linear contracts)"
    )


def to_exchange(normalized: str, category: Category) -> str:
    """Normalized -> Bybit symbol of ``category``. Raises ValueError when the symbol is not
    one of that category (``BTC-USDT-PERP`` on spot, inverse ``BTC-USD-PERP`` on linear)."""
    kind = category_of(normalized)
    if kind != category:
        raise ValueError(
            f"{normalized!r} is a {kind} symbol; this Bybit feed streams the {category} "
            f"category (set options.category, or use a separate feed per category)"
        )
    base, quote, *rest = normalized.split("-")
    if category == "spot":
        return base + quote
    if quote not in ("USDT", "USDC"):
        raise ValueError(
            f"{normalized!r}: Bybit linear contracts are margined in USDT or USDC "
            f"(inverse {quote} contracts are not supported)"
        )
    (suffix,) = rest
    if suffix == "PERP":
        return base + "PERP" if quote == "USDC" else base + quote
    # 251226 -> 26DEC25; Bybit writes the day without a leading zero (BTC-6JAN23-...).
    expiry = f"{int(suffix[4:])}{_MONTHS[int(suffix[2:4]) - 1]}{suffix[:2]}"
    return f"{base}-{expiry}" if quote == "USDC" else f"{base}{quote}-{expiry}"


def to_normalized(symbol: str, category: Category) -> str:
    """Bybit symbol of ``category`` -> normalized; the inverse of :func:`to_exchange`."""
    if category == "spot":
        base, quote = _split_quote(symbol)
        return f"{base}-{quote}"
    head, _, expiry = symbol.partition("-")
    if expiry:
        yymmdd = _parse_expiry(expiry, symbol)
        if head.endswith("USDT") and len(head) > 4:
            return f"{head[:-4]}-USDT-{yymmdd}"
        return f"{head}-USDC-{yymmdd}"
    if symbol.endswith("PERP") and len(symbol) > 4:
        return f"{symbol[:-4]}-USDC-PERP"
    base, quote = _split_quote(symbol)
    if quote != "USDT":
        raise ValueError(f"{symbol!r} is not a Bybit USDT or USDC linear perpetual")
    return f"{base}-{quote}-PERP"


def _split_quote(symbol: str) -> tuple[str, str]:
    upper = symbol.upper()
    for quote in QUOTES:
        if upper.endswith(quote) and len(upper) > len(quote):
            return upper[: -len(quote)], quote
    raise ValueError(f"cannot tell the quote asset of Bybit symbol {symbol!r}")


def _parse_expiry(expiry: str, symbol: str) -> str:
    """``26DEC25`` -> ``251226``."""
    day, month, year = expiry[:-5], expiry[-5:-2], expiry[-2:]
    if not (day.isdigit() and year.isdigit() and month in _MONTHS):
        raise ValueError(f"{symbol!r}: cannot read the expiry {expiry!r}")
    return f"{year}{_MONTHS.index(month) + 1:02d}{int(day):02d}"
