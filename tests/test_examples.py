"""Every example in examples/ runs offline against the simulator and prints what it
promises. Each runs in its own process, exactly as a user runs it, bounded by --duration."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from brokers import NATS_URL, nats_or_skip, unique

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run_example(*args: str, timeout: float = 60) -> list[str]:
    result = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.splitlines()


def test_print_trades_prints_typed_trades() -> None:
    lines = run_example(str(EXAMPLES / "print_trades.py"), "--duration", "2")
    trades = [line for line in lines if line.startswith("trade binance ")]
    assert trades, lines
    # "trade <exchange> <symbol> <side> <size> @ <price> id=<id>"
    _, _, symbol, side, _, at, _, trade_id = trades[0].split()
    assert symbol in {"NKN-USDT", "LRC-BTC"} and side in {"buy", "sell"} and at == "@"
    assert trade_id.startswith("id=")
    assert lines[-1] == f"done: {len(trades)} trades"


def test_book_mid_pauses_on_a_gap_and_resets_on_the_next_snapshot() -> None:
    lines = run_example(str(EXAMPLES / "book_mid.py"), "--duration", "4", "--gap-after", "1.5")
    events = [line.split(":")[0] for line in lines if line.startswith(("book reset", "paused"))]
    # A snapshot, the injected gap, then the resynchronised book's snapshot.
    assert events[:3] == ["book reset", "paused", "book reset"], lines
    paused = lines.index(next(line for line in lines if line.startswith("paused")))
    assert lines[paused].startswith("paused: gap"), lines[paused]
    assert not lines[paused + 1].startswith("mid"), "a mid printed while the book was paused"
    mids = [line for line in lines if line.startswith("mid ")]
    assert mids, lines
    bid = mids[0].split("bid ")[1].split()[0]
    ask = mids[0].split("ask ")[1].split()[0]
    assert float(bid) < float(ask)
    assert lines[-1].startswith("done: book whole")


async def test_nats_consumer_receives_records_from_another_process(tmp_path: Path) -> None:
    nc = await nats_or_skip()
    await nc.close()  # type: ignore[attr-defined]
    name = unique("EXAMPLES_")
    config = yaml.safe_load((EXAMPLES / "nats_demo.yaml").read_text())
    sink = config["sinks"][0]
    sink["url"] = NATS_URL
    sink["subject"] = f"{name}.{{type}}.{{exchange}}.{{symbol}}"
    sink["stream"].update(name=name, subjects=[f"{name}.>"])
    config["simulator"]["rate"] = 100
    path = tmp_path / "nats.yaml"
    path.write_text(yaml.safe_dump(config))
    producer = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streamkit.cli", "run", str(path), "--duration", "8", "--no-live",
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await wait_for_stream(name)  # the producer's sink creates it once it is up
        consumer = await asyncio.create_subprocess_exec(
            sys.executable, str(EXAMPLES / "nats_consumer.py"), "--duration", "2",
            "--url", NATS_URL, "--stream", name, "--subject", sink["subject"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(consumer.communicate(), 60)
        assert consumer.returncode == 0, out.decode() + err.decode()
        lines = out.decode().splitlines()
        assert any(line.startswith("trade binance ") for line in lines), lines
        assert any(line.startswith("bbo binance ") for line in lines), lines
        assert lines[-1].startswith("done: ") and int(lines[-1].split()[1]) > 0
    finally:
        if producer.returncode is None:
            producer.terminate()
        await asyncio.wait_for(producer.wait(), 30)
        nc = await nats_or_skip()
        try:
            await nc.jetstream().delete_stream(name)  # type: ignore[attr-defined]
        finally:
            await nc.close()  # type: ignore[attr-defined]


async def wait_for_stream(name: str, within: float = 30.0) -> None:
    nc = await nats_or_skip()
    try:
        async with asyncio.timeout(within):
            while True:
                try:
                    await nc.jetstream().stream_info(name)  # type: ignore[attr-defined]
                    return
                except Exception:
                    await asyncio.sleep(0.1)
    finally:
        await nc.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize("example", ["print_trades.py", "book_mid.py", "nats_consumer.py"])
def test_every_example_takes_duration(example: str) -> None:
    lines = run_example(str(EXAMPLES / example), "--help", timeout=30)
    assert any("--duration" in line for line in lines)
