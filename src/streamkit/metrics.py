"""Prometheus metrics and health endpoints for a running App.

``MetricsServer`` serves, on 127.0.0.1 by default:

- ``/metrics``: Prometheus text format. Values are read from the actors', subscriptions' and
  sinks' own counters at scrape time (a custom collector), so exporting costs nothing on the
  hot path.
- ``/health``: 200 while the feed and sink supervisors run, 503 otherwise.
- ``/ready``: 200 when every connection is streaming (or deliberately stopped), 503 with the
  connections that are not, otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from streamkit.actor import ActorState
from streamkit.model import type_name

if TYPE_CHECKING:
    from streamkit.app import App

_PREFIX = "streamkit"


class AppCollector(Collector):
    """Reads an App's counters on every scrape."""

    def __init__(self, app: App) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        yield from self._connections()
        yield from self._subscribers()
        yield from self._sinks()
        yield from self._status_events()

    def _connections(self) -> Iterator[Metric]:
        labels = ["feed", "connection"]
        state = GaugeMetricFamily(
            f"{_PREFIX}_connection_state",
            "1 for the state each connection is in",
            labels=[*labels, "state"],
        )
        families = {
            "messages": CounterMetricFamily(
                f"{_PREFIX}_messages_received", "WebSocket messages received", labels=labels
            ),
            "bytes": CounterMetricFamily(
                f"{_PREFIX}_bytes_received", "WebSocket payload bytes received", labels=labels
            ),
            "connects": CounterMetricFamily(
                f"{_PREFIX}_connects", "successful connections", labels=labels
            ),
            "reconnects": CounterMetricFamily(
                f"{_PREFIX}_reconnects", "reconnect attempts", labels=labels
            ),
            "decode_errors": CounterMetricFamily(
                f"{_PREFIX}_decode_errors", "frames that could not be decoded", labels=labels
            ),
            "stale": CounterMetricFamily(
                f"{_PREFIX}_stale_events", "connections declared stale", labels=labels
            ),
            "pong_timeouts": CounterMetricFamily(
                f"{_PREFIX}_pong_timeouts", "heartbeats left unanswered", labels=labels
            ),
        }
        records = CounterMetricFamily(
            f"{_PREFIX}_records_published", "records published", labels=[*labels, "type"]
        )
        age = GaugeMetricFamily(
            f"{_PREFIX}_last_data_age_seconds",
            "seconds since the last data frame (heartbeats excluded)",
            labels=labels,
        )
        latency = HistogramMetricFamily(
            f"{_PREFIX}_exchange_latency_seconds",
            "exchange event time to local receive time (sampled once per read batch)",
            labels=labels,
        )
        now_ns = time.monotonic_ns()
        for actor in self.app.actors:
            values = [actor.feed.label, actor.name]
            for s in ActorState:
                state.add_metric([*values, str(s)], 1.0 if actor.state is s else 0.0)
            counters = actor.counters
            for key, family in families.items():
                family.add_metric(values, float(getattr(counters, key)))
            for cls, n in actor.records_by_type.items():
                records.add_metric([*values, type_name(cls)], float(n))
            if counters.last_data_ns:
                age.add_metric(values, (now_ns - counters.last_data_ns) / 1e9)
            hist = actor.latency
            latency.add_metric(
                values,
                [(_bound(b), float(n)) for b, n in hist.cumulative()],
                sum_value=hist.total,
            )
        yield state
        yield from families.values()
        yield records
        yield age
        yield latency

    def _subscribers(self) -> Iterator[Metric]:
        labels = ["subscriber", "policy"]
        depth = GaugeMetricFamily(
            f"{_PREFIX}_subscriber_queue_depth", "records waiting", labels=labels
        )
        max_depth = GaugeMetricFamily(
            f"{_PREFIX}_subscriber_max_lag",
            "highest queue depth seen (records behind the feed)",
            labels=labels,
        )
        delivered = CounterMetricFamily(
            f"{_PREFIX}_subscriber_delivered", "records delivered", labels=labels
        )
        dropped = CounterMetricFamily(
            f"{_PREFIX}_subscriber_dropped", "records dropped by the policy", labels=labels
        )
        for sub in self.app.bus.subscriptions:
            values = [sub.name, str(sub.policy)]
            depth.add_metric(values, float(sub.depth))
            max_depth.add_metric(values, float(sub.max_depth))
            delivered.add_metric(values, float(sub.delivered))
            dropped.add_metric(values, float(sub.dropped))
        yield from (depth, max_depth, delivered, dropped)

    def _sinks(self) -> Iterator[Metric]:
        families: dict[str, CounterMetricFamily] = {}
        for sink in self.app.sinks:
            stats: dict[str, Any] = {"written": sink.written}
            extra = getattr(sink, "stats", None)
            if callable(extra):
                stats.update(extra())
            for key, value in stats.items():
                if not isinstance(value, int | float) or isinstance(value, bool):
                    continue
                family = families.get(key)
                if family is None:
                    family = families[key] = CounterMetricFamily(
                        f"{_PREFIX}_sink_{key}", f"sink counter {key}", labels=["sink"]
                    )
                family.add_metric([sink.name], float(value))
        yield from families.values()

    def _status_events(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            f"{_PREFIX}_status_events",
            "status records published (gap, resync, checksum_mismatch, stale, ...)",
            labels=["exchange", "event"],
        )
        for (exchange, event), n in self.app.monitor.events.items():
            family.add_metric([exchange, event], float(n))
        yield family


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(value)


class MetricsServer:
    """The HTTP endpoint; ``port=0`` picks a free port (see :attr:`url`)."""

    def __init__(self, app: App, host: str = "127.0.0.1", port: int = 9464) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(AppCollector(app))
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        web_app = web.Application()
        web_app.router.add_get("/metrics", self._metrics)
        web_app.router.add_get("/health", self._health)
        web_app.router.add_get("/ready", self._ready)
        self._runner = web.AppRunner(web_app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        if self.port == 0 and server is not None:
            sockets = getattr(server, "sockets", None) or []
            self.port = int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, content_type="text/plain", charset="utf-8")

    async def _health(self, request: web.Request) -> web.Response:
        ok = self.app.healthy()
        return _json({"status": "ok" if ok else "failing"}, 200 if ok else 503)

    async def _ready(self, request: web.Request) -> web.Response:
        waiting = {
            actor.name: str(actor.state)
            for actor in self.app.actors
            if actor.state not in (ActorState.STREAMING, ActorState.STOPPED)
        }
        ready = not waiting and bool(self.app.actors)
        return _json({"ready": ready, "not_streaming": waiting}, 200 if ready else 503)


def _json(payload: object, status: int) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(payload), status=status, content_type="application/json"
    )
