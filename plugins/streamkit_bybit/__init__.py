"""Bybit v5 public plugin for streamkit, spot and linear (entry point ``streamkit.feeds:
bybit``; ``options.category`` picks the category).

Layout, the same in every plugin: ``schemas`` (wire Structs mirroring Bybit's JSON),
``symbols`` (normalized <-> Bybit symbols per category), ``feed`` (the Feed subclass:
subscriptions, acks, decoding, normalization, book resync).
"""

from streamkit_bybit.feed import BybitFeed

__all__ = ["BybitFeed"]
