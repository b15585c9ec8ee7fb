"""Follows the status records of a running App: counts every event per exchange and keeps the
latest status of each connection, for the metrics endpoint and the live terminal view."""

from __future__ import annotations

import collections

from streamkit.channel import Subscription
from streamkit.model import Status


class Monitor:
    """Consumes a ``Status`` subscription (its own task; it never slows the feeds: the App
    gives it a ``drop_oldest`` queue)."""

    def __init__(self) -> None:
        self.events: collections.Counter[tuple[str, str]] = collections.Counter()
        self.last: dict[str, Status] = {}

    def observe(self, status: Status) -> None:
        self.events[(status.exchange, str(status.event))] += 1
        if status.connection is not None:
            self.last[status.connection] = status

    async def run(self, subscription: Subscription) -> None:
        async for record in subscription:
            if isinstance(record, Status):
                self.observe(record)
