"""What every sink shares: it owns one bus subscription and drains it until the bus closes.

A sink runs as a supervised child. When the bus closes (shutdown) the sink's iterator ends
after the queue drains, the sink flushes and returns: that is the "flush sinks" step of an
orderly shutdown. A sink that raises is restarted by its supervisor with a new subscription.
"""

from __future__ import annotations

import abc

from streamkit.channel import Bus, Subscription
from streamkit.config import (
    ConsoleSinkConfig,
    JsonlSinkConfig,
    NatsSinkConfig,
    RedisSinkConfig,
    SinkConfig,
)


class Sink(abc.ABC):
    def __init__(self, name: str) -> None:
        self.name = name
        self.written = 0

    @abc.abstractmethod
    async def run(self, subscription: Subscription) -> None:
        """Consume ``subscription`` until it ends; flush before returning (also when
        cancelled)."""


def subscribe_sink(bus: Bus, name: str, config: SinkConfig) -> Subscription:
    """The subscription a sink's config asks for."""
    return bus.subscribe(
        config.types or None,
        exchange=config.exchange,
        symbol=config.symbol,
        maxsize=config.queue_size,
        policy=config.policy,
        name=name,
    )


def build_sink(name: str, config: SinkConfig) -> Sink:
    if isinstance(config, JsonlSinkConfig):
        from streamkit.sinks.jsonl import JsonlSink

        return JsonlSink(name, config)
    if isinstance(config, ConsoleSinkConfig):
        from streamkit.sinks.console import ConsoleSink

        return ConsoleSink(name, config)
    if isinstance(config, NatsSinkConfig):
        from streamkit.sinks.nats import NatsSink  # imported lazily: nats-py is optional

        return NatsSink(name, config)
    if isinstance(config, RedisSinkConfig):
        from streamkit.sinks.redis import RedisSink  # imported lazily: redis is optional

        return RedisSink(name, config)
    raise AssertionError(f"unhandled sink config {config!r}")
