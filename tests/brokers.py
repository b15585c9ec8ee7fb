"""Helpers for tests against the real NATS (JetStream) and Redis servers.

``STREAMKIT_NATS_URL`` / ``STREAMKIT_REDIS_URL`` point at them (defaults: the local
services). A server that cannot be reached makes the test skip with the reason, so that the
summary (``-ra``) says exactly what did not run; nothing here ever mocks a broker.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal

import pytest

from streamkit.channel import Bus
from streamkit.model import Record, Status, StatusEvent, Trade

NATS_URL = os.environ.get("STREAMKIT_NATS_URL", "nats://127.0.0.1:4222")
REDIS_URL = os.environ.get("STREAMKIT_REDIS_URL", "redis://127.0.0.1:6379")

NATS_START = [
    "start-stop-daemon",
    "--start",
    "--oknodo",
    "--background",
    "--exec",
    "/usr/sbin/nats-server",
    "--",
    "-a",
    "127.0.0.1",
    "-p",
    "4222",
    "-js",
    "-sd",
    "/var/lib/nats-server",
    "-l",
    "/var/log/nats-server.log",
]
"""How this machine (and CI) runs nats-server: used to start it again after killing it."""


def unique(prefix: str) -> str:
    """A name no other test (or test run) uses: stream, subject token, key or consumer."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


async def nats_or_skip(url: str = NATS_URL) -> object:
    """A connected nats-py client with JetStream available, or skip the test."""
    nats = pytest.importorskip("nats")
    try:
        nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
    except Exception as exc:
        pytest.skip(f"NATS not reachable at {url} ({type(exc).__name__}: {exc})")
    try:
        await nc.jetstream().account_info()
    except Exception as exc:
        await nc.close()
        pytest.skip(f"NATS at {url} has no JetStream ({type(exc).__name__}: {exc})")
    return nc


async def redis_or_skip(url: str = REDIS_URL) -> object:
    """A connected redis.asyncio client, or skip the test."""
    aioredis = pytest.importorskip("redis.asyncio")
    client = aioredis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        pytest.skip(f"Redis not reachable at {url} ({type(exc).__name__}: {exc})")
    return client


def trades(
    n: int, *, exchange: str = "testex", symbol: str = "BTC-USDT", start: int = 0
) -> list[Trade]:
    """``n`` sequence-numbered trades: ``id`` is the sequence number, prices exact."""
    return [
        Trade(
            exchange=exchange,
            symbol=symbol,
            ts=1_700_000_000_000_000_000 + i,
            recv_ts=1_700_000_000_000_000_500 + i,
            price=Decimal("27000.10") + Decimal(i) / 100,
            size=Decimal("0.00100000"),
            side="buy" if i % 2 else "sell",
            id=str(i),
        )
        for i in range(start, start + n)
    ]


def gap_status(exchange: str = "testex", symbol: str | None = "BTC-USDT") -> Status:
    return Status(
        exchange=exchange,
        symbol=symbol,
        ts=None,
        recv_ts=1_700_000_000_000_000_000,
        event=StatusEvent.GAP,
        detail="test gap",
        connection=f"{exchange}/0",
    )


async def publish_paced(bus: Bus, records: Sequence[Record], chunk: int = 100) -> None:
    """Publish in chunks, yielding between them as a live feed would."""
    for i in range(0, len(records), chunk):
        await bus.publish_many(records[i : i + chunk])
        await asyncio.sleep(0)


async def wait_for_jetstream(url: str = NATS_URL, within: float = 15.0) -> None:
    """Wait until a (re)started server answers JetStream requests (it accepts connections
    a little before its JetStream has recovered its streams)."""
    import nats

    deadline = time.monotonic() + within
    while True:
        try:
            nc = await nats.connect(url, connect_timeout=1, allow_reconnect=False)
            try:
                await nc.jetstream().account_info()
                return
            finally:
                await nc.close()
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def nats_server_pid() -> int | None:
    """The pid of the local nats-server (None when it does not run on this machine)."""
    if shutil.which("pgrep") is None:
        return None
    out = subprocess.run(
        ["pgrep", "-x", "nats-server"], capture_output=True, text=True, check=False
    ).stdout.split()
    return int(out[0]) if len(out) == 1 else None


def restart_nats_server(pid: int, down_for: float = 0.3, timeout: float = 15.0) -> None:
    """Stop the nats-server process ``pid`` (SIGTERM: it shuts down like a service stop),
    wait until it is gone, keep it down ``down_for`` seconds, start it again with the
    machine's command, and wait until it accepts connections."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            raise AssertionError(f"nats-server {pid} did not exit within {timeout}s")
        time.sleep(0.02)
    time.sleep(down_for)
    subprocess.run(NATS_START, check=True, timeout=timeout)
    import socket

    while True:
        try:
            socket.create_connection(("127.0.0.1", 4222), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError("nats-server did not come back") from None
            time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def take(it: AsyncIterator[Record], n: int, within: float = 10.0) -> list[Record]:
    """The next ``n`` items of an async iterator (fails after ``within`` seconds)."""
    out: list[Record] = []
    async with asyncio.timeout(within):
        while len(out) < n:
            out.append(await anext(it))
    return out
