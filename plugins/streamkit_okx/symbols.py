"""OKX v5 symbol mapping (OKX calls them instrument ids, ``instId``).

=========================  ===========================  =============
normalized                 OKX ``instId``               ``instType``
=========================  ===========================  =============
``BTC-USDT``               ``BTC-USDT``                 SPOT
``BTC-USDT-PERP``          ``BTC-USDT-SWAP``            SWAP
``BTC-USD-220527``         ``BTC-USD-220527``           FUTURES
``BTC-USD-220527-30000-C`` ``BTC-USD-220527-30000-C``   OPTION
=========================  ===========================  =============

OKX already spells spot, dated futures and options the way streamkit does; only perpetual
swaps differ (``-SWAP`` <-> ``-PERP``). Both directions are total on these shapes and exact
inverses of each other; anything else raises ValueError.
"""

from __future__ import annotations

from typing import Literal

InstType = Literal["SPOT", "SWAP", "FUTURES", "OPTION"]


def _is_code(part: str) -> bool:
    """A currency code: upper-case letters and digits (``BTC``, ``USDT``, ``1INCH``)."""
    return part.isalnum() and part == part.upper() and not part.isdigit()


def _is_date(part: str) -> bool:
    return len(part) == 6 and part.isdigit()


def _is_strike(part: str) -> bool:
    whole, _, frac = part.partition(".")
    return whole.isdigit() and (frac == "" or frac.isdigit())


def inst_type(normalized: str) -> InstType:
    """The OKX instrument type of a normalized symbol. Raises ValueError for other shapes."""
    parts = normalized.split("-")
    if len(parts) < 2 or not (_is_code(parts[0]) and _is_code(parts[1])):
        raise ValueError(
            f"{normalized!r} is not an OKX symbol (expected BASE-QUOTE, BASE-QUOTE-PERP, "
            "BASE-QUOTE-YYMMDD or BASE-QUOTE-YYMMDD-STRIKE-C|P)"
        )
    rest = parts[2:]
    if not rest:
        return "SPOT"
    if rest == ["PERP"]:
        return "SWAP"
    if len(rest) == 1 and _is_date(rest[0]):
        return "FUTURES"
    if len(rest) == 3 and _is_date(rest[0]) and _is_strike(rest[1]) and rest[2] in ("C", "P"):
        return "OPTION"
    raise ValueError(
        f"{normalized!r} is not an OKX symbol (expected BASE-QUOTE, BASE-QUOTE-PERP, "
        "BASE-QUOTE-YYMMDD or BASE-QUOTE-YYMMDD-STRIKE-C|P)"
    )


def to_exchange(normalized: str) -> str:
    """``BTC-USDT-PERP`` -> ``BTC-USDT-SWAP``; every other valid shape is unchanged."""
    if inst_type(normalized) == "SWAP":
        return normalized[: -len("PERP")] + "SWAP"
    return normalized


def to_normalized(inst_id: str) -> str:
    """``BTC-USDT-SWAP`` -> ``BTC-USDT-PERP``; the exact inverse of :func:`to_exchange`."""
    if inst_id.endswith("-SWAP"):
        normalized = inst_id[: -len("SWAP")] + "PERP"
    elif inst_id.endswith("-PERP"):
        raise ValueError(f"{inst_id!r} is not an OKX instrument id (swaps end in -SWAP)")
    else:
        normalized = inst_id
    inst_type(normalized)  # validates the shape
    return normalized
