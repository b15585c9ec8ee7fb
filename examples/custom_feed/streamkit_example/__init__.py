"""streamkit feed plugin for the imaginary venue "examplex" (entry point
``streamkit.feeds: examplex``).

Layout, the same as streamkit's own plugins: ``schemas`` (wire Structs mirroring the venue's
JSON, decoders built once), ``symbols`` (normalized <-> venue symbols), ``feed`` (the Feed
subclass and its per-connection FeedProtocol).
"""

from streamkit_example.feed import ExampleXFeed

__all__ = ["ExampleXFeed"]
