"""Binance spot plugin for streamkit (entry point ``streamkit.feeds: binance``).

Layout, the same in every plugin: ``schemas`` (wire Structs mirroring Binance's JSON),
``symbols`` (normalized <-> exchange symbols), ``depth_sync`` (order-book sync rules),
``feed`` (the Feed subclass: subscriptions, decoding, normalization).
"""

from streamkit_binance.feed import BinanceFeed

__all__ = ["BinanceFeed"]
