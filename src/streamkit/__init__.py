"""streamkit: typed, supervised streaming of live market data."""

from streamkit.app import App
from streamkit.channel import Bus, Policy, Subscription
from streamkit.config import AppConfig, FeedConfig, load_config, parse_config
from streamkit.errors import StreamkitError
from streamkit.feed import Feed, FeedProtocol
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
    "App",
    "AppConfig",
    "Book",
    "Bus",
    "Candle",
    "Feed",
    "FeedConfig",
    "FeedProtocol",
    "Funding",
    "Liquidation",
    "OpenInterest",
    "Policy",
    "Record",
    "Status",
    "StatusEvent",
    "StreamkitError",
    "Subscription",
    "Ticker",
    "Trade",
    "load_config",
    "parse_config",
]
