"""A built-in Binance spot market-data simulator: the real protocol, replaying real captures.

It lets ``streamkit simulate`` and the offline demo show live, typed data without internet,
and gives tests a venue whose faults they control::

    async with BinanceSimulator(rate=50, ping_interval=0.2) as sim:
        url = sim.ws_url + "?streams=nknusdt@depth@100ms"   # ws://127.0.0.1:PORT/stream?...
        snapshot_url = sim.rest_url + "/api/v3/depth?symbol=NKNUSDT&limit=1000"
        sim.inject(Fault("stall", seconds=1.0))

Every other venue (OKX, Kraken v2, Bybit, Coinbase, Coinbase Advanced Trade, BitMEX, Deribit,
Binance USD-M) comes from ``make_simulator("okx", rate=50)`` (see :mod:`.factory`,
:mod:`.venue_server`, :mod:`.venues`).

See :mod:`.server` for endpoints and options, :mod:`.faults` for fault kinds, :mod:`.replay`
for how captured frames are looped, and :mod:`.connection` for per-connection limits.
"""

from streamkit.simulator.book import BookState
from streamkit.simulator.factory import EXCHANGES, make_simulator
from streamkit.simulator.faults import Fault, FaultError, FaultKind
from streamkit.simulator.server import (
    DEFAULT_RATE,
    BinanceSimulator,
    SimulatorOptions,
    run_simulator,
)
from streamkit.simulator.stats import ConnectionStats, SimulatorStats
from streamkit.simulator.venue_server import VenueSimulator

__all__ = [
    "DEFAULT_RATE",
    "EXCHANGES",
    "BinanceSimulator",
    "BookState",
    "ConnectionStats",
    "Fault",
    "FaultError",
    "FaultKind",
    "SimulatorOptions",
    "SimulatorStats",
    "VenueSimulator",
    "make_simulator",
    "run_simulator",
]
