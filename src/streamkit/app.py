"""The App: builds the supervision tree from a config and runs it.

Tree::

    App
     ├─ sinks supervisor (one_for_one)  ── one child per sink, each on its own subscription,
     │                                     one per derived stream (``derived:``), the monitor
     └─ feeds supervisor (one_for_one)  ── one ConnectionActor per connection of every feed

Shutdown is ordered so that nothing taken off the wire is lost: stop the feeds, close the bus
(every subscription ends once its queue is drained), let the sinks finish and flush, then stop
the simulator and the HTTP client. A supervisor that exceeds its restart intensity escalates:
the App stops everything and ``run`` raises :class:`~streamkit.errors.EscalationError`.

Python use::

    async with App(load_config("config.yaml")) as app:
        async for trade in app.stream(Trade, exchange="binance", symbol="BTC-USDT"):
            ...
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import structlog

from streamkit import plugins
from streamkit.actor import ConnectionActor, TransportFactory
from streamkit.channel import Bus, Policy, Subscription
from streamkit.config import AppConfig, FeedConfig, SimulatorConfig, SinkConfig
from streamkit.derived import DerivedStream, build_derived
from streamkit.errors import ConfigError, EscalationError, PluginError
from streamkit.feed import Feed
from streamkit.http import HttpClient
from streamkit.metrics import MetricsServer
from streamkit.model import Record, Status, StatusEvent
from streamkit.monitor import Monitor
from streamkit.pacing import ConnectLimiter
from streamkit.sinks.base import Sink, build_sink, subscribe_sink
from streamkit.supervisor import ChildSpec, Restart, Supervisor
from streamkit.transport.factory import make_transport

log = structlog.get_logger(__name__)

DEFAULT_BLOCK_TIMEOUT = 30.0
"""How long ``App.stream(policy="block")`` lets a consumer hold the feeds up (see there)."""

SINK_DRAIN_TIMEOUT = 30.0
"""How long shutdown waits for sinks to write what is still queued before cancelling them."""


def check_plugins(config: AppConfig) -> list[tuple[str, str]]:
    """Problems with exchange ids, channels and symbols against the installed plugins."""
    problems: list[tuple[str, str]] = []
    for i, feed_cfg in enumerate(config.feeds):
        try:
            cls = plugins.load(feed_cfg.exchange)
        except PluginError as exc:
            problems.append((f"feeds[{i}].exchange", str(exc)))
            continue
        feed = cls(feed_cfg, url="ws://unused", rest_url="http://unused")
        problems.extend((f"feeds[{i}].{key}", msg) for key, msg in feed.check())
    return problems


class App:
    """One running streamkit configuration."""

    def __init__(
        self,
        config: AppConfig,
        *,
        transport_factory: TransportFactory | None = None,
    ) -> None:
        self.config = config
        self.bus = Bus(on_cutoff=self._on_cutoff)
        self.transport_factory: TransportFactory = transport_factory or make_transport
        self.feeds: list[Feed] = []
        self.actors: list[ConnectionActor] = []
        self.sinks: list[Sink] = []
        self.derived: list[DerivedStream] = []
        self.simulators: dict[str, Any] = {}
        self.monitor = Monitor()
        self.metrics: MetricsServer | None = None
        # One REST client per distinct TLS/proxy setup: a feed's snapshots must be fetched
        # with the same verify/ca_file/proxy as its WebSocket, not with library defaults.
        self.http_clients: dict[tuple[object, ...], HttpClient] = {}
        self._limiters: dict[str, ConnectLimiter] = {}
        self._cutoff_tasks: set[asyncio.Task[None]] = set()
        self._feeds_sup: Supervisor | None = None
        self._sinks_sup: Supervisor | None = None
        self._feeds_task: asyncio.Task[None] | None = None
        self._sinks_task: asyncio.Task[None] | None = None
        self._stop_requested = asyncio.Event()
        self._started = False
        self._stopped = False
        self._start_error: BaseException | None = None
        # The one shutdown; every stop() caller waits for it (see stop()).
        self._stopping: asyncio.Task[None] | None = None
        self.failure: BaseException | None = None

    # --- consuming ---------------------------------------------------------------------------

    def stream(
        self,
        types: type[Record] | str | Iterable[type[Record] | str] | None = None,
        exchange: str = "*",
        symbol: str = "*",
        *,
        maxsize: int = 1024,
        policy: Policy | str = Policy.BLOCK,
        name: str | None = None,
        block_timeout: float | None = DEFAULT_BLOCK_TIMEOUT,
    ) -> Subscription:
        """Subscribe to records: ``async for rec in app.stream(Trade, symbol="BTC-*")``.

        The subscription has its own bounded queue and overflow ``policy`` (``block`` makes
        the feed wait for you: lossless; ``drop_oldest``/``conflate``/``disconnect`` never
        slow the feed). Subscribe before ``start()`` to see every record from the first one.
        Use it as ``async with`` (or call ``close()``) to unsubscribe when you are done.

        ``block_timeout`` (``block`` only): a consumer that has not taken a record for this
        long while the feed waits on it is cut off (a ``disconnected`` status record names
        it), so a consumer that crashed without closing its subscription cannot stall the
        feeds forever. ``None`` waits forever.
        """
        return self.bus.subscribe(
            types,
            exchange=exchange,
            symbol=symbol,
            maxsize=maxsize,
            policy=policy,
            name=name,
            block_timeout=block_timeout if Policy(policy) is Policy.BLOCK else None,
        )

    # --- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> App:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start the simulator (if configured), the sinks and the feeds. Raises ConfigError
        when a feed names an unknown plugin, channel or symbol.

        A failed start is final: what was started is stopped again, the bus is closed (so
        subscribers end instead of waiting forever) and every later ``start()``/``run()``
        raises the same error. Create a new App to try again."""
        if self._start_error is not None:
            raise self._start_error
        if self._started:
            return
        self._started = True
        try:
            problems = check_plugins(self.config)
            if problems:
                raise ConfigError(problems)
            self._warn_insecure()
            for sim_cfg in self.config.simulators:
                await self._start_simulator(sim_cfg)
            self._build_sinks()
            self._build_feeds()
            if self.config.metrics is not None:
                self.metrics = MetricsServer(
                    self, self.config.metrics.host, self.config.metrics.port
                )
                await self.metrics.start()
                log.info("metrics endpoint", url=self.metrics.url)
        except BaseException as exc:
            # Without this, a second start() returned at once and run() "ran" an App that
            # had nothing running, silently, until its duration ended.
            self._start_error = exc
            self._stopped = True
            self.bus.close()
            await self._close_resources()
            raise
        assert self._sinks_sup is not None and self._feeds_sup is not None
        self._sinks_task = asyncio.create_task(self._supervise(self._sinks_sup), name="sinks")
        self._feeds_task = asyncio.create_task(self._supervise(self._feeds_sup), name="feeds")
        log.info(
            "started",
            feeds=len(self.feeds),
            connections=len(self.actors),
            sinks=len(self.sinks),
        )

    async def run(self, duration: float | None = None) -> None:
        """Start, run until ``duration`` elapses, :meth:`request_stop` is called or a
        supervisor escalates, then stop in order. Raises EscalationError in the last case."""
        await self.start()
        try:
            waiter = asyncio.create_task(self._stop_requested.wait())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter, timeout=duration)
        finally:
            await self.stop()
        if self.failure is not None:
            raise self.failure

    def request_stop(self) -> None:
        """Ask :meth:`run` to shut down (safe from signal handlers)."""
        self._stop_requested.set()

    async def stop(self) -> None:
        """Ordered shutdown: feeds, then bus drain, then sinks flush. Idempotent: every
        caller returns once the shutdown is complete (a second caller, e.g. ``run()`` after
        a ``stop()`` from another task, waits for the first one's shutdown instead of
        returning while sinks are still flushing). Cancelling a caller does not cancel the
        shutdown."""
        if not self._started:
            return
        if self._stopping is None:
            if self._stopped:  # a failed start already cleaned up
                return
            self._stopped = True
            self._stopping = asyncio.create_task(self._shutdown(), name="app-stop")
        await asyncio.shield(self._stopping)

    async def _shutdown(self) -> None:
        self._stop_requested.set()
        if self._feeds_sup is not None:
            await self._feeds_sup.stop()
        await _finish(self._feeds_task)
        if self._cutoff_tasks:
            await asyncio.wait(self._cutoff_tasks, timeout=1.0)
        self.bus.close()
        if self._sinks_task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._sinks_task), SINK_DRAIN_TIMEOUT)
            except TimeoutError:
                log.error("sinks did not drain in time; cancelling", timeout=SINK_DRAIN_TIMEOUT)
        if self._sinks_sup is not None:
            await self._sinks_sup.stop()
        await _finish(self._sinks_task)
        await self._close_resources()
        log.info("stopped")

    # --- building ----------------------------------------------------------------------------

    async def _start_simulator(self, cfg: SimulatorConfig) -> None:
        from streamkit.simulator.factory import make_simulator

        try:
            sim = make_simulator(
                cfg.exchange, host=cfg.host, port=cfg.port, rate=cfg.rate, **cfg.options
            )
        except TypeError as exc:
            raise ConfigError([("simulator.options", str(exc))]) from None
        await sim.start()
        self.simulators[cfg.exchange] = sim
        log.info("simulator started", exchange=cfg.exchange, url=sim.ws_url, rest_url=sim.rest_url)

    @property
    def simulator(self) -> Any:
        """The (first) running simulator, for tests and fault injection."""
        return next(iter(self.simulators.values()), None)

    def _feed_urls(self, cfg: FeedConfig) -> tuple[str | None, str | None]:
        url, rest_url = cfg.url, cfg.rest_url
        sim = self.simulators.get(cfg.exchange)
        if sim is not None:
            if url == "simulator":
                url = sim.ws_url
                rest_url = rest_url or "simulator"
            if rest_url == "simulator":
                rest_url = sim.rest_url
        return url, rest_url

    def _build_feeds(self) -> None:
        sup = self.config.supervision
        children: list[ChildSpec] = []
        for cfg in self.config.feeds:
            http = self._http_client(cfg)
            url, rest_url = self._feed_urls(cfg)
            feed = plugins.load(cfg.exchange)(cfg, url=url, rest_url=rest_url)
            self.feeds.append(feed)
            limits = feed.limits
            limiter = self._limiters.setdefault(
                feed.id, ConnectLimiter(limits.max_connects, limits.connect_window)
            )
            for plan in feed.plan():
                actor = ConnectionActor(
                    feed,
                    plan,
                    self.bus,
                    transport_factory=self.transport_factory,
                    http_fetch=http.fetch,
                    connect_limiter=limiter,
                )
                self.actors.append(actor)
                children.append(ChildSpec(actor.name, actor.run, restart=Restart.PERMANENT))
        self._feeds_sup = Supervisor(
            "feeds", children, max_restarts=sup.max_restarts, within=sup.within
        )

    def _http_client(self, cfg: FeedConfig) -> HttpClient:
        t = cfg.transport
        key = (t.verify, t.ca_file, t.proxy, t.impersonate)
        client = self.http_clients.get(key)
        if client is None:
            client = self.http_clients[key] = HttpClient(options=t)
        return client

    def _build_sinks(self) -> None:
        sup = self.config.supervision
        children = []
        for i, cfg in enumerate(self.config.sinks):
            sink = build_sink(f"sink[{i}]:{cfg.__struct_config__.tag}", cfg)
            self.sinks.append(sink)
            children.append(self._sink_child(sink, cfg))
        # Derived streams (NBBO, book snapshots) consume and publish like any consumer;
        # they live here so that they, too, drain after the bus closes.
        for stream in build_derived(self.config.derived, self.bus):
            self.derived.append(stream)
            children.append(_derived_child(stream))
        # The monitor follows status records for metrics and the live view; drop_oldest so
        # it can never slow a feed down.
        status_sub = self.bus.subscribe(
            Status, maxsize=10_000, policy=Policy.DROP_OLDEST, name="monitor"
        )
        children.append(
            ChildSpec("monitor", lambda: self.monitor.run(status_sub), Restart.TRANSIENT)
        )
        self._sinks_sup = Supervisor(
            "sinks", children, max_restarts=sup.max_restarts, within=sup.within
        )

    def _sink_child(self, sink: Sink, cfg: SinkConfig) -> ChildSpec:
        # Subscribe now, not when the task first runs, so the sink sees the very first record.
        first = [subscribe_sink(self.bus, sink.name, cfg)]

        async def run_sink() -> None:
            if not first and self.bus.closed:
                # Failed after shutdown began: there is nothing left to drain, and a restart
                # would only fail to subscribe and count toward the restart intensity.
                return
            subscription = first.pop() if first else subscribe_sink(self.bus, sink.name, cfg)
            try:
                await sink.run(subscription)
            finally:
                subscription.close()

        # transient: a sink that returns (its subscription ended at shutdown) is done.
        return ChildSpec(sink.name, run_sink, restart=Restart.TRANSIENT)

    async def _supervise(self, supervisor: Supervisor) -> None:
        try:
            await supervisor.run()
        except EscalationError as exc:
            log.error("supervisor escalated; shutting down", error=str(exc))
            self.failure = exc
            self._stop_requested.set()

    def _on_cutoff(self, subscription: Subscription) -> None:
        record = Status(
            exchange="streamkit",
            symbol=None,
            ts=None,
            recv_ts=time.time_ns(),
            event=StatusEvent.DISCONNECTED,
            detail=f"subscriber {subscription.name!r} cut off: {subscription.reason}",
        )
        task = asyncio.get_running_loop().create_task(self.bus.publish(record))
        # Kept until done, and awaited before the bus closes, so the record is not lost.
        self._cutoff_tasks.add(task)
        task.add_done_callback(self._cutoff_tasks.discard)
        task.add_done_callback(_ignore_result)

    def _warn_insecure(self) -> None:
        for cfg in self.config.feeds:
            if not cfg.transport.verify:
                log.warning(
                    "TLS certificate verification is OFF for this feed",
                    feed=cfg.label,
                )

    def healthy(self) -> bool:
        """True while both supervisors are running (what ``/health`` reports)."""
        return all(sup is not None and sup.running for sup in (self._feeds_sup, self._sinks_sup))

    async def _close_resources(self) -> None:
        if self.metrics is not None:
            await self.metrics.stop()
            self.metrics = None
        clients = list(self.http_clients.values())
        self.http_clients.clear()
        for client in clients:
            await client.close()
        for sim in self.simulators.values():
            await sim.stop()
        self.simulators.clear()

    # --- introspection -------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return {
            "connections": [a.stats() for a in self.actors],
            "subscribers": self.bus.stats(),
            "sinks": [{"name": s.name, "written": s.written} for s in self.sinks],
        }


def _derived_child(stream: DerivedStream) -> ChildSpec:
    # Subscribe now, not when the task first runs, so the stream sees the very first record
    # (a book snapshot stream needs the first book snapshot).
    first = [stream.subscribe()]

    async def run_derived() -> None:
        subscription = first.pop() if first else stream.subscribe()
        try:
            await stream.run(subscription)
        finally:
            subscription.close()

    # transient: a stream that returns (its subscription ended at shutdown) is done.
    return ChildSpec(stream.name, run_derived, restart=Restart.TRANSIENT)


async def _finish(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _ignore_result(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()
