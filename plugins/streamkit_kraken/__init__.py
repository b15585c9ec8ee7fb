"""Kraken spot plugin for streamkit (entry point ``streamkit.feeds: kraken``), WebSocket v2.

Layout, the same in every plugin: ``schemas`` (wire Structs mirroring Kraken's JSON),
``symbols`` (normalized <-> exchange symbols), ``checksum`` (Kraken's CRC32 of the top 10
levels and its formatting rules), ``depth_sync`` (book maintenance: truncation to the
subscribed depth, verification through the shared BookSync), ``feed`` (the Feed subclass:
subscriptions, decoding, normalization).
"""

from streamkit_kraken.feed import KrakenFeed

__all__ = ["KrakenFeed"]
