"""``examples/all_venues.yaml`` as a user runs it: the CLI in a subprocess, all nine venue
simulators, records from every exchange in the jsonl file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "all_venues.yaml"
EXCHANGES = {
    "binance",
    "binance_futures",
    "okx",
    "bybit",
    "kraken",
    "coinbase",
    "coinbase_advanced",
    "bitmex",
    "deribit",
}
#: Exchanges whose captures hold trades (Kraken's v2 capture has books only).
WITH_TRADES = EXCHANGES - {"kraken"}


def streamkit(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamkit.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_all_venues_example_validates() -> None:
    result = streamkit("validate", str(EXAMPLE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "9 feed(s)" in result.stdout


def test_all_venues_example_streams_from_every_exchange(tmp_path: Path) -> None:
    result = streamkit("run", str(EXAMPLE), "--duration", "5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = (tmp_path / "out" / "all_venues.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert {r["exchange"] for r in records} == EXCHANGES
    for exchange in EXCHANGES:
        mine = [r for r in records if r["exchange"] == exchange]
        events = [r["event"] for r in mine if r["type"] == "status"]
        assert events[:2] == ["connected", "subscribed"], (exchange, events)
        # the simulators replay clean captures: any other status is a bug somewhere
        assert set(events) == {"connected", "subscribed"}, (exchange, events)
        books = [r for r in mine if r["type"] == "book"]
        assert books and books[0]["snapshot"], exchange
    traded = {r["exchange"] for r in records if r["type"] == "trade"}
    assert traded == WITH_TRADES
    # the console sink prints trades only, one line each, from every exchange with trades
    printed = {line.split()[0] for line in result.stdout.splitlines() if " trade " in line}
    assert printed == WITH_TRADES
