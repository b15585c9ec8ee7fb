"""Binance spot symbol mapping: ``BTC-USDT`` <-> ``BTCUSDT``.

Binance concatenates base and quote. Going back, the symbols the feed subscribed to are known
exactly; for any other symbol the longest known quote asset that ends it is taken as the quote.
"""

from __future__ import annotations

# Longest first, so that "USDT" wins over "USD"-like shorter suffixes.
QUOTES = sorted(
    {
        "USDT",
        "USDC",
        "FDUSD",
        "TUSD",
        "BUSD",
        "USDP",
        "DAI",
        "BTC",
        "ETH",
        "BNB",
        "EUR",
        "GBP",
        "TRY",
        "BRL",
        "JPY",
        "AUD",
        "RUB",
        "UAH",
        "BIDR",
        "IDRT",
        "ZAR",
        "PLN",
        "RON",
        "ARS",
        "MXN",
        "COP",
        "CZK",
        "XRP",
        "DOGE",
        "TRX",
        "DOT",
        "SOL",
    },
    key=len,
    reverse=True,
)


def to_exchange(symbol: str) -> str:
    """``BTC-USDT`` -> ``BTCUSDT``. Raises ValueError for anything but ``BASE-QUOTE``."""
    parts = symbol.split("-")
    if len(parts) != 2 or not all(p.isalnum() and p.isupper() for p in parts):
        raise ValueError(
            f"{symbol!r} is not a Binance spot symbol (expected BASE-QUOTE, e.g. BTC-USDT)"
        )
    return parts[0] + parts[1]


def to_normalized(exchange_symbol: str) -> str:
    """``BTCUSDT`` -> ``BTC-USDT`` by the longest known quote suffix."""
    upper = exchange_symbol.upper()
    for quote in QUOTES:
        if upper.endswith(quote) and len(upper) > len(quote):
            return f"{upper[: -len(quote)]}-{quote}"
    raise ValueError(f"cannot tell the quote asset of Binance symbol {exchange_symbol!r}")
