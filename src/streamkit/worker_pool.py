"""The parent of ``streamkit run --workers N``: spawns the worker processes, restarts the ones
that die, forwards shutdown, and aggregates their health.

Workers are subprocesses running ``python -m streamkit.worker_main`` (protocol in
:mod:`streamkit.worker_main`): the config comes in on stdin (which then stays open as the
worker's lifeline), health reports come back on a dedicated pipe, stdout/stderr are shared.
Each worker is in its own process group, so a terminal's Ctrl-C reaches the parent only and
the parent alone decides the shutdown order.

Supervision follows :mod:`streamkit.supervisor` (one_for_one, permanent children):

- a worker that exits while the pool is not stopping -- crash, SIGKILL, its own supervisor
  escalating (exit 3), even exit 0 -- is logged with its exit code or signal and started
  again at once with the same config;
- restart intensity: more than ``max_restarts`` restarts (all workers together) within
  ``within`` seconds escalates: every worker is stopped and :meth:`WorkerPool.run` returns
  exit code 3;
- :meth:`WorkerPool.request_stop` (SIGINT/SIGTERM of the parent, or ``duration``) sends
  SIGTERM to every worker and waits up to ``shutdown_timeout`` for each to drain its queues
  and flush its sinks; a worker still running then is SIGKILLed. ``run`` returns 0 when every
  worker exited with 0, 3 otherwise.

Health: :meth:`WorkerPool.health` gives, per worker, its state, pid, restart count, last exit
code and latest :class:`~streamkit.worker_main.WorkerReport` (connections by state, records
published, records written per sink). The pool logs each start, readiness, exit and
restart, and a summary every ``health_log_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import structlog

from streamkit.config import AppConfig
from streamkit.worker_main import WorkerReport
from streamkit.workers import WorkerConfig, shard_configs

log = structlog.get_logger("streamkit.workers")

EXIT_OK, EXIT_FAILED = 0, 3

DEFAULT_SHUTDOWN_TIMEOUT = 60.0
"""Seconds a worker gets to stop after SIGTERM: above the App's own sink drain timeout (30 s)
so that a worker flushing a broker sink is not killed half-way."""


class WorkerState(enum.StrEnum):
    STARTING = "starting"  # process spawned, App not started yet
    RUNNING = "running"  # its App reported started and healthy
    EXITED = "exited"  # died; about to be restarted (or the pool escalates)
    STOPPING = "stopping"  # SIGTERM sent
    STOPPED = "stopped"


@dataclass
class WorkerHealth:
    """One worker as the parent sees it."""

    index: int
    state: WorkerState
    pid: int | None
    restarts: int
    last_exit: int | None
    """Exit code of the previous process of this worker (negative: killed by that signal)."""
    report: WorkerReport | None
    """The latest report of the current process (None until it sent one)."""


@dataclass
class _Worker:
    spec: WorkerConfig
    payload: bytes
    state: WorkerState = WorkerState.STARTING
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    last_exit: int | None = None
    report: WorkerReport | None = None
    reader: asyncio.Task[None] | None = field(default=None, repr=False)


_report_decoder = msgspec.json.Decoder(WorkerReport)


class WorkerPool:
    """Runs one process per :class:`~streamkit.workers.WorkerConfig` until stopped.

    ``command`` is the interpreter and arguments that start a worker (default: this Python,
    ``-m streamkit.worker_main``); the pool appends ``--index``, ``--workers``,
    ``--report-fd`` and friends.
    """

    def __init__(
        self,
        workers: Sequence[WorkerConfig],
        *,
        max_restarts: int = 10,
        within: float = 60.0,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        report_interval: float = 1.0,
        health_log_interval: float | None = 60.0,
        source: str = "",
        command: Sequence[str] = (sys.executable, "-m", "streamkit.worker_main"),
    ) -> None:
        if not workers:
            raise ValueError("a worker pool needs at least one worker")
        self._workers = [
            _Worker(spec, msgspec.json.encode(msgspec.to_builtins(spec.config)) + b"\n")
            for spec in workers
        ]
        self.max_restarts = max_restarts
        self.within = within
        self.shutdown_timeout = shutdown_timeout
        self.report_interval = report_interval
        self.health_log_interval = health_log_interval
        self.source = source
        self.command = tuple(command)
        self._restart_times: deque[float] = deque()
        self._stop = asyncio.Event()
        self._escalated = False

    # --- control -------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop every worker and make :meth:`run` return (safe from signal handlers)."""
        if not self._stop.is_set():
            log.info("stopping workers", workers=len(self._workers))
        self._stop.set()

    async def run(self) -> int:
        """Start the workers, supervise them until :meth:`request_stop` or an escalation,
        stop them; returns the exit code (0 only if every worker exited cleanly). Cancelling
        ``run`` SIGKILLs the workers (no orphans) and propagates."""
        keepers = [
            asyncio.create_task(self._keep(w), name=f"worker-{w.spec.index}") for w in self._workers
        ]
        summary = (
            asyncio.create_task(self._log_health(self.health_log_interval), name="health-log")
            if self.health_log_interval
            else None
        )
        try:
            await asyncio.gather(*keepers)
        finally:
            for task in keepers:
                task.cancel()
            if summary is not None:
                summary.cancel()
            await asyncio.gather(*keepers, *(t for t in [summary] if t), return_exceptions=True)
        codes = {w.spec.index: w.last_exit for w in self._workers}
        clean = not self._escalated and all(code == 0 for code in codes.values())
        log.info("workers stopped", exit_codes=codes, clean=clean)
        return EXIT_OK if clean else EXIT_FAILED

    def health(self) -> list[WorkerHealth]:
        """Each worker's state, pid, restarts, last exit code and latest report."""
        return [
            WorkerHealth(
                index=w.spec.index,
                state=w.state,
                pid=w.process.pid if w.process is not None else None,
                restarts=w.restarts,
                last_exit=w.last_exit,
                report=w.report,
            )
            for w in self._workers
        ]

    @property
    def escalated(self) -> bool:
        return self._escalated

    # --- one worker ------------------------------------------------------------------------

    async def _keep(self, w: _Worker) -> None:
        """Run worker ``w`` until the pool stops; if cancelled, SIGKILL its process."""
        try:
            await self._supervise(w)
        except BaseException:
            if w.process is not None and w.process.returncode is None:
                _kill(w.process)
            raise

    async def _supervise(self, w: _Worker) -> None:
        """Spawn, wait, restart within intensity, until the pool stops."""
        while not self._stop.is_set():
            process = await self._spawn(w)
            exited = asyncio.ensure_future(process.wait())
            stopping = asyncio.ensure_future(self._stop.wait())
            try:
                await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
            if not exited.done():
                exited.cancel()
                await self._terminate(w, process)
                return
            code = exited.result()
            await self._finish_reader(w)
            w.last_exit = code
            if self._stop.is_set():
                w.state = WorkerState.STOPPED
                log.info("worker stopped", worker=w.spec.index, pid=process.pid, exit_code=code)
                return
            w.state = WorkerState.EXITED
            log.error(
                "worker died",
                worker=w.spec.index,
                pid=process.pid,
                exit_code=code,
                cause=_describe_exit(code),
            )
            if self._intensity_exceeded():
                self._escalated = True
                log.error(
                    "restart intensity exceeded; stopping all workers",
                    worker=w.spec.index,
                    max_restarts=self.max_restarts,
                    within=self.within,
                )
                self.request_stop()
                return
            w.restarts += 1
            log.warning("restarting worker", worker=w.spec.index, restarts=w.restarts)

    async def _spawn(self, w: _Worker) -> asyncio.subprocess.Process:
        read_fd, write_fd = os.pipe()
        try:
            process = await asyncio.create_subprocess_exec(
                *self.command,
                "--index",
                str(w.spec.index),
                "--workers",
                str(w.spec.workers),
                "--report-fd",
                str(write_fd),
                "--report-interval",
                str(self.report_interval),
                "--source",
                self.source,
                stdin=asyncio.subprocess.PIPE,
                pass_fds=(write_fd,),
                # Own process group: Ctrl-C in a terminal goes to the parent, which stops
                # the workers itself; the stdin lifeline covers a parent that dies.
                process_group=0,
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)  # the child has its copy; ours would hide the child's EOF
        w.process = process
        w.report = None
        w.state = WorkerState.STARTING
        w.reader = asyncio.create_task(self._read_reports(w, read_fd), name="worker-reports")
        assert process.stdin is not None
        # stdin stays open: it is the worker's lifeline (EOF = parent gone).
        process.stdin.write(w.payload)
        with contextlib.suppress(ConnectionError):
            await process.stdin.drain()
        log.info(
            "worker started",
            worker=w.spec.index,
            pid=process.pid,
            feeds=[f"{f.label}:{len(f.symbols)}" for f in w.spec.config.feeds],
            restarts=w.restarts,
        )
        return process

    async def _read_reports(self, w: _Worker, fd: int) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 20)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
        )
        try:
            while line := await reader.readline():
                try:
                    report = _report_decoder.decode(line)
                except msgspec.DecodeError:
                    log.warning("unreadable worker report", worker=w.spec.index, line=line[:200])
                    continue
                w.report = report
                if report.started and w.state is WorkerState.STARTING:
                    w.state = WorkerState.RUNNING
                    log.info("worker ready", worker=w.spec.index, pid=report.pid)
        finally:
            transport.close()

    async def _finish_reader(self, w: _Worker) -> None:
        """Let the reader take the process's last report (the pipe ends with the process)."""
        if w.reader is None:
            return
        try:
            await asyncio.wait_for(w.reader, timeout=5.0)
        except TimeoutError:
            log.warning("worker report pipe still open after exit", worker=w.spec.index)
        w.reader = None

    async def _terminate(self, w: _Worker, process: asyncio.subprocess.Process) -> None:
        """SIGTERM, wait up to ``shutdown_timeout``, SIGKILL; record the exit code."""
        w.state = WorkerState.STOPPING
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(process.wait(), self.shutdown_timeout)
        except TimeoutError:
            log.error(
                "worker did not stop in time; killing it",
                worker=w.spec.index,
                pid=process.pid,
                timeout=self.shutdown_timeout,
            )
            _kill(process)
            code = await process.wait()
        await self._finish_reader(w)
        w.last_exit = code
        w.state = WorkerState.STOPPED
        log.info(
            "worker stopped",
            worker=w.spec.index,
            pid=process.pid,
            exit_code=code,
            cause=_describe_exit(code),
        )

    def _intensity_exceeded(self) -> bool:
        """Record one restart; True if that makes more than max_restarts within the window
        (the rule of :class:`streamkit.supervisor.Supervisor`)."""
        now = time.monotonic()
        self._restart_times.append(now)
        while self._restart_times and self._restart_times[0] <= now - self.within:
            self._restart_times.popleft()
        return len(self._restart_times) > self.max_restarts

    async def _log_health(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            log.info("workers health", workers=[_summary(h) for h in self.health()])


def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.kill()


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return {0: "exited cleanly", 1: "invalid config", 3: "its supervisor gave up"}.get(
        code, f"exit code {code}"
    )


def _summary(h: WorkerHealth) -> dict[str, Any]:
    out: dict[str, Any] = {"worker": h.index, "state": str(h.state), "pid": h.pid}
    out["restarts"] = h.restarts
    if h.report is not None:
        out["connections"] = h.report.connections
        out["records"] = h.report.records
    return out


# --- the entry point the CLI calls --------------------------------------------------------


def run_workers(
    config: AppConfig, config_path: str, workers: int, duration: float | None = None
) -> int:
    """``streamkit run CONFIG --workers N``: start the config's simulators (here, in the
    parent, so that every worker talks to the same simulated venue), shard the config over
    ``workers`` processes, supervise them until SIGINT/SIGTERM or ``duration`` seconds, and
    return the exit code (0 clean; 3 escalation or a worker that did not stop cleanly).
    Raises :class:`~streamkit.errors.ConfigError` when the config cannot be sharded. Logging
    must be configured by the caller."""
    return asyncio.run(_run_workers(config, config_path, workers, duration))


async def _run_workers(
    config: AppConfig, config_path: str, workers: int, duration: float | None
) -> int:
    from streamkit.simulator.factory import make_simulator

    simulators: list[Any] = []
    try:
        urls: dict[str, tuple[str, str]] = {}
        for sim_cfg in config.simulators:
            sim = make_simulator(
                sim_cfg.exchange, host=sim_cfg.host, port=sim_cfg.port, rate=sim_cfg.rate
            )
            await sim.start()
            simulators.append(sim)
            urls[sim_cfg.exchange] = (sim.ws_url, sim.rest_url)
            log.info("simulator started", exchange=sim_cfg.exchange, url=sim.ws_url)
        shards = shard_configs(config, workers, simulator_urls=urls)
        if len(shards) < workers:
            log.warning(
                "some workers got no symbol and are not started",
                requested=workers,
                started=[s.index for s in shards],
            )
        pool = WorkerPool(
            shards,
            max_restarts=config.supervision.max_restarts,
            within=config.supervision.within,
            source=config_path,
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, pool.request_stop)
        timer = loop.call_later(duration, pool.request_stop) if duration else None
        try:
            return await pool.run()
        finally:
            if timer is not None:
                timer.cancel()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
    finally:
        for sim in simulators:
            await sim.stop()
