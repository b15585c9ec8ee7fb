"""What every simulator shares, whatever protocol it speaks.

The Binance spot simulator (:mod:`.server`, :mod:`.connection`) and the venue simulators
(:mod:`.venue_server`) differ in their protocols, their outbound queues and how they produce
frames; this module holds the parts that are the same for both: close codes, pacing, JSON
responses and the wall clock.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Final

from aiohttp import web

CLOSE_GOING_AWAY: Final = 1001
CLOSE_POLICY_VIOLATION: Final = 1008
SLOW_CONSUMER_REASON: Final = "Slow consumer"
RATE_LIMIT_REASON: Final = "Too many requests"

# Pacers wake at most every 5 ms and emit the steps due since the last wake-up, so high rates
# cost a few wake-ups per second rather than one per step.
MIN_TICK: Final = 0.005


class Pacer:
    """Spreads ``rate`` steps per second (on average) over wake-ups ``tick`` seconds apart.

    Usage: ``while ...: run pacer.due() steps; await asyncio.sleep(pacer.tick)``. The first
    call is due one step; after the event loop was blocked, at most one second of steps is
    due at once (the rest of the backlog is skipped rather than flooded out).
    """

    __slots__ = ("_done", "_loop", "_max_burst", "_rate", "_started", "tick")

    def __init__(self, rate: float, loop: asyncio.AbstractEventLoop) -> None:
        self.tick = max(1.0 / rate, MIN_TICK)
        self._rate = rate
        self._max_burst = max(1, math.ceil(rate))
        self._loop = loop
        self._started = loop.time()
        self._done = 0

    def due(self) -> int:
        """How many steps to run now (>= 0); they count as done from here on."""
        due = int((self._loop.time() - self._started) * self._rate) + 1 - self._done
        if due > self._max_burst:  # the event loop was blocked: skip the backlog
            self._done += due - self._max_burst
            due = self._max_burst
        due = max(due, 0)
        self._done += due
        return due


def json_response(body: bytes, status: int = 200) -> web.Response:
    """An ``application/json`` response with an already encoded ``body``."""
    return web.Response(body=body, status=status, content_type="application/json")


def now_ms() -> int:
    """Wall-clock epoch milliseconds."""
    return time.time_ns() // 1_000_000
