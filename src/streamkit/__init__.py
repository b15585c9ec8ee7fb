"""streamkit: typed, supervised streaming of live market data."""

from importlib.metadata import PackageNotFoundError, version

from streamkit.app import App
from streamkit.channel import Bus, Policy, Subscription, SubscriptionClosed
from streamkit.config import AppConfig, FeedConfig, load_config, parse_config
from streamkit.errors import (
    ConfigError,
    EscalationError,
    PluginError,
    SlowConsumerError,
    StreamkitError,
    TransportError,
)
from streamkit.feed import Feed, FeedProtocol
from streamkit.model import (
    BBO,
    NBBO,
    Book,
    BookSnapshot,
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

try:
    __version__ = version("streamkit")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "BBO",
    "NBBO",
    "App",
    "AppConfig",
    "Book",
    "BookSnapshot",
    "Bus",
    "Candle",
    "ConfigError",
    "EscalationError",
    "Feed",
    "FeedConfig",
    "FeedProtocol",
    "Funding",
    "Liquidation",
    "OpenInterest",
    "PluginError",
    "Policy",
    "Record",
    "SlowConsumerError",
    "Status",
    "StatusEvent",
    "StreamkitError",
    "Subscription",
    "SubscriptionClosed",
    "Ticker",
    "Trade",
    "TransportError",
    "__version__",
    "load_config",
    "parse_config",
]
