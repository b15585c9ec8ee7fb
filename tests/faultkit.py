"""Helpers shared by the fault matrix and the security tests: app configs against the simulator,
collecting records until a condition holds, and leak checks (asyncio tasks, open fds)."""

from __future__ import annotations

import asyncio
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass

from streamkit.app import App
from streamkit.channel import Subscription
from streamkit.config import parse_config
from streamkit.model import Record, Status, StatusEvent


def feed_yaml(
    url: str,
    rest_url: str,
    *,
    channels: str = "[trades]",
    name: str | None = None,
    stale_after: float = 5.0,
    connect_timeout: float = 3.0,
    pong_timeout: float = 5.0,
    reconnect: str = "{initial: 0.05, max: 0.2}",
    transport: str = "{connect_timeout: 3}",
) -> str:
    """One feed entry (a YAML list item) for the Binance plugin."""
    label = f"\n    name: {name}" if name else ""
    return f"""
  - exchange: binance{label}
    url: {url}
    rest_url: {rest_url}
    symbols: [NKN-USDT]
    channels: {channels}
    stale_after: {stale_after}
    connect_timeout: {connect_timeout}
    pong_timeout: {pong_timeout}
    reconnect: {reconnect}
    transport: {transport}
"""


def make_app(*feeds: str, extra: str = "") -> App:
    return App(parse_config("feeds:" + "".join(feeds) + extra))


async def collect_until(
    sub: Subscription, done: Callable[[list[Record]], bool], within: float = 10.0
) -> list[Record]:
    """Read ``sub`` until ``done(records)``; TimeoutError after ``within`` seconds."""
    seen: list[Record] = []
    async with asyncio.timeout(within):
        while not done(seen):
            seen.extend(await sub.get_batch())
    return seen


def statuses(records: list[Record], event: StatusEvent | None = None) -> list[Status]:
    return [r for r in records if isinstance(r, Status) and (event is None or r.event is event)]


def events(records: list[Record]) -> list[StatusEvent]:
    return [r.event for r in statuses(records)]


def has_after(records: list[Record], event: StatusEvent, kind: type[Record]) -> bool:
    """True once a ``kind`` record arrived after the last ``event`` status."""
    idx = [i for i, r in enumerate(records) if isinstance(r, Status) and r.event is event]
    return bool(idx) and any(isinstance(r, kind) for r in records[idx[-1] + 1 :])


_DELAY = re.compile(r"reconnecting in ([0-9.]+)s")


def reconnect_delays(records: list[Record]) -> list[float]:
    """The delays announced by ``reconnecting`` status records, in order."""
    out = []
    for s in statuses(records, StatusEvent.RECONNECTING):
        m = _DELAY.search(s.detail)
        assert m is not None, s.detail
        out.append(float(m.group(1)))
    return out


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@dataclass
class LeakCheck:
    """Tasks and file descriptors at one moment; :meth:`assert_back` waits (bounded) until
    everything started since has finished and every fd opened since is closed again."""

    tasks: set[asyncio.Task[object]]
    fds: int

    @classmethod
    def now(cls) -> LeakCheck:
        return cls(set(asyncio.all_tasks()), open_fds())

    async def assert_back(self, within: float = 5.0) -> None:
        me = asyncio.current_task()
        extra: set[asyncio.Task[object]] = set()
        fds = open_fds()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while loop.time() < deadline:
            extra = {t for t in asyncio.all_tasks() if t not in self.tasks and t is not me}
            fds = open_fds()
            if not extra and fds <= self.fds:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(
            f"leak: {len(extra)} task(s) still running {sorted(t.get_name() for t in extra)}, "
            f"{fds - self.fds} fd(s) more than before"
        )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (closed right away)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
