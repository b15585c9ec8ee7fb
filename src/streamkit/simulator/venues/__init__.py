"""Venue protocol adapters for :class:`~streamkit.simulator.venue_server.VenueSimulator`.

One module per venue; :data:`ADAPTERS` maps the streamkit exchange id to its adapter class.
"""

from __future__ import annotations

from typing import Final

from streamkit.simulator.venues.base import VenueAdapter
from streamkit.simulator.venues.binance_usdm import BinanceUsdmAdapter
from streamkit.simulator.venues.bitmex import BitmexAdapter
from streamkit.simulator.venues.bybit import BybitAdapter
from streamkit.simulator.venues.coinbase import CoinbaseAdapter
from streamkit.simulator.venues.coinbase_advanced import CoinbaseAdvancedAdapter
from streamkit.simulator.venues.deribit import DeribitAdapter
from streamkit.simulator.venues.kraken import KrakenAdapter
from streamkit.simulator.venues.okx import OkxAdapter

ADAPTERS: Final[dict[str, type[VenueAdapter]]] = {
    "okx": OkxAdapter,
    "kraken": KrakenAdapter,
    "bybit": BybitAdapter,
    "coinbase": CoinbaseAdapter,
    "coinbase_advanced": CoinbaseAdvancedAdapter,
    "bitmex": BitmexAdapter,
    "deribit": DeribitAdapter,
    "binance_futures": BinanceUsdmAdapter,
}

__all__ = ["ADAPTERS", "VenueAdapter"]
