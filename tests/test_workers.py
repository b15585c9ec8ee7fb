"""Multi-process sharding: the assignment rule, derived worker configs, and the worker pool
against the simulator and a real NATS JetStream (skipped, with the reason, when NATS is not
reachable)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
import yaml
from brokers import NATS_URL, nats_or_skip, unique

from streamkit.config import (
    AppConfig,
    ConsoleSinkConfig,
    FeedConfig,
    JsonlSinkConfig,
    MetricsConfig,
    NatsSinkConfig,
    validate_data,
)
from streamkit.errors import ConfigError
from streamkit.simulator import BinanceSimulator
from streamkit.worker_pool import EXIT_FAILED, WorkerPool, WorkerState
from streamkit.workers import (
    WorkerConfig,
    assign,
    shard_configs,
    worker_for,
    worker_label,
    worker_path,
)


def _config(feeds: list[FeedConfig], **kw: object) -> AppConfig:
    return msgspec.structs.replace(AppConfig(feeds=feeds), **kw)


def _feed(exchange: str, symbols: list[str], channels: list[str], **kw: object) -> FeedConfig:
    return FeedConfig(exchange=exchange, symbols=symbols, channels=channels, **kw)  # type: ignore[arg-type]


SYMBOLS = [f"S{i:04d}-USDT" for i in range(1000)]


# --- assignment --------------------------------------------------------------------------


def test_assignment_is_deterministic_and_independent_of_symbol_order() -> None:
    forward = {s: worker_for("binance", s, 4) for s in SYMBOLS}
    backward = {s: worker_for("binance", s, 4) for s in reversed(SYMBOLS)}
    assert forward == backward
    # Pinned values: the rule must not change between releases (it decides which process
    # streams what, and which per-worker files and ports exist).
    assert [worker_for("binance", s, 2) for s in ("NKN-USDT", "BTC-USDT", "SOL-USDT")] == [0, 1, 1]
    # a different exchange is a different key
    assert [worker_for("okx", s, 8) for s in SYMBOLS[:50]] != [
        worker_for("binance", s, 8) for s in SYMBOLS[:50]
    ]


def test_assignment_is_balanced_for_many_symbols() -> None:
    for workers in (2, 3, 4):
        counts = [0] * workers
        for symbol in SYMBOLS:
            counts[worker_for("binance", symbol, workers)] += 1
        fair = len(SYMBOLS) / workers
        assert all(0.85 * fair <= c <= 1.15 * fair for c in counts), counts


def test_adding_a_symbol_or_a_worker_moves_nothing_else() -> None:
    before = {s: worker_for("kraken", s, 3) for s in SYMBOLS}
    with_new = {s: worker_for("kraken", s, 3) for s in [*SYMBOLS, "NEW-USD"]}
    assert {s: with_new[s] for s in SYMBOLS} == before
    # 3 -> 4 workers: a symbol either stays or moves to the new worker, never between old ones
    grown = {s: worker_for("kraken", s, 4) for s in SYMBOLS}
    moved = [s for s in SYMBOLS if grown[s] != before[s]]
    assert all(grown[s] == 3 for s in moved)
    assert 0 < len(moved) < len(SYMBOLS) / 2


def test_a_symbols_channels_and_feeds_stay_together() -> None:
    config = _config(
        [
            _feed("binance", SYMBOLS[:40], ["trades", "bbo"], name="fast"),
            _feed("binance", list(reversed(SYMBOLS[:40])), ["l2_book"], name="books"),
            _feed("okx", ["BTC-USDT"], ["trades"]),
        ]
    )
    shards = assign(config, 3)
    seen: dict[tuple[str, str], int] = {}
    for index, feeds in enumerate(shards):
        for feed in feeds:
            original = next(f for f in config.feeds if f.label == feed.label)
            assert feed.channels == original.channels  # never split a symbol's channels
            for symbol in feed.symbols:
                assert seen.setdefault((feed.exchange, symbol), index) == index
    # every symbol of every feed is somewhere, once per feed
    for original in config.feeds:
        got = [s for feeds in shards for f in feeds if f.label == original.label for s in f.symbols]
        assert sorted(got) == sorted(original.symbols)
    # the one-symbol okx feed lands only on the worker its symbol hashes to
    okx_workers = [i for i, feeds in enumerate(shards) if any(f.exchange == "okx" for f in feeds)]
    assert okx_workers == [worker_for("okx", "BTC-USDT", 3)]


# --- derived worker configs ----------------------------------------------------------------


def test_worker_configs_rename_feeds_split_files_offset_ports_and_point_at_the_simulator() -> None:
    config = _config(
        [_feed("binance", SYMBOLS[:20], ["trades"], url="simulator")],
        sinks=[
            JsonlSinkConfig(path="out/md.jsonl"),
            ConsoleSinkConfig(),
            NatsSinkConfig(subject="md.{type}.{exchange}.{symbol}"),
        ],
        metrics=MetricsConfig(port=9500),
    )
    urls = {"binance": ("ws://127.0.0.1:7001/stream", "http://127.0.0.1:7001")}
    workers = shard_configs(config, 2, simulator_urls=urls)
    assert [w.index for w in workers] == [0, 1]
    for w in workers:
        cfg = w.config
        assert cfg.simulator is None
        (feed,) = cfg.feeds
        assert feed.name == f"binance@w{w.index}"
        assert (feed.url, feed.rest_url) == urls["binance"]
        assert all(worker_for("binance", s, 2) == w.index for s in feed.symbols)
        jsonl, console, nats = cfg.sinks
        assert isinstance(jsonl, JsonlSinkConfig) and jsonl.path == f"out/md.w{w.index}.jsonl"
        assert console == config.sinks[1] and nats == config.sinks[2]
        assert cfg.metrics is not None and cfg.metrics.port == 9500 + w.index
        # exactly what the worker process decodes from its stdin line
        assert validate_data(json.loads(msgspec.json.encode(cfg))) == cfg


def test_worker_file_names_and_labels() -> None:
    assert worker_path("out/demo.jsonl", 1) == "out/demo.w1.jsonl"
    assert worker_path("/data/md.jsonl.zst", 0) == "/data/md.w0.jsonl.zst"
    assert worker_path("records", 2) == "records.w2"
    assert worker_label("binance", 3) == "binance@w3"


def test_workers_without_symbols_are_not_started_and_bad_counts_are_refused() -> None:
    config = _config([_feed("binance", ["BTC-USDT"], ["trades"])])
    (only,) = shard_configs(config, 4)
    assert only.index == worker_for("binance", "BTC-USDT", 4)
    with pytest.raises(ConfigError, match="at least 1"):
        shard_configs(config, 0)
    with pytest.raises(ConfigError) as err:
        shard_configs(
            _config(
                [_feed("binance", SYMBOLS[:50], ["trades"])], metrics=MetricsConfig(port=65535)
            ),
            2,
        )
    assert err.value.problems[0][0] == "metrics.port"
    with pytest.raises(ConfigError, match="simulator"):
        shard_configs(_config([_feed("binance", ["BTC-USDT"], ["trades"], url="simulator")]), 2)


# --- the pool ------------------------------------------------------------------------------


async def test_a_worker_that_keeps_failing_escalates_and_the_pool_exits_non_zero() -> None:
    # An exchange no plugin provides: the worker's App refuses it and the process exits 1.
    bad = WorkerConfig(index=0, workers=1, config=_config([_feed("nope", ["X-Y"], ["trades"])]))
    pool = WorkerPool([bad], max_restarts=1, within=60.0, health_log_interval=None)
    code = await asyncio.wait_for(pool.run(), 60)
    assert code == EXIT_FAILED and pool.escalated
    (health,) = pool.health()
    assert health.restarts == 1 and health.last_exit == 1
    assert health.state is WorkerState.EXITED


# --- two worker processes into NATS ---------------------------------------------------------

DRIVER = """
import sys
from streamkit.config import load_config
from streamkit.logs import configure_logging
from streamkit.workers import run_workers
configure_logging("info", "json")
sys.exit(run_workers(load_config(sys.argv[1]), sys.argv[1], int(sys.argv[2])))
"""


def _start_parent(config_path: Path, workers: int, log_path: Path) -> subprocess.Popen[bytes]:
    """``run_workers`` in a process of its own (as ``streamkit run --workers N`` will be),
    its JSON logs going to ``log_path``."""
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            [sys.executable, "-c", DRIVER, str(config_path), str(workers)],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )


def _one_symbol_per_worker(workers: int) -> list[str]:
    picked: dict[int, str] = {}
    for i in range(1000):
        symbol = f"T{i}-USDT"
        picked.setdefault(worker_for("binance", symbol, workers), symbol)
        if len(picked) == workers:
            return [picked[w] for w in range(workers)]
    raise AssertionError("no symbol for some worker")


def _children(pid: int) -> dict[int, int]:
    """Live child processes of ``pid`` as {worker index: child pid}, read from /proc."""
    out: dict[int, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            args = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            if b"streamkit.worker_main" in args and b"--index" in args:
                out[int(args[args.index(b"--index") + 1])] = int(child)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def _until(what: str, check: Callable[[], object], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.1)


def _events(log_path: Path) -> list[dict[str, object]]:
    events = []
    for line in log_path.read_text().splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


async def test_two_workers_publish_every_type_into_nats_survive_a_kill_and_stop_cleanly(
    tmp_path: Path,
) -> None:
    nc = await nats_or_skip()
    import nats.js.api

    js = nc.jetstream()  # type: ignore[attr-defined]
    prefix = unique("wk")
    stream = prefix.upper()
    symbols = _one_symbol_per_worker(2)
    aliases = {s.replace("-", ""): "NKNUSDT" for s in symbols}
    config = {
        "feeds": [
            {
                "exchange": "binance",
                "symbols": symbols,
                "channels": ["trades", "bbo", "l2_book"],
                "stale_after": 10,
            }
        ],
        "sinks": [
            {
                "type": "nats",
                "url": NATS_URL,
                "subject": prefix + ".{type}.{exchange}.{symbol}",
                "stream": {
                    "name": stream,
                    "subjects": [f"{prefix}.>"],
                    "storage": "memory",
                    "max_age": 600,
                },
            }
        ],
        "supervision": {"max_restarts": 5, "within": 60},
    }
    parent: subprocess.Popen[bytes] | None = None
    seen_pids: set[int] = set()
    async with BinanceSimulator(rate=20, aliases=aliases) as sim:
        config["feeds"][0]["url"] = sim.ws_url  # type: ignore[index]
        config["feeds"][0]["rest_url"] = sim.rest_url  # type: ignore[index]
        config_path = tmp_path / "workers.yaml"
        config_path.write_text(yaml.safe_dump(config))
        log_path = tmp_path / "parent.log"
        try:
            parent = _start_parent(config_path, 2, log_path)

            counts: dict[str, int] = {}

            async def refresh() -> dict[str, int]:
                try:
                    info = await js.stream_info(stream, subjects_filter=">")
                except nats.js.errors.NotFoundError:
                    return {}
                counts.clear()
                counts.update(info.state.subjects or {})
                return counts

            def subject(kind: str, symbol: str) -> str:
                return f"{prefix}.{kind}.binance.{symbol}"

            # 1. both shards deliver every record type of their symbol
            wanted = [subject(k, s) for s in symbols for k in ("trade", "bbo", "book")]
            for _ in range(300):
                await refresh()
                if all(counts.get(s, 0) > 0 for s in wanted):
                    break
                await asyncio.sleep(0.1)
            assert all(counts.get(s, 0) > 0 for s in wanted), (wanted, counts, log_path.read_text())
            workers = _children(parent.pid)
            assert sorted(workers) == [0, 1]
            seen_pids.update(workers.values())
            # status records from both shards, told apart by their connection name
            sub = await js.pull_subscribe(f"{prefix}.status.>", stream=stream)
            msgs = await sub.fetch(50, timeout=5)
            from streamkit.sinks.wire import HEADER_ENCODING, HEADER_TYPE, decode

            connections = {
                decode(m.data, m.headers[HEADER_TYPE], m.headers[HEADER_ENCODING]).connection  # type: ignore[union-attr, index]
                for m in msgs
            }
            assert {"binance@w0/0", "binance@w1/0"} <= connections

            # 2. SIGKILL worker 1: the parent restarts it and its symbol's data resumes
            victim = workers[1]
            os.kill(victim, signal.SIGKILL)
            await _until(
                "worker 1 restarted", lambda: _children(parent.pid).get(1) not in (None, victim)
            )
            seen_pids.update(_children(parent.pid).values())
            await refresh()
            after_restart = counts.get(subject("trade", symbols[1]), 0)
            for _ in range(300):
                await refresh()
                if counts.get(subject("trade", symbols[1]), 0) > after_restart:
                    break
                await asyncio.sleep(0.1)
            assert counts.get(subject("trade", symbols[1]), 0) > after_restart, (
                "no data after restart"
            )
            assert _children(parent.pid)[0] == workers[0]  # the other worker was left alone
            events = _events(log_path)
            died = [e for e in events if e.get("event") == "worker died"]
            assert [(e["worker"], e["pid"], e["cause"]) for e in died] == [
                (1, victim, "killed by SIGKILL")
            ]
            assert any(e.get("event") == "restarting worker" for e in events)

            # 3. SIGTERM to the parent: every worker stops cleanly, exit 0, no orphans
            parent.send_signal(signal.SIGTERM)
            rc = await asyncio.to_thread(parent.wait, 60)
            assert rc == 0, log_path.read_text()[-3000:]
            assert not [pid for pid in seen_pids if _alive(pid)]
            stopped = [e for e in _events(log_path) if e.get("event") == "worker stopped"]
            assert sorted((e["worker"], e["exit_code"]) for e in stopped) == [(0, 0), (1, 0)]
        finally:
            if parent is not None and parent.poll() is None:
                parent.kill()
                parent.wait()
            for pid in seen_pids:
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                await js.delete_stream(stream)
            await nc.close()  # type: ignore[attr-defined]


async def test_workers_stop_by_themselves_when_the_parent_is_killed(tmp_path: Path) -> None:
    """The stdin lifeline: a SIGKILLed parent leaves no orphan streaming on its own."""
    async with BinanceSimulator(rate=20) as sim:
        config = {
            "feeds": [
                {
                    "exchange": "binance",
                    "url": sim.ws_url,
                    "rest_url": sim.rest_url,
                    "symbols": ["NKN-USDT"],
                    "channels": ["trades"],
                }
            ],
            "sinks": [{"type": "jsonl", "path": str(tmp_path / "md.jsonl"), "flush_interval": 0.1}],
        }
        config_path = tmp_path / "one.yaml"
        config_path.write_text(yaml.safe_dump(config))
        parent = _start_parent(config_path, 1, tmp_path / "parent.log")
        out = tmp_path / "md.w0.jsonl"
        try:
            await _until("the worker writes records", lambda: out.exists() and out.stat().st_size)
            (worker,) = _children(parent.pid).values()
            parent.kill()
            parent.wait()
            await _until("the orphaned worker exits", lambda: not _alive(worker))
        finally:
            if parent.poll() is None:
                parent.kill()
                parent.wait()
        # it stopped cleanly: whatever it wrote is whole JSON lines
        lines = out.read_text().splitlines()
        assert lines and all(json.loads(line)["exchange"] == "binance" for line in lines)
