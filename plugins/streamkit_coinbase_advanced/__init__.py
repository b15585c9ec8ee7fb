"""Coinbase Advanced Trade plugin for streamkit (entry point ``streamkit.feeds:
coinbase_advanced``).

Layout, the same in every plugin: ``schemas`` (wire Structs mirroring Advanced Trade's JSON),
``symbols`` (normalized <-> exchange symbols), ``subscriptions`` (subscribe messages and
matching their answers), ``feed`` (the Feed subclass: subscriptions, the connection's
``sequence_num`` check, decoding, normalization; books go through the shared BookSync).
"""

from streamkit_coinbase_advanced.feed import CoinbaseAdvancedFeed

__all__ = ["CoinbaseAdvancedFeed"]
