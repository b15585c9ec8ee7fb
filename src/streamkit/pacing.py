"""Timing policies: reconnect backoff, connection-rate limits and send pacing."""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque

from streamkit.config import BackoffOptions


class Backoff:
    """Capped exponential backoff with full jitter (AWS architecture blog's "full jitter"):
    the n-th delay is uniform in ``[0, min(max, initial * multiplier**n)]``. Full jitter
    spreads a reconnect storm (a venue dropping every client at once) over the whole window
    instead of synchronising the retries."""

    def __init__(self, options: BackoffOptions, rng: random.Random | None = None) -> None:
        self.options = options
        self.attempt = 0
        self._rng = rng or random.Random()

    def ceiling(self) -> float:
        o = self.options
        return float(min(o.max, o.initial * o.multiplier**self.attempt))

    def next_delay(self) -> float:
        """The delay before the next attempt; each call counts one more attempt."""
        delay = self._rng.uniform(0.0, self.ceiling())
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


class ConnectLimiter:
    """At most ``limit`` connection attempts per ``window`` seconds (a venue's per-IP connect
    limit), shared by every connection of one exchange in this process."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._stamps: deque[float] = deque()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait until one more attempt fits in the window, then count it. Safe to cancel."""
        async with self._lock:
            while True:
                now = time.monotonic()
                while self._stamps and now - self._stamps[0] >= self.window:
                    self._stamps.popleft()
                if len(self._stamps) < self.limit:
                    self._stamps.append(now)
                    return
                await asyncio.sleep(self.window - (now - self._stamps[0]))


class Pacer:
    """Spaces calls at least ``1 / rate`` seconds apart (a venue's inbound message limit)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self._next = 0.0

    async def wait(self) -> None:
        now = time.monotonic()
        if now < self._next:
            await asyncio.sleep(self._next - now)
            now = self._next
        self._next = now + self.interval
