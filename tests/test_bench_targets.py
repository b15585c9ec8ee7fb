"""bench/run.py's issue-5 targets: ratios of one run's rows, and the floor's own ratio beside
each comparison with a baseline (does even the raw asyncio floor meet it on this machine?)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture(scope="module")
def run() -> ModuleType:
    sys.path.insert(0, str(BENCH))  # run.py imports its sibling modules
    try:
        spec = importlib.util.spec_from_file_location("bench_run", BENCH / "run.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def row(scenario: str, client: str, **figures: float) -> dict[str, Any]:
    return {"scenario": scenario, "client": client, "ok": True, **figures}


def by_name(targets: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {t["target"]: t for t in targets}


def test_floor_ratio_is_reported_beside_each_baseline_comparison(run: ModuleType) -> None:
    rows = [
        row("burst_trades", "streamkit", msgs_per_s=300_000),
        row("burst_trades", "floor", msgs_per_s=350_000),
        row("burst_trades", "curl_cffi", msgs_per_s=400_000),
        row("burst_trades", "cryptofeed", msgs_per_s=80_000),
        row("paced_50k", "streamkit", cpu_us_per_msg=15.0, p99_us=100.0),
        row("paced_50k", "floor", cpu_us_per_msg=10.0, p99_us=80.0),
        row("paced_50k", "curl_cffi", cpu_us_per_msg=20.0),
        row("paced_50k", "cryptofeed", cpu_us_per_msg=30.0),
        row("depth_burst", "streamkit-decode", msgs_per_s=50_000),
        row("depth_burst", "floor", msgs_per_s=150_000),
        row("depth_burst", "libcurl", msgs_per_s=200_000),
    ]
    t = by_name(run.targets(rows, have_cryptofeed=True))

    burst_cf = t["burst: msgs/s streamkit / cryptofeed"]
    assert burst_cf["value"] == pytest.approx(3.75) and burst_cf["met"] is False
    assert burst_cf["floor"] == pytest.approx(4.375) and burst_cf["floor_met"] is True

    burst_cc = t["burst: msgs/s streamkit / curl_cffi (no decode)"]
    assert burst_cc["floor"] == pytest.approx(0.875) and burst_cc["floor_met"] is False

    paced_cc = t["paced 50k: CPU/msg curl_cffi / streamkit"]
    assert paced_cc["value"] == pytest.approx(20 / 15) and paced_cc["met"] is False
    assert paced_cc["floor"] == pytest.approx(2.0) and paced_cc["floor_met"] is False
    paced_cf = t["paced 50k: CPU/msg cryptofeed / streamkit"]
    assert paced_cf["floor"] == pytest.approx(3.0) and paced_cf["floor_met"] is True

    depth = t["depth: decode + normalize msgs/s / libcurl direct"]
    assert depth["value"] == pytest.approx(0.25) and depth["floor"] == pytest.approx(0.75)
    assert depth["floor_met"] is False

    # A target against the floor itself has no floor figure.
    own = t["paced 50k: CPU/msg streamkit / floor"]
    assert own["value"] == pytest.approx(1.5) and own["met"] is True and own["floor"] is None


def test_missing_rows_are_not_measured_not_met(run: ModuleType) -> None:
    t = by_name(run.targets([row("burst_trades", "floor", msgs_per_s=1.0)], have_cryptofeed=True))
    burst = t["burst: msgs/s streamkit / curl_cffi (no decode)"]
    assert burst["met"] is None and burst["value"] is None and burst["note"] == "not measured"
    assert burst["floor"] is None and burst["floor_met"] is None


def test_printed_targets_say_when_the_floor_misses_too(
    run: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        row("burst_trades", "streamkit", msgs_per_s=300_000),
        row("burst_trades", "floor", msgs_per_s=350_000),
        row("burst_trades", "curl_cffi", msgs_per_s=400_000),
    ]
    run.print_targets(run.targets(rows, have_cryptofeed=False))
    line = next(x for x in capsys.readouterr().out.splitlines() if "curl_cffi (no decode)" in x)
    assert "[MISS]" in line and "floor in streamkit's place: 0.88, misses it too" in line


def test_paced_ratios_say_which_clients_saturated_a_core(run: ModuleType) -> None:
    # At 50k msg/s a client that needs a whole core reads more per wake-up the further it
    # falls behind: its CPU/msg is capped at 1 core / rate, so the target says so.
    rows = [
        row("paced_50k", "streamkit", cpu_us_per_msg=19.7, cpu_pct=98.4),
        row("paced_50k", "floor", cpu_us_per_msg=16.3, cpu_pct=81.6),
        row("paced_50k", "curl_cffi", cpu_us_per_msg=19.7, cpu_pct=98.5),
        row("paced_50k", "cryptofeed", cpu_us_per_msg=19.6, cpu_pct=94.0),
    ]
    t = by_name(run.targets(rows, have_cryptofeed=True))
    assert t["paced 50k: CPU/msg curl_cffi / streamkit"]["note"].startswith(
        "curl_cffi and streamkit used 95%+ of a core"
    )
    assert t["paced 50k: CPU/msg streamkit / floor"]["note"].startswith("streamkit used")
    assert t["paced 50k: CPU/msg cryptofeed / streamkit"]["note"].startswith("streamkit used")
    # below the line: no note
    quiet = [{**r, "cpu_pct": 50.0} for r in rows]
    assert all(not x["note"] for x in run.targets(quiet, have_cryptofeed=True)[:3])


def test_a_near_miss_is_never_printed_as_the_limit(
    run: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        row("paced_50k", "streamkit", cpu_us_per_msg=16.05, cpu_pct=80.0),
        row("paced_50k", "floor", cpu_us_per_msg=10.67, cpu_pct=53.0),  # 1.504: a miss
        row("burst_trades", "streamkit", msgs_per_s=412_000),
        row("burst_trades", "curl_cffi", msgs_per_s=468_000),  # 0.880: plainly a miss
    ]
    t = by_name(run.targets(rows, have_cryptofeed=False))
    near = t["paced 50k: CPU/msg streamkit / floor"]
    assert near["met"] is False and near["value_text"] == "1.504"
    assert t["burst: msgs/s streamkit / curl_cffi (no decode)"]["value_text"] == "0.88"
    run.print_targets(list(t.values()))
    line = next(x for x in capsys.readouterr().out.splitlines() if "streamkit / floor" in x)
    assert "[MISS]" in line and " 1.504 " in line
