"""Deribit instrument names <-> normalized symbols, reversible for every form accepted.

=========================  ===========================  ====================================
Deribit                    normalized                   kind
=========================  ===========================  ====================================
``BTC-PERPETUAL``          ``BTC-USD-PERP``             inverse perpetual (quote USD)
``BTC_USDC-PERPETUAL``     ``BTC-USDC-PERP``            linear perpetual
``BTC-24SEP21``            ``BTC-USD-210924``           dated future
``BTC-24SEP21-8000-P``     ``BTC-USD-210924-8000-P``    option (strike, C|P)
``XRP_USDC-30JUN23-0d625-C``  ``XRP-USDC-230630-0.625-C``  option, fractional strike
``BTC_USDC``               ``BTC-USDC``                 spot
=========================  ===========================  ====================================

Deribit writes expiries as ``<day><MON><yy>`` with no leading zero on the day (``2JUL21``)
and fractional strikes with ``d`` for the decimal point. The inverse instruments (no
underscore) are quoted in USD; the linear ones name their quote after ``_``. Combos, spreads
and indices are not supported (ValueError).
"""

from __future__ import annotations

import datetime as dt

MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
PERPETUAL = "PERPETUAL"
INVERSE_QUOTE = "USD"
"""Quote of the instruments whose name has no ``_QUOTE`` (BTC-PERPETUAL, ETH-24SEP21...)."""


def _is_asset(text: str) -> bool:
    return bool(text) and text.isalnum() and text.isupper()


def to_exchange(symbol: str) -> str:
    """Normalized -> Deribit (``BTC-USD-PERP`` -> ``BTC-PERPETUAL``). Raises ValueError for
    anything Deribit cannot list."""
    parts = symbol.split("-")
    if len(parts) not in (2, 3, 5) or not all(_is_asset(p) for p in parts[:2]):
        raise ValueError(
            f"{symbol!r} is not a supported Deribit symbol (expected BASE-QUOTE-PERP, "
            "BASE-QUOTE-YYMMDD, BASE-QUOTE-YYMMDD-STRIKE-C|P or BASE-QUOTE)"
        )
    base, quote = parts[0], parts[1]
    if len(parts) == 2:
        if quote == INVERSE_QUOTE:
            raise ValueError(f"{symbol!r}: Deribit spot pairs are linear (e.g. BTC-USDC)")
        return f"{base}_{quote}"
    prefix = base if quote == INVERSE_QUOTE else f"{base}_{quote}"
    if len(parts) == 3 and parts[2] == "PERP":
        return f"{prefix}-{PERPETUAL}"
    expiry = _venue_date(symbol, parts[2])
    if len(parts) == 3:
        return f"{prefix}-{expiry}"
    strike, kind = parts[3], parts[4]
    if kind not in ("C", "P"):
        raise ValueError(f"{symbol!r}: an option ends in C or P, not {kind!r}")
    return f"{prefix}-{expiry}-{_venue_strike(symbol, strike)}-{kind}"


def _venue_date(symbol: str, text: str) -> str:
    if len(text) != 6 or not text.isdigit():
        raise ValueError(f"{symbol!r}: expected PERP or a YYMMDD expiry, got {text!r}")
    try:
        day = dt.date(2000 + int(text[:2]), int(text[2:4]), int(text[4:]))
    except ValueError:
        raise ValueError(f"{symbol!r}: {text!r} is not a date") from None
    return f"{day.day}{MONTHS[day.month - 1]}{text[:2]}"


def _venue_strike(symbol: str, strike: str) -> str:
    whole, dot, fraction = strike.partition(".")
    if not whole.isdigit() or (dot and not fraction.isdigit()):
        raise ValueError(f"{symbol!r}: {strike!r} is not a strike")
    return f"{whole}d{fraction}" if dot else whole


def to_normalized(instrument: str) -> str:
    """Deribit -> normalized; the exact inverse of :func:`to_exchange` (a name that would not
    map back to itself raises ValueError)."""
    normalized = _to_normalized(instrument)
    if to_exchange(normalized) != instrument:
        raise ValueError(f"Deribit instrument {instrument!r} has no reversible mapping")
    return normalized


def _to_normalized(instrument: str) -> str:
    parts = instrument.split("-")
    currency = parts[0]
    base, _, quote = currency.partition("_")
    quote = quote or INVERSE_QUOTE
    if len(parts) == 1:
        if "_" not in currency:
            raise ValueError(f"unsupported Deribit instrument {instrument!r}")
        return f"{base}-{quote}"
    if len(parts) == 2 and parts[1] == PERPETUAL:
        return f"{base}-{quote}-PERP"
    if len(parts) not in (2, 4):
        raise ValueError(f"unsupported Deribit instrument {instrument!r}")
    expiry = _normal_date(instrument, parts[1])
    if len(parts) == 2:
        return f"{base}-{quote}-{expiry}"
    strike = parts[2].replace("d", ".", 1)
    return f"{base}-{quote}-{expiry}-{strike}-{parts[3]}"


def _normal_date(instrument: str, text: str) -> str:
    day, month, year = text[:-5], text[-5:-2], text[-2:]
    if not day.isdigit() or month not in MONTHS or not year.isdigit():
        raise ValueError(f"Deribit instrument {instrument!r}: {text!r} is not an expiry")
    try:
        expiry = dt.date(2000 + int(year), MONTHS.index(month) + 1, int(day))
    except ValueError:
        raise ValueError(f"Deribit instrument {instrument!r}: {text!r} is not a date") from None
    return f"{expiry:%y%m%d}"
