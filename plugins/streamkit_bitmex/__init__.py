"""BitMEX plugin for streamkit (entry point ``streamkit.feeds: bitmex``).

Layout, the same in every plugin: ``schemas`` (wire Structs mirroring BitMEX's JSON),
``symbols`` (normalized <-> exchange symbols), ``l2_table`` (the id-keyed ``orderBookL2``
sync), ``feed`` (the Feed subclass: subscriptions, decoding, normalization).
"""

from streamkit_bitmex.feed import BitmexFeed

__all__ = ["BitmexFeed"]
