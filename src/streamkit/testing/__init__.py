"""Test helpers for plugin authors.

:func:`check_feed` / :func:`assert_conforms` replay captured frames through a Feed plugin's
protocol, with no network, and check the plugin contract (see :mod:`streamkit.testing.conformance`).
"""

from streamkit.testing.conformance import (
    GARBAGE_FRAMES,
    NORMALIZED_CHANNELS,
    ConformanceReport,
    FrameError,
    HttpAnswer,
    Violation,
    assert_conforms,
    check_feed,
)

__all__ = [
    "GARBAGE_FRAMES",
    "NORMALIZED_CHANNELS",
    "ConformanceReport",
    "FrameError",
    "HttpAnswer",
    "Violation",
    "assert_conforms",
    "check_feed",
]
