"""``make_simulator(exchange, **options)``: the simulator of any supported venue.

``binance`` returns the Binance spot :class:`~streamkit.simulator.server.BinanceSimulator`
(options: its keyword arguments); every other exchange id returns a
:class:`~streamkit.simulator.venue_server.VenueSimulator` driving that venue's adapter.
Venue simulator options: ``host``, ``port``, ``rate``, ``replay_once``, ``max_pending``,
``close_timeout``, ``time_scale`` (multiplies every protocol time constant: heartbeat
periods, idle timeouts, subscribe deadlines, WS pings) and, for venues that send WebSocket
pings (Binance USD-M), ``ws_ping_interval`` / ``ws_pong_timeout`` in seconds.
"""

from __future__ import annotations

from typing import Any, Final

from streamkit.simulator.server import BinanceSimulator
from streamkit.simulator.venue_server import VenueSimulator
from streamkit.simulator.venues import ADAPTERS
from streamkit.simulator.venues.binance_usdm import WS_PING_INTERVAL, WS_PONG_TIMEOUT

#: Accepted aliases of exchange ids.
ALIASES: Final = {"binance_usdm": "binance_futures", "binance_spot": "binance"}

EXCHANGES: Final = ("binance", *ADAPTERS)
"""Every exchange id :func:`make_simulator` accepts."""


def make_simulator(exchange: str, **options: Any) -> BinanceSimulator | VenueSimulator:
    """A not-yet-started simulator speaking ``exchange``'s public market-data protocol.

    Both kinds offer ``start()`` / ``stop()`` (and ``async with``), ``ws_url`` (the full URL a
    feed connects to), ``rest_url``, ``inject(Fault)`` and ``stats``. Raises ValueError for an
    unknown exchange, TypeError for an unknown option.
    """
    exchange = ALIASES.get(exchange, exchange)
    if exchange == "binance":
        return BinanceSimulator(**options)
    adapter_class = ADAPTERS.get(exchange)
    if adapter_class is None:
        raise ValueError(f"no simulator for {exchange!r}; known: {', '.join(EXCHANGES)}")
    time_scale = float(options.pop("time_scale", 1.0))
    if not time_scale > 0:
        raise ValueError("time_scale must be > 0")
    if exchange == "binance_futures":
        options.setdefault("ws_ping_interval", WS_PING_INTERVAL * time_scale)
        options.setdefault("ws_pong_timeout", WS_PONG_TIMEOUT * time_scale)
    return VenueSimulator(adapter_class(time_scale=time_scale), **options)
