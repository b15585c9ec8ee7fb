"""The live terminal view of ``streamkit run``: one row per connection, refreshed twice a
second, with problems highlighted. Records printed by the console sink scroll above it.

Used only when stdout is a terminal (and not with ``--log-format json``); otherwise the
process writes plain structured logs.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from streamkit.actor import ActorState

if TYPE_CHECKING:
    from streamkit.app import App

REFRESH = 0.5


class LiveView:
    """Renders an App's connections; :meth:`run` until cancelled."""

    def __init__(self, app: App, console: Console | None = None) -> None:
        self.app = app
        self.console = console or Console()
        self._last: dict[str, tuple[float, int]] = {}

    def table(self) -> Table:
        table = Table(title="streamkit", expand=False, title_justify="left")
        for name, justify in (
            ("connection", "left"),
            ("state", "left"),
            ("msgs/s", "right"),
            ("last msg", "right"),
            ("latency p50/p99", "right"),
            ("reconnects", "right"),
            ("decode err", "right"),
            ("gaps", "right"),
            ("dropped", "right"),
        ):
            table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        now = time.monotonic()
        gaps = self._gaps_by_connection()
        dropped = sum(s.dropped for s in self.app.bus.subscriptions)
        for actor in self.app.actors:
            c = actor.counters
            then, before = self._last.get(actor.name, (now, c.messages))
            rate = (c.messages - before) / (now - then) if now > then else 0.0
            self._last[actor.name] = (now, c.messages)
            age = (time.monotonic_ns() - c.last_data_ns) / 1e9 if c.last_data_ns else None
            stale_after = actor.config.stale_after
            state_style = "green" if actor.state is ActorState.STREAMING else "bold red"
            age_style = "yellow" if age is not None and age > stale_after / 2 else ""
            p50, p99 = actor.latency.quantile(0.5), actor.latency.quantile(0.99)
            table.add_row(
                actor.name,
                Text(str(actor.state), style=state_style),
                f"{rate:,.0f}",
                Text("-" if age is None else f"{age:.1f}s", style=age_style),
                "-" if p50 is None else f"{_ms(p50)} / {_ms(p99)}",
                Text(str(c.reconnects), style="yellow" if c.reconnects else ""),
                Text(str(c.decode_errors), style="red" if c.decode_errors else ""),
                Text(str(gaps.get(actor.name, 0)), style="yellow" if gaps.get(actor.name) else ""),
                Text(str(dropped), style="yellow" if dropped else ""),
            )
        return table

    def _gaps_by_connection(self) -> dict[str, int]:
        # Gap counts per connection come from the status monitor's totals per exchange; the
        # monitor keeps the last status per connection, so attribute by exchange here.
        per_exchange: dict[str, int] = {}
        for (exchange, event), n in self.app.monitor.events.items():
            if event in ("gap", "checksum_mismatch"):
                per_exchange[exchange] = per_exchange.get(exchange, 0) + n
        return {a.name: per_exchange.get(a.feed.id, 0) for a in self.app.actors}

    async def run(self) -> None:
        with Live(
            self.table(),
            console=self.console,
            refresh_per_second=1 / REFRESH,
            redirect_stdout=True,
            redirect_stderr=True,
            transient=False,
        ) as live:
            while True:
                await asyncio.sleep(REFRESH)
                live.update(self.table())


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds == float("inf"):
        return ">10s"
    return f"{seconds * 1000:.1f}ms" if seconds < 1 else f"{seconds:.1f}s"
