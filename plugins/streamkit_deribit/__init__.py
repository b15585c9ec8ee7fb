"""Deribit plugin for streamkit (entry point ``streamkit.feeds: deribit``).

Layout, the same in every plugin: ``schemas`` (wire Structs mirroring Deribit's JSON-RPC
frames), ``symbols`` (normalized <-> instrument names), ``feed`` (the Feed subclass:
subscriptions, heartbeats, decoding, normalization; books go through the shared BookSync
with the ``change_id`` chain).
"""

from streamkit_deribit.feed import DeribitFeed

__all__ = ["DeribitFeed"]
