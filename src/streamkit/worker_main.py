"""The worker process of ``streamkit run --workers N``: ``python -m streamkit.worker_main``.

Started only by :mod:`streamkit.worker_pool`; the protocol between the two:

- **stdin**: the first line is the worker's complete config as JSON (what
  :func:`streamkit.workers.shard_config` derived; validated again here). The parent keeps
  stdin open afterwards as a *lifeline*: end-of-file means the parent is gone (even if it was
  SIGKILLed), and the worker shuts down cleanly instead of living on as an orphan.
- **signals**: SIGTERM and SIGINT stop the worker in order (feeds, drain, sinks flush), like
  ``streamkit run``.
- **report fd** (``--report-fd``): about once per ``--report-interval`` seconds, one
  :class:`WorkerReport` as a JSON line. Writes never block: if the parent does not read,
  reports are skipped.
- **stdout/stderr**: inherited from the parent (console sink output, structlog lines tagged
  ``worker=<index>``).
- **exit code**: 0 after a clean stop, 1 invalid config (or plugin), 3 when the worker's own
  supervisor escalated (the parent then restarts the worker, within its restart intensity).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections import Counter
from collections.abc import Callable, Sequence

import msgspec
import structlog

from streamkit.config import validate_data
from streamkit.errors import ConfigError, EscalationError, PluginError
from streamkit.logs import configure_logging

EXIT_OK, EXIT_CONFIG, EXIT_ESCALATED = 0, 1, 3

log = structlog.get_logger("streamkit.worker")


class WorkerReport(msgspec.Struct, frozen=True, kw_only=True):
    """A worker's view of itself, as the parent aggregates it.

    started: the App started (sinks and feeds running).
    healthy: both of its supervisors are running (what its ``/health`` says).
    connections: connection count by state (``streaming``, ``backing_off``, ...).
    messages / records: frames received and records published by all its connections,
        since this worker process started.
    sinks: records written (acknowledged, for broker sinks) per sink name.
    """

    index: int
    pid: int
    started: bool
    healthy: bool
    connections: dict[str, int]
    messages: int
    records: int
    sinks: dict[str, int]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streamkit.worker_main")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--report-fd", type=int, default=None)
    parser.add_argument("--report-interval", type=float, default=1.0)
    parser.add_argument("--source", default="", help="the parent's config path (for logs)")
    args = parser.parse_args(argv)

    line = sys.stdin.buffer.readline()
    try:
        config = validate_data(msgspec.json.decode(line))
    except (ConfigError, msgspec.DecodeError) as exc:
        print(f"worker {args.index}: invalid config on stdin: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(config.logging.level, config.logging.format)
    structlog.contextvars.bind_contextvars(worker=args.index)

    from streamkit.app import App

    app = App(config)
    try:
        asyncio.run(_run(app, args.index, args.report_fd, args.report_interval))
    except EscalationError as exc:
        log.error("worker giving up", error=str(exc))
        return EXIT_ESCALATED
    except (ConfigError, PluginError) as exc:
        log.error("worker config rejected", error=str(exc))
        return EXIT_CONFIG
    return EXIT_OK


async def _run(app: object, index: int, report_fd: int | None, interval: float) -> None:
    from streamkit.app import App

    assert isinstance(app, App)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, app.request_stop)
    lifeline, watcher = await _watch_lifeline(app.request_stop)
    reporter = (
        asyncio.create_task(_report_loop(app, index, report_fd, interval), name="report")
        if report_fd is not None
        else None
    )
    try:
        await app.run()
    finally:
        if reporter is not None:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
            _write_report(report_fd, _report(app, index))  # the final counts
        watcher.disarm()
        lifeline.close()


class _Lifeline(asyncio.Protocol):
    """Reads stdin to its end; the end (the parent closed it or died) asks for a stop."""

    def __init__(self, on_end: Callable[[], None]) -> None:
        self._on_end: Callable[[], None] | None = on_end

    def data_received(self, data: bytes) -> None:
        pass  # nothing more is expected after the config line

    def eof_received(self) -> bool | None:
        self._end("end of stdin")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._end("stdin closed")

    def disarm(self) -> None:
        """Our own shutdown closes the pipe: that is no news from the parent."""
        self._on_end = None

    def _end(self, why: str) -> None:
        on_end = self._on_end
        if on_end is not None:  # once: EOF is followed by connection_lost
            self._on_end = None
            log.info("parent gone; stopping", reason=why)
            on_end()


async def _watch_lifeline(on_end: Callable[[], None]) -> tuple[asyncio.BaseTransport, _Lifeline]:
    loop = asyncio.get_running_loop()
    # A dup, so that closing the transport does not close fd 0 under anyone else.
    pipe = os.fdopen(os.dup(sys.stdin.fileno()), "rb", buffering=0)
    protocol = _Lifeline(on_end)
    transport, _ = await loop.connect_read_pipe(lambda: protocol, pipe)
    return transport, protocol


async def _report_loop(app: object, index: int, fd: int, interval: float) -> None:
    os.set_blocking(fd, False)
    while True:
        _write_report(fd, _report(app, index))
        await asyncio.sleep(interval)


def _report(app: object, index: int) -> WorkerReport:
    from streamkit.app import App

    assert isinstance(app, App)
    states = Counter(str(actor.state) for actor in app.actors)
    sinks: dict[str, int] = {sink.name: sink.written for sink in app.sinks}
    return WorkerReport(
        index=index,
        pid=os.getpid(),
        started=bool(app.actors) and app.healthy(),
        healthy=app.healthy(),
        connections=dict(states),
        messages=sum(actor.counters.messages for actor in app.actors),
        records=sum(actor.counters.records for actor in app.actors),
        sinks=sinks,
    )


def _write_report(fd: int | None, report: WorkerReport) -> None:
    if fd is None:
        return
    # A report is far below PIPE_BUF, so a write is all or nothing; a full pipe (the parent
    # is not reading) or a dead parent just skips this report.
    with contextlib.suppress(BlockingIOError, BrokenPipeError, OSError):
        os.write(fd, msgspec.json.encode(report) + b"\n")


if __name__ == "__main__":
    sys.exit(main())
