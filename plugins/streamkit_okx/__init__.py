"""OKX v5 public plugin for streamkit (entry point ``streamkit.feeds: okx``).

Layout, the same in every plugin: ``schemas`` (wire Structs mirroring OKX's JSON),
``symbols`` (normalized <-> OKX instrument ids), ``checksum`` (the ``books`` CRC32),
``feed`` (the Feed subclass: subscriptions, acks, decoding, normalization, book resync).
"""

from streamkit_okx.feed import OkxFeed

__all__ = ["OkxFeed"]
