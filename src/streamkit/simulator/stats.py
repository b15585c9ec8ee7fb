"""Counters the simulator keeps, readable as ``sim.stats`` or ``GET /_sim/stats`` (JSON).

``sim.stats`` returns a snapshot: copies that later activity does not change.
"""

from __future__ import annotations

import msgspec


class ConnectionStats(msgspec.Struct):
    """One WebSocket connection (live counters while ``open``)."""

    id: int
    path: str
    combined: bool
    open: bool = True
    messages_sent: int = 0
    """Text frames written: data, control replies and injected frames."""
    messages_received: int = 0
    """Frames from the client that count against the rate limit (see ``connection``)."""
    pings_sent: int = 0
    pongs_received: int = 0
    subscriptions: int = 0
    """Streams currently subscribed."""
    close_code: int | None = None
    close_reason: str = ""


class SimulatorStats(msgspec.Struct):
    """The whole simulator. ``connections`` lists the open ones and the most recent closed
    ones (bounded), in accept order."""

    connections_accepted: int = 0
    connections_open: int = 0
    handshakes_rejected: int = 0
    faults_injected: dict[str, int] = msgspec.field(default_factory=dict)
    connections: list[ConnectionStats] = msgspec.field(default_factory=list)
