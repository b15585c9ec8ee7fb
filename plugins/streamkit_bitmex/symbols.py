"""BitMEX symbol mapping, reversible for every form it accepts.

=================  ===================  =====================================================
BitMEX             normalized           rule
=================  ===================  =====================================================
``XBTUSD``         ``BTC-USD-PERP``     perpetual: ``<base><quote>``, quote one of
``XBTUSDT``        ``BTC-USDT-PERP``    :data:`PERP_QUOTES`; ``XBT`` is ``BTC``
``ETHUSD``         ``ETH-USD-PERP``
``XBTZ21``         ``BTC-USD-211231``   dated future: ``<root><month code><yy>``; the bare
``XRPU21``         ``XRP-BTC-210924``   root ``XBT`` quotes USD, any other bare root quotes
``ETHUSDH21``      ``ETH-USD-210326``   XBT (``XRPU21`` trades in XBT); a root ending in a
                                        quote names it (``ETHUSD`` + ``H21``)
``XBT_USDT``       ``BTC-USDT``         spot
=================  ===================  =====================================================

Dated futures carry only a month and a year; the day is derived from BitMEX's expiry rule:
the **last Friday of the contract month** (12:00 UTC). A normalized future whose date is not
the last Friday of its month is rejected rather than silently mapped to a different contract.
BitMEX's other forms (weekly/daily-expiry and "UP/DOWN" contracts, indices like ``.BXBT``) are
not supported: :func:`to_exchange` and :func:`to_normalized` raise ValueError for them.
"""

from __future__ import annotations

import calendar
import datetime as dt

PERP_QUOTES = ("USDT", "USDC", "USD", "EUR")
"""Quote currencies of BitMEX perpetuals, longest first so ``USDT`` wins over ``USD``."""

MONTH_CODES = "FGHJKMNQUVXZ"
"""The futures month codes, January to December."""

_XBT = "XBT"


def _venue_asset(asset: str) -> str:
    return _XBT if asset == "BTC" else asset


def _normal_asset(asset: str) -> str:
    return "BTC" if asset == _XBT else asset


def _is_asset(text: str) -> bool:
    return bool(text) and text.isalnum() and text.isupper()


def last_friday(year: int, month: int) -> dt.date:
    """The last Friday of a month: BitMEX's expiry day for monthly and quarterly futures."""
    last_day = calendar.monthrange(year, month)[1]
    day = dt.date(year, month, last_day)
    return day - dt.timedelta(days=(day.weekday() - calendar.FRIDAY) % 7)


def to_exchange(symbol: str) -> str:
    """Normalized -> BitMEX (``BTC-USD-PERP`` -> ``XBTUSD``). Raises ValueError for a symbol
    BitMEX cannot have or this mapping does not support."""
    parts = symbol.split("-")
    if len(parts) not in (2, 3) or not all(_is_asset(p) for p in parts[:2]):
        raise ValueError(
            f"{symbol!r} is not a supported BitMEX symbol (expected BASE-QUOTE-PERP, "
            "BASE-QUOTE-YYMMDD or BASE-QUOTE)"
        )
    base, quote = parts[0], parts[1]
    if base == quote:
        raise ValueError(f"{symbol!r}: base and quote are the same asset")
    if len(parts) == 2:
        return f"{_venue_asset(base)}_{_venue_asset(quote)}"
    kind = parts[2]
    if kind == "PERP":
        if quote not in PERP_QUOTES:
            raise ValueError(f"{symbol!r}: BitMEX perpetuals quote one of {', '.join(PERP_QUOTES)}")
        return _venue_asset(base) + quote
    return _future_to_exchange(symbol, base, quote, kind)


def _future_to_exchange(symbol: str, base: str, quote: str, date: str) -> str:
    if len(date) != 6 or not date.isdigit():
        raise ValueError(f"{symbol!r}: expected PERP or a YYMMDD expiry, got {date!r}")
    try:
        expiry = dt.date(2000 + int(date[:2]), int(date[2:4]), int(date[4:]))
    except ValueError:
        raise ValueError(f"{symbol!r}: {date!r} is not a date") from None
    if expiry != last_friday(expiry.year, expiry.month):
        raise ValueError(
            f"{symbol!r}: BitMEX futures expire on the last Friday of the month "
            f"({last_friday(expiry.year, expiry.month):%y%m%d} for this month)"
        )
    if (base, quote) == ("BTC", "USD"):
        root = _XBT
    elif quote == "BTC":
        root = _venue_asset(base)
    else:
        root = _venue_asset(base) + _venue_asset(quote)
    return f"{root}{MONTH_CODES[expiry.month - 1]}{date[:2]}"


def to_normalized(exchange_symbol: str) -> str:
    """BitMEX -> normalized; the exact inverse of :func:`to_exchange` (a BitMEX name that
    would not map back to itself, such as ``XBTUSDZ21``, raises ValueError)."""
    normalized = _to_normalized(exchange_symbol)
    if to_exchange(normalized) != exchange_symbol:
        raise ValueError(f"BitMEX symbol {exchange_symbol!r} has no reversible mapping")
    return normalized


def _to_normalized(ex: str) -> str:
    if "_" in ex:
        base, _, quote = ex.partition("_")
        return f"{_normal_asset(base)}-{_normal_asset(quote)}"
    if len(ex) > 3 and ex[-3] in MONTH_CODES and ex[-2:].isdigit():
        root, month, yy = ex[:-3], MONTH_CODES.index(ex[-3]) + 1, int(ex[-2:])
        base, quote = _split_root(root)
        expiry = last_friday(2000 + yy, month)
        return f"{base}-{quote}-{expiry:%y%m%d}"
    for quote in PERP_QUOTES:
        if ex.endswith(quote) and len(ex) > len(quote):
            return f"{_normal_asset(ex[: -len(quote)])}-{quote}-PERP"
    raise ValueError(f"unsupported BitMEX symbol {ex!r}")


def _split_root(root: str) -> tuple[str, str]:
    """A futures root -> (base, quote): ``XBT`` -> BTC/USD, ``ETHUSD`` -> ETH/USD,
    ``XRP`` -> XRP/BTC (BitMEX's bare altcoin futures are quoted in XBT)."""
    for quote in (*PERP_QUOTES, _XBT):
        if root.endswith(quote) and len(root) > len(quote):
            return _normal_asset(root[: -len(quote)]), _normal_asset(quote)
    if root == _XBT:
        return "BTC", "USD"
    return _normal_asset(root), "BTC"
