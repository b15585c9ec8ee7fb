"""The ``streamkit`` command.

Exit codes: 0 success (including a clean SIGINT/SIGTERM shutdown), 1 invalid config or
input, or a config that cannot start (e.g. a port in use), 2 command-line usage error, 3 a
supervisor gave up (restart intensity exceeded).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence

import structlog

from streamkit import plugins, runtime
from streamkit.config import AppConfig, load_config
from streamkit.errors import ConfigError, EscalationError, PluginError
from streamkit.logs import configure_logging

EXIT_OK, EXIT_CONFIG, EXIT_USAGE, EXIT_ESCALATED = 0, 1, 2, 3


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except ConfigError as exc:
        _print_problems(exc)
        return EXIT_CONFIG
    except PluginError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        # stdout was closed early (``streamkit feeds | head``): not an error. Point stdout at
        # /dev/null so the interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except OSError as exc:
        # What reaches here failed to start (a simulator or metrics port already taken, an
        # unreadable file): the environment, not a bug, so one line and no traceback.
        print(f"error: cannot start: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamkit", description="Typed, supervised streaming of live market data."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the feeds and sinks of a config")
    run.add_argument("config", help="YAML config file")
    run.add_argument("--duration", type=_positive_float, help="stop after this many seconds")
    run.add_argument("--log-format", choices=["console", "json"], help="override logging.format")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    run.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        help="run the feeds in N worker processes, sharded by (exchange, symbol); "
        "see docs/scaling.md",
    )
    run.add_argument(
        "--live",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="live table of feeds (default: on when stdout is a terminal and logs are console)",
    )
    run.set_defaults(func=_cmd_run)

    validate = sub.add_parser("validate", help="check a config; print each error with its key")
    validate.add_argument("config")
    validate.set_defaults(func=_cmd_validate)

    feeds = sub.add_parser("feeds", help="list the installed feed plugins and their channels")
    feeds.set_defaults(func=_cmd_feeds)

    record = sub.add_parser("record", help="run a config and record its raw frames (zstd JSONL)")
    record.add_argument("config")
    record.add_argument("--dir", default="recordings", help="output directory")
    record.add_argument("--duration", type=_positive_float)
    record.add_argument("--rotate-mb", type=_positive_float, default=256.0)
    record.add_argument("--rotate-interval", type=_positive_float, default=3600.0)
    record.add_argument("--no-compress", action="store_true", help="plain JSON Lines")
    record.set_defaults(func=_cmd_record)

    replay = sub.add_parser(
        "replay", help="replay recorded frames through the same plugin code into sinks"
    )
    replay.add_argument("files", nargs="+", help="recording files or directories")
    pace = replay.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=_positive_float, default=1.0, help="x original pace")
    pace.add_argument("--max", action="store_true", help="as fast as possible")
    replay.add_argument("--config", help="take the sinks from this config (default: console)")
    replay.set_defaults(func=_cmd_replay)

    doctor = sub.add_parser("doctor", help="print versions; check a config and its sinks")
    doctor.add_argument("config", nargs="?", help="YAML config to check (optional)")
    doctor.set_defaults(func=_cmd_doctor)

    simulate = sub.add_parser("simulate", help="run the built-in exchange simulator")
    simulate.add_argument(
        "--exchange",
        default="binance",
        help="protocol to speak (binance, okx, kraken, coinbase_advanced, ...)",
    )
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=9000)
    simulate.add_argument(
        "--rate", type=_positive_float, default=50.0, help="messages/s per stream"
    )
    simulate.set_defaults(func=_cmd_simulate)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return value


def _print_problems(exc: ConfigError) -> None:
    print("error: invalid config", file=sys.stderr)
    for path, message in exc.problems:
        print(f"  {path}: {message}" if path else f"  {message}", file=sys.stderr)


def _load_checked(path: str) -> AppConfig:
    from streamkit.app import check_plugins

    config = load_config(path)
    problems = check_plugins(config)
    if problems:
        raise ConfigError(problems)
    return config


def _cmd_validate(args: argparse.Namespace) -> int:
    config = _load_checked(args.config)
    conns = sum(len(f.symbols) * len(f.channels) for f in config.feeds)
    print(f"ok: {len(config.feeds)} feed(s), {conns} stream(s), {len(config.sinks)} sink(s)")
    return EXIT_OK


def _cmd_feeds(args: argparse.Namespace) -> int:
    names = plugins.available()
    if not names:
        print("no feed plugins installed")
        return EXIT_OK
    width = max(len(name) for name in names)
    for name in names:
        cls = plugins.load(name)
        print(f"{name:<{width}}  {', '.join(sorted(cls.channels))}")
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    config = _load_checked(args.config)
    log_format = args.log_format or config.logging.format
    configure_logging(args.log_level or config.logging.level, log_format)
    if args.workers is not None:
        from streamkit.workers import run_workers

        # The parent only supervises worker processes; each worker runs an App.
        return run_workers(config, args.config, args.workers, args.duration)
    live = args.live if args.live is not None else sys.stdout.isatty() and log_format == "console"
    from streamkit.app import App

    app = App(config)
    try:
        runtime.run(_run_app(app, args.duration, live))
    except EscalationError as exc:
        structlog.get_logger("streamkit").error("giving up", error=str(exc))
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ESCALATED
    return EXIT_OK


async def _run_app(app: object, duration: float | None, live: bool = False) -> None:
    from streamkit.app import App

    assert isinstance(app, App)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, app.request_stop)
    view: asyncio.Task[None] | None = None
    if live:
        from streamkit.live import LiveView

        view = asyncio.create_task(LiveView(app).run())
    try:
        await app.run(duration)
    finally:
        if view is not None:
            view.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await view


def _cmd_record(args: argparse.Namespace) -> int:
    config = _load_checked(args.config)
    configure_logging(config.logging.level, config.logging.format)
    from streamkit.record import record

    def on_start(app: object) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, app.request_stop)  # type: ignore[attr-defined]

    recorder = runtime.run(
        record(
            config,
            args.dir,
            duration=args.duration,
            rotate_bytes=int(args.rotate_mb * 2**20),
            rotate_interval=args.rotate_interval,
            compression="none" if args.no_compress else "zstd",
            on_start=on_start,
        )
    )
    print(f"recorded {recorder.frames} frames into {len(recorder.files)} file(s) under {args.dir}")
    return EXIT_OK


def _cmd_replay(args: argparse.Namespace) -> int:
    from streamkit.config import ConsoleSinkConfig, SinkConfig
    from streamkit.replay import run_replay

    configure_logging("warning")
    sinks: list[SinkConfig] = [ConsoleSinkConfig()]
    if args.config:
        sinks = list(load_config(args.config).sinks) or sinks
    result = runtime.run(run_replay(args.files, sinks, speed=None if args.max else args.speed))
    print(f"replayed {result['records']} records", file=sys.stderr)
    return EXIT_OK


def _cmd_doctor(args: argparse.Namespace) -> int:
    from streamkit import doctor

    checks = doctor.environment()
    if args.config:
        checks += doctor.config_checks(args.config)
    return doctor.report(checks)


def _cmd_simulate(args: argparse.Namespace) -> int:
    configure_logging("info")
    from streamkit.simulator import run_simulator

    async def serve() -> None:
        task = asyncio.create_task(
            run_simulator(args.host, args.port, args.rate, exchange=args.exchange)
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    runtime.run(serve())
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
