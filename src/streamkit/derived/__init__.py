"""Derived streams: records computed from other records and published back to the bus.

- :mod:`~streamkit.derived.nbbo`: cross-venue best bid/offer (``nbbo`` records);
- :mod:`~streamkit.derived.book_snapshots`: top-N snapshots of verified books at a fixed
  interval (``book_snapshot`` records).

Configured under ``derived:`` and run by the App as supervised consumers;
:func:`build_derived` makes the configured ones.
"""

from __future__ import annotations

from streamkit.channel import Bus
from streamkit.config import DerivedConfig
from streamkit.derived.base import DerivedStream
from streamkit.derived.book_snapshots import BookSnapshotStream, SnapshotBooks
from streamkit.derived.nbbo import NBBO_EXCHANGE, NbboBook, NbboStream

__all__ = [
    "NBBO_EXCHANGE",
    "BookSnapshotStream",
    "DerivedStream",
    "NbboBook",
    "NbboStream",
    "SnapshotBooks",
    "build_derived",
]


def build_derived(config: DerivedConfig, bus: Bus) -> list[DerivedStream]:
    """The derived streams ``config`` turns on, in a fixed order (nbbo, book_snapshots)."""
    streams: list[DerivedStream] = []
    if config.nbbo is not None:
        streams.append(NbboStream(bus, config.nbbo))
    if config.book_snapshots is not None:
        streams.append(BookSnapshotStream(bus, config.book_snapshots))
    return streams
