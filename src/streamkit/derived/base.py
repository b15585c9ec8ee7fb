"""What every derived stream shares: it consumes a bus subscription and publishes its own
records back to the same bus, so consumers and sinks subscribe to them like any channel.

A derived stream runs as an ordinary supervised child of the App. At shutdown the bus closes
after the feeds stop; the stream's subscription then ends once drained, and whatever it
would publish after that has no subscriber left to go to (every subscription ended with the
bus), so :meth:`DerivedStream.publish` reports it and the stream returns.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import structlog

from streamkit.channel import Bus, Subscription
from streamkit.model import Record

log = structlog.get_logger(__name__)


class DerivedStream(abc.ABC):
    """A consumer of the bus that publishes computed records back to it.

    Subclasses define :meth:`subscribe` (what they read, with which queue policy) and
    :meth:`run` (consume until the subscription ends). ``published`` counts records handed
    to the bus.
    """

    def __init__(self, name: str, bus: Bus) -> None:
        self.name = name
        self.bus = bus
        self.published = 0

    @abc.abstractmethod
    def subscribe(self) -> Subscription:
        """A new subscription to this stream's inputs (called before the App starts its
        feeds, so no input record is missed, and again after each restart)."""

    @abc.abstractmethod
    async def run(self, subscription: Subscription) -> None:
        """Consume ``subscription`` until it ends; publish results with :meth:`publish`."""

    async def publish(self, records: Sequence[Record]) -> bool:
        """Publish ``records`` in order. False once the bus is closed (shutdown): the caller
        should stop, nothing can receive its output any more."""
        if not records:
            return not self.bus.closed
        try:
            await self.bus.publish_many(records)
        except RuntimeError:
            if not self.bus.closed:
                raise
            log.debug("bus closed; derived output discarded", stream=self.name, n=len(records))
            return False
        self.published += len(records)
        return True
