"""Whole-pipeline throughput on the built-in simulator, with an in-run baseline.

    python bench/pipeline.py [--seconds 10] [--rate 2000] [--json bench/results/pipeline.json]

The simulator runs in its own process (so it is not charged to the client) and streams
Binance trades, bookTicker and depth diffs for NKNUSDT and LRCBTC at ``--rate`` events per
second per stream. Two clients read the same streams for the same time, one after the other:

- baseline: curl_cffi ``AsyncWebSocket`` receiving raw frames, no decoding;
- streamkit: transport -> actor -> Binance plugin (msgspec decode, normalize, book sync) ->
  bus -> one consumer.

For each: frames/s, records/s, and CPU microseconds per frame (process CPU time / frames),
then the ratio streamkit/baseline. The run fails (exit 1) unless every frame decoded (no
decode errors), no book gap was reported, trade ids never went backwards, and the consumer
received exactly the records the actor published.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from streamkit.app import App
from streamkit.config import parse_config
from streamkit.model import Book, Status, StatusEvent, Trade

STREAMS = [
    "nknusdt@aggTrade",
    "nknusdt@bookTicker",
    "nknusdt@depth@100ms",
    "lrcbtc@aggTrade",
    "lrcbtc@bookTicker",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_simulator(port: int, rate: float) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamkit.cli",
            "simulate",
            "--port",
            str(port),
            "--rate",
            str(rate),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("simulator did not start")


async def baseline(port: int, seconds: float) -> dict[str, Any]:
    from curl_cffi.requests import AsyncSession

    url = f"ws://127.0.0.1:{port}/stream?streams={'/'.join(STREAMS)}"
    frames = 0
    async with AsyncSession() as session:
        ws = await session.ws_connect(url)
        cpu0, t0 = time.process_time(), time.monotonic()
        end = t0 + seconds
        while time.monotonic() < end:
            try:
                await ws.recv(timeout=max(0.01, end - time.monotonic()))
            except Exception:  # the timeout at the end of the window
                break
            frames += 1
        cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
        await ws.close()
    return {"frames": frames, "records": 0, "wall_s": wall, "cpu_s": cpu}


async def pipeline(port: int, seconds: float) -> dict[str, Any]:
    cfg = parse_config(
        f"""
feeds:
  - exchange: binance
    url: ws://127.0.0.1:{port}/stream
    rest_url: http://127.0.0.1:{port}
    symbols: [NKN-USDT, LRC-BTC]
    channels: [trades, bbo, l2_book]
logging: {{level: warning}}
"""
    )
    app = App(cfg)
    sub = app.stream(maxsize=65536)
    received = 0
    problems: list[str] = []
    last_trade: dict[str, int] = {}

    async def consume() -> None:
        nonlocal received
        async for rec in sub:
            received += 1
            if isinstance(rec, Trade):
                tid = int(rec.id)
                if tid <= last_trade.get(rec.symbol or "", -1):
                    problems.append(f"trade id went backwards: {rec.symbol} {tid}")
                last_trade[rec.symbol or ""] = tid
            elif isinstance(rec, Status) and rec.event in (
                StatusEvent.GAP,
                StatusEvent.DECODE_ERROR,
                StatusEvent.DISCONNECTED,
            ):
                problems.append(f"{rec.event}: {rec.detail}")
            elif isinstance(rec, Book) and rec.seq is None:
                problems.append("book without seq")

    consumer = asyncio.create_task(consume())
    await app.start()
    await asyncio.sleep(1.0)  # connect, subscribe and sync the book before measuring
    actor = app.actors[0]
    m0 = actor.counters.messages
    cpu0, t0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    frames = actor.counters.messages - m0
    published = actor.counters.records
    await app.stop()
    await consumer
    if actor.counters.decode_errors:
        problems.append(f"{actor.counters.decode_errors} decode errors")
    if sub.dropped or received != sub.delivered:
        problems.append(f"consumer got {received} records, dropped {sub.dropped}")
    return {
        "frames": frames,
        "records": published,
        "wall_s": wall,
        "cpu_s": cpu,
        "problems": problems,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rate", type=float, default=2000.0, help="events/s per stream")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    port = free_port()
    sim = start_simulator(port, args.rate)
    try:
        base = asyncio.run(baseline(port, args.seconds))
        ours = asyncio.run(pipeline(port, args.seconds))
    finally:
        sim.terminate()
        sim.wait(10)

    rows = {"curl_cffi AsyncWebSocket, raw frames (baseline)": base, "streamkit pipeline": ours}
    print(f"{'client':<48} {'frames/s':>10} {'records/s':>10} {'CPU us/frame':>13}")
    for name, r in rows.items():
        r["frames_per_s"] = r["frames"] / r["wall_s"]
        r["records_per_s"] = r["records"] / r["wall_s"]
        r["cpu_us_per_frame"] = 1e6 * r["cpu_s"] / max(1, r["frames"])
        print(
            f"{name:<48} {r['frames_per_s']:>10,.0f} {r['records_per_s']:>10,.0f}"
            f" {r['cpu_us_per_frame']:>13.1f}"
        )
    ratio = ours["cpu_us_per_frame"] / base["cpu_us_per_frame"]
    print(f"CPU per frame, streamkit / baseline: {ratio:.2f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(msgspec.json.encode({"rows": rows, "cpu_ratio": ratio}))
    if ours["problems"]:
        print("FAILED checks:", *ours["problems"][:10], sep="\n  ")
        return 1
    print("checks: every frame decoded, no gaps, trade ids monotonic, every record delivered")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
