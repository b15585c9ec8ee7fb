"""Sharding throughput: records/s into NATS JetStream with 1 worker process, then 2, same run.

    python bench/workers.py [--symbols 8] [--rate 3000] [--seconds 8] [--rounds 3]
                            [--json bench/results/workers.json]

Setup (all on this machine): a Binance simulator in its own process streams trades for
``--symbols`` symbols at ``--rate`` trades/s each (offered load = symbols x rate); the
config has one ``binance`` feed (trades) and one ``nats`` sink (``block`` policy) into a
fresh in-memory JetStream stream. For each worker count the bench is the parent
(:class:`~streamkit.worker_pool.WorkerPool`, exactly what ``--workers N`` runs):

1. start the workers and wait until every one reports ``started`` and some data is stored;
2. measure for ``--seconds``: records stored in the stream per second (from the stream's
   message count), and the CPU seconds of every process involved (workers, simulator,
   nats-server) from /proc;
3. stop the workers (SIGTERM: they drain and flush) and check that every record arrived:
   data records the workers' connections published == messages in the stream that are not
   status records, and records the workers' NATS sinks had acknowledged == messages in the
   stream. Any difference fails the run (exit 1).

The offered load should exceed what one worker can carry, so that the 1-worker figure is its
capacity; the ratio 2/1 is the scaling figure. On a 2-core machine the simulator and
nats-server share the same cores, which caps what a second worker can add: the CPU columns
show where the time went.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import nats
import nats.js.errors

from streamkit.config import AppConfig, validate_data
from streamkit.logs import configure_logging
from streamkit.worker_pool import WorkerPool, WorkerState
from streamkit.workers import shard_configs

NATS_URL = os.environ.get("STREAMKIT_NATS_URL", "nats://127.0.0.1:4222")
CLK_TCK = os.sysconf("SC_CLK_TCK")

SIMULATOR = """
import asyncio, sys
from streamkit.logs import configure_logging
from streamkit.simulator import BinanceSimulator
configure_logging("warning")  # logs to stderr: stdout carries the URLs

