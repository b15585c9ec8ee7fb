"""Binance USD-M futures plugin for streamkit (entry point ``streamkit.feeds: binance_futures``).

Same layout as the spot plugin: ``schemas`` (wire Structs; the formats identical to spot are
imported from :mod:`streamkit_binance`), ``symbols`` (``BTC-USDT-PERP`` <-> ``BTCUSDT``,
``BTC-USDT-231229`` <-> ``BTCUSDT_231229``), ``depth_sync`` (the futures ``pu``-chain book
sync), ``feed`` (the Feed subclass: subscriptions, decoding, open-interest polling).
"""

from streamkit_binance_futures.feed import BinanceFuturesFeed

__all__ = ["BinanceFuturesFeed"]
