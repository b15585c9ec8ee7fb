"""streamkit: typed, supervised streaming of live market data."""

from streamkit.model import (
    BBO,
    Book,
    Candle,
    Funding,
    Liquidation,
    OpenInterest,
    Record,
    Status,
    StatusEvent,
    Ticker,
    Trade,
)

__all__ = [
    "BBO",
    "Book",
    "Candle",
    "Funding",
    "Liquidation",
    "OpenInterest",
    "Record",
    "Status",
    "StatusEvent",
    "Ticker",
    "Trade",
]
