"""Coinbase Advanced Trade symbol mapping (exactly reversible).

- Spot: ``BTC-USD`` <-> ``BTC-USD``, the same identity mapping as the Coinbase Exchange
  plugin (reused from :mod:`streamkit_coinbase.symbols`: the product ids are the same).
- Coinbase International perpetuals, listed on Advanced Trade as ``BASE-PERP-INTX``
  (``BTC-PERP-INTX`` is in the captured frames): ``BTC-USDC-PERP`` <-> ``BTC-PERP-INTX``.
  They are quoted and margined in USDC (general knowledge of the venue, not in the captures),
  so USDC is the only quote a ``-PERP`` symbol may have here.

Dated US futures (``BIT-28JUN24-CDE``) are not mapped: they raise ValueError.
"""

from __future__ import annotations

from streamkit_coinbase import symbols as exchange_symbols

PERP_QUOTE = "USDC"
INTX_SUFFIX = "-PERP-INTX"


def to_exchange(symbol: str) -> str:
    """``BTC-USD`` -> ``BTC-USD``; ``BTC-USDC-PERP`` -> ``BTC-PERP-INTX``. Raises ValueError."""
    parts = symbol.split("-")
    if len(parts) == 3 and parts[2] == "PERP":
        base, quote = parts[0], parts[1]
        if quote != PERP_QUOTE or not (base.isalnum() and base.isupper()):
            raise ValueError(
                f"{symbol!r} is not a Coinbase Advanced Trade perpetual "
                f"(expected BASE-{PERP_QUOTE}-PERP, e.g. BTC-{PERP_QUOTE}-PERP)"
            )
        return f"{base}{INTX_SUFFIX}"
    try:
        return exchange_symbols.to_exchange(symbol)
    except ValueError:
        raise ValueError(
            f"{symbol!r} is not a Coinbase Advanced Trade product "
            f"(expected BASE-QUOTE like BTC-USD, or BASE-{PERP_QUOTE}-PERP)"
        ) from None


def to_normalized(product_id: str) -> str:
    """``BTC-USD`` -> ``BTC-USD``; ``BTC-PERP-INTX`` -> ``BTC-USDC-PERP``. Raises ValueError."""
    if product_id.endswith(INTX_SUFFIX):
        base = product_id[: -len(INTX_SUFFIX)]
        if not (base.isalnum() and base.isupper()):
            raise ValueError(f"{product_id!r} is not a Coinbase perpetual product id")
        return f"{base}-{PERP_QUOTE}-PERP"
    try:
        return exchange_symbols.to_normalized(product_id)
    except ValueError:
        raise ValueError(
            f"{product_id!r} is not a Coinbase Advanced Trade product id "
            "(expected BASE-QUOTE or BASE-PERP-INTX)"
        ) from None
