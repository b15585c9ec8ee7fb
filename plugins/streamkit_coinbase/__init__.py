"""Coinbase Exchange plugin for streamkit (entry point ``streamkit.feeds: coinbase``).

Layout, the same in every plugin: ``schemas`` (wire Structs mirroring Coinbase's JSON),
``symbols`` (normalized <-> exchange symbols), ``feed`` (the Feed subclass: subscriptions,
acks, sequence and trade-id checks, decoding, normalization; books go through the shared
BookSync).
"""

from streamkit_coinbase.feed import CoinbaseFeed

__all__ = ["CoinbaseFeed"]
