"""Reconnect backoff and rate limits."""

from __future__ import annotations

import asyncio
import random
import time

from streamkit.config import BackoffOptions
from streamkit.pacing import Backoff, ConnectLimiter, Pacer


def test_backoff_is_full_jitter_capped_exponential() -> None:
    backoff = Backoff(BackoffOptions(initial=0.5, max=8.0, multiplier=2.0), random.Random(7))
    ceilings = []
    for _ in range(10):
        ceilings.append(backoff.ceiling())
        delay = backoff.next_delay()
        assert 0.0 <= delay <= ceilings[-1]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0]
    backoff.reset()
    assert backoff.ceiling() == 0.5


def test_full_jitter_spreads_a_reconnect_storm() -> None:
    rng = random.Random(1)
    delays = [Backoff(BackoffOptions(initial=4.0, max=4.0), rng).next_delay() for _ in range(1000)]
    # 100 clients dropped at once do not come back at once: the delays cover the window
    buckets = {int(d) for d in delays}
    assert buckets == {0, 1, 2, 3}
    assert max(delays) - min(delays) > 3.5


async def test_connect_limiter_spaces_attempts_over_the_window() -> None:
    limiter = ConnectLimiter(limit=3, window=0.3)
    started = time.monotonic()
    stamps = []
    for _ in range(7):
        await limiter.acquire()
        stamps.append(time.monotonic() - started)
    assert stamps[2] < 0.1  # the first three go at once
    assert stamps[3] >= 0.29  # the fourth waits for the window to slide
    assert stamps[6] >= 0.59
    # never more than 3 in any 0.3 s window
    for i in range(len(stamps) - 3):
        assert stamps[i + 3] - stamps[i] >= 0.29


async def test_pacer_spaces_messages() -> None:
    pacer = Pacer(rate=20)
    started = time.monotonic()
    for _ in range(5):
        await pacer.wait()
    assert time.monotonic() - started >= 4 * 0.05 - 0.005


async def test_limiter_is_safe_to_cancel() -> None:
    limiter = ConnectLimiter(limit=1, window=10)
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.01)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert limiter._lock.locked() is False