async def main():
    symbols = sys.argv[2].split(",")
    sim = BinanceSimulator(rate=float(sys.argv[1]), max_pending=50_000_000,
                           aliases={s: "NKNUSDT" for s in symbols})
    async with sim:
        print(sim.ws_url, sim.rest_url, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""


def cpu_seconds(pid: int | None) -> float:
    """utime + stime of ``pid`` (0 when it is gone)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def nats_server_pid() -> int | None:
    out = subprocess.run(["pgrep", "-x", "nats-server"], capture_output=True, text=True)
    pids = out.stdout.split()
    return int(pids[0]) if len(pids) == 1 else None


def make_config(symbols: list[str], ws_url: str, rest_url: str, stream: str) -> AppConfig:
    prefix = stream.lower()
    return validate_data(
        {
            "feeds": [
                {
                    "exchange": "binance",
                    "url": ws_url,
                    "rest_url": rest_url,
                    "symbols": symbols,
                    "channels": ["trades"],
                    "stale_after": 30,
                }
            ],
            "sinks": [
                {
                    "type": "nats",
                    "url": NATS_URL,
                    "subject": prefix + ".{type}.{exchange}.{symbol}",
                    "stream": {"name": stream, "subjects": [f"{prefix}.>"], "storage": "file"},
                }
            ],
            "logging": {"level": "warning"},
        }
    )


async def stored(js: Any, stream: str) -> int:
    try:
        info = await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        return 0
    return int(info.state.messages)


async def run_once(
    workers: int, symbols: list[str], urls: tuple[str, str], seconds: float, sim_pid: int
) -> dict[str, Any]:
    nc = await nats.connect(NATS_URL)
    js = nc.jetstream()
    stream = f"BENCHWK{uuid.uuid4().hex[:8].upper()}"
    config = make_config(symbols, *urls, stream)
    shards = shard_configs(config, workers)
    pool = WorkerPool(shards, health_log_interval=None, report_interval=0.5)
    runner = asyncio.create_task(pool.run())
    try:
        deadline = time.monotonic() + 60
        while not (
            all(h.state is WorkerState.RUNNING for h in pool.health())
            and await stored(js, stream) > 0
        ):
            if runner.done() or time.monotonic() > deadline:
                raise SystemExit(f"workers did not start: {pool.health()}")
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # past connection setup and the first backlog
        pids = [h.pid for h in pool.health()]
        nats_pid = nats_server_pid()
        procs: dict[str, list[int | None]] = {
            "workers": pids,
            "simulator": [sim_pid],
            "nats-server": [nats_pid],
        }
        cpu0 = {k: sum(cpu_seconds(p) for p in v) for k, v in procs.items()}
        n0, t0 = await stored(js, stream), time.monotonic()
        await asyncio.sleep(seconds)
        n1, t1 = await stored(js, stream), time.monotonic()
        cpu1 = {k: sum(cpu_seconds(p) for p in v) for k, v in procs.items()}
        pool.request_stop()
        code = await runner
        total = await stored(js, stream)
        info = await js.stream_info(stream, subjects_filter=">")
        status = sum(n for subj, n in (info.state.subjects or {}).items() if ".status." in subj)
        reports = [h.report for h in pool.health()]
        published = sum(r.records for r in reports if r is not None)
        acked = sum(sum(r.sinks.values()) for r in reports if r is not None)
        elapsed = t1 - t0
        return {
            "workers": workers,
            "records_per_s": (n1 - n0) / elapsed,
            "cpu_s_per_s": {k: (cpu1[k] - cpu0[k]) / elapsed for k in procs},
            "published": published,
            "acked": acked,
            "stored": total,
            "stored_status": status,
            "exit_code": code,
            # connection counters count data records; status records are counted apart
            "complete": code == 0
            and acked == total
            and published == total - status
            and None not in reports,
        }
    finally:
        if not runner.done():
            runner.cancel()
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_stream(stream)
        await nc.close()


async def measure(
    symbols: list[str], urls: tuple[str, str], seconds: float, sim_pid: int, rounds: int
) -> list[dict[str, Any]]:
    """1 worker, 2 workers, alternated ``rounds`` times (so that a change in the machine's
    background load hits both alike); per worker count, the round with the median rate."""
    runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    for _ in range(rounds):
        for n in (1, 2):
            runs[n].append(await run_once(n, symbols, urls, seconds, sim_pid))
    out = []
    for results in runs.values():
        ranked = sorted(results, key=lambda r: float(r["records_per_s"]))
        median = dict(ranked[len(ranked) // 2])
        median["all_rates"] = [round(r["records_per_s"]) for r in results]
        median["complete"] = all(r["complete"] for r in results)
        out.append(median)
    return out


def start_simulator(rate: float, symbols: list[str]) -> tuple[subprocess.Popen[str], str, str]:
    sim = subprocess.Popen(
        [sys.executable, "-c", SIMULATOR, str(rate), ",".join(symbols)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sim.stdout is not None
    ws_url, rest_url = sim.stdout.readline().split()
    return sim, ws_url, rest_url


def print_table(args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    base = results[0]["records_per_s"]
    print(
        f"\noffered: {args.symbols} symbols x {args.rate:g} trades/s = "
        f"{args.symbols * args.rate:,.0f} records/s; measured over {args.seconds:g} s each; "
        f"{os.cpu_count()} CPUs\n"
    )
    header = (
        f"{'workers':>7} {'records/s':>11} {'vs 1':>6} {'CPU workers':>12} "
        f"{'CPU sim':>8} {'CPU nats':>9} {'published':>10} {'acked':>10} {'stored':>10} "
        f"{'(status)':>8}  ok"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        cpu = r["cpu_s_per_s"]
        print(
            f"{r['workers']:>7} {r['records_per_s']:>11,.0f} {r['records_per_s'] / base:>5.2f}x "
            f"{cpu['workers']:>12.2f} {cpu['simulator']:>8.2f} {cpu['nats-server']:>9.2f} "
            f"{r['published']:>10,} {r['acked']:>10,} {r['stored']:>10,} "
            f"{r['stored_status']:>8,}  "
            f"{'yes' if r['complete'] else 'NO'}   rounds: {r['all_rates']}"
        )
    print("\nEach row is the median of its rounds (all rounds' records/s on the right; every")
    print("round of both counts is checked for completeness).")
    print("CPU columns: cores busy (CPU seconds per second) during the measurement.")
    print("published: data records the workers' connections published; acked: records")
    print("their NATS sinks had acknowledged; stored: stream messages ((status): of which")
    print("status records).")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--symbols", type=int, default=8)
    parser.add_argument("--rate", type=float, default=3000.0, help="trades/s per symbol")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3, help="1-then-2 alternations")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    configure_logging("warning")
    names = [f"W{i:03d}USDT" for i in range(args.symbols)]
    sim, ws_url, rest_url = start_simulator(args.rate, names)
    try:
        symbols = [f"{s[:-4]}-USDT" for s in names]
        results = asyncio.run(
            measure(symbols, (ws_url, rest_url), args.seconds, sim.pid, args.rounds)
        )
    finally:
        assert sim.stdin is not None
        sim.stdin.close()
        sim.wait(30)
    print_table(args, results)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    if not all(r["complete"] for r in results):
        print("FAIL: some record published by a worker is missing from the stream")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
