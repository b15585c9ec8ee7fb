"""bench/plot.py renders a results JSON into SVG figures and a results page.

A small synthetic results document stands in for a benchmark run (the benchmark itself never
runs here): the test checks which files appear, that each chart names its series, that failed
rows stay out of the charts, and that the index page's marked section is replaced.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip("matplotlib", reason="bench/plot.py needs the bench extra (matplotlib)")

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load_plot() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_plot", BENCH / "plot.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_plot"] = module
    spec.loader.exec_module(module)
    return module


def cdf(p50: float, p99: float) -> list[list[float]]:
    """A plausible latency CDF: linear up to the median, then up to p99, then a tail."""
    qs = [i / 100 for i in range(100)] + [0.995, 0.999, 0.9995, 0.9999, 1.0]
    out = []
    for q in qs:
        if q <= 0.5:
            us = p50 * (0.5 + q)
        elif q <= 0.99:
            us = p50 + (p99 - p50) * (q - 0.5) / 0.49
        else:
            us = p99 * (1 + 100 * (q - 0.99))
        out.append([us, q])
    return out


def row(
    scenario: str, client: str, msgs: float, cpu: float, p50: float, p99: float
) -> dict[str, Any]:
    return {
        "scenario": scenario,
        "client": client,
        "messages": 1000,
        "msgs_per_s": msgs,
        "cpu_us_per_msg": cpu,
        "cpu_pct": 50.0,
        "rss_mb": 60.0,
        "p50_us": p50,
        "p99_us": p99,
        "p999_us": p99 * 2,
        "latency_cdf": cdf(p50, p99),
        "ok": True,
        "problems": [],
    }


def synthetic_results() -> dict[str, Any]:
    failed = row("paced_50k", "sk-transport", 1.0, 1.0, 1.0, 1.0)
    failed.update(ok=False, problems=["3 messages missing"])
    return {
        "when": "20261122-021500",
        "quick": True,
        "loop": "asyncio",
        "machine": {
            "cores": 2,
            "cpu_model": "Test CPU",
            "python": "3.11.7",
            "implementation": "CPython",
            "platform": "Linux",
            "libcurl": "libcurl/8.0.0-TEST",
            "loop": "asyncio",
        },
        "scenarios": {
            "burst_trades": {"rate": 0, "count": 1000, "what": "trades as fast as possible"},
            "paced_50k": {"rate": 50_000, "count": 1000, "what": "trades at 50k msg/s"},
            "idle_1000": {"rate": 0, "count": 0, "what": "idle symbols"},
        },
        "rows": [
            row("burst_trades", "floor", 500_000, 2.0, 40_000, 70_000),
            row("burst_trades", "curl_cffi", 300_000, 3.0, 50_000, 90_000),
            row("burst_trades", "streamkit", 400_000, 2.5, 45_000, 80_000),
            {"scenario": "burst_trades", "client": "cryptofeed", "skipped": "not installed"},
            row("paced_50k", "floor", 50_000, 5.7, 8, 48),
            row("paced_50k", "curl_cffi", 50_000, 19.9, 39, 131),
            row("paced_50k", "streamkit", 50_000, 7.0, 10, 60),
            failed,
            {
                "scenario": "idle_1000",
                "client": "streamkit",
                "messages": 0,
                "msgs_per_s": 0.0,
                "cpu_us_per_msg": None,
                "cpu_pct": 0.4,
                "rss_mb": 70.0,
                "p50_us": float("nan"),
                "p99_us": float("nan"),
                "p999_us": float("nan"),
                "latency_cdf": [],
                "ok": True,
                "problems": [],
            },
        ],
        "targets": [
            {
                "target": "paced 50k: CPU/msg streamkit / floor",
                "value": 1.23,
                "limit": 1.5,
                "met": True,
                "note": "",
            },
            {
                "target": "burst: msgs/s streamkit / curl_cffi (no decode)",
                "value": 1.33,
                "limit": 1.2,
                "met": True,
                "note": "",
                "floor": 1.1,
                "floor_met": False,
            },
            {
                "target": "paced 50k: p99 streamkit / floor",
                "value": 2.5,
                "limit": 2.0,
                "met": False,
                "note": "",
            },
        ],
    }


def test_renders_figures_page_and_index(tmp_path: Path) -> None:
    plot = load_plot()
    results = tmp_path / "results.json"
    results.write_text(json.dumps(synthetic_results()))
    out = tmp_path / "docs" / "bench"
    index = tmp_path / "docs" / "benchmarks.md"
    index.parent.mkdir(parents=True)
    index.write_text(
        "# Benchmarks\n\nintro\n\n<!-- bench-results:start -->\nold text\n"
        "<!-- bench-results:end -->\n\ntrailer\n"
    )

    note = "Other work shared the machine."
    args = [str(results), "--out", str(out), "--index", str(index), "--note", note]
    assert plot.main(args) == 0

    svgs = sorted(p.name for p in out.glob("*.svg"))
    # idle_1000 carries no latencies, so it gets no CDF.
    assert svgs == [
        "cpu-per-message.svg",
        "latency-burst_trades.svg",
        "latency-paced_50k.svg",
        "throughput.svg",
    ]
    for name in svgs:
        assert (out / name).read_text().lstrip().startswith(("<?xml", "<svg"))

    cdf_50k = (out / "latency-paced_50k.svg").read_text()
    for client in ("floor", "curl_cffi", "streamkit"):
        assert plot.label(client) in cdf_50k
    assert "log scale" in cdf_50k
    # The failed row's figures describe a broken stream: never drawn.
    assert plot.label("sk-transport") not in cdf_50k

    throughput = (out / "throughput.svg").read_text()
    assert plot.label("streamkit") in throughput and plot.label("curl_cffi") in throughput
    # cryptofeed did not run: its issue figure is drawn, labelled as not from this run.
    assert plot.REFERENCE_LABEL in throughput
    assert "paced_50k" not in throughput  # paced msgs/s is the server's pace, not a result

    cpu = (out / "cpu-per-message.svg").read_text()
    assert "burst_trades" in cpu and "paced_50k" in cpu
    assert "idle_1000" not in cpu  # a single client without a CPU/msg figure compares nothing

    page = (out / "results.md").read_text()
    assert "2026-11-22 02:15" in page and "libcurl/8.0.0-TEST" in page and "| cores | 2" in page
    assert "met 2 of issue 5's 3 targets" in page
    assert "Missed: paced 50k: p99 streamkit / floor (2.50, target ≤ 2)" in page
    assert "| paced 50k: CPU/msg streamkit / floor | 1.23 | ≤ 1.5 | met | — |" in page
    # A comparison with a baseline also shows the floor's own ratio, and whether it misses.
    assert (
        "| burst: msgs/s streamkit / curl_cffi (no decode) | 1.33 | ≥ 1.2 | met "
        "| 1.10 (misses it too) |"
    ) in page
    assert "FAIL: 3 messages missing" in page
    assert note in page
    for name in svgs:
        assert f"]({name})" in page

    text = index.read_text()
    assert "old text" not in text and "intro" in text and "trailer" in text
    assert "(bench/results.md)" in text and "(bench/latency-paced_50k.svg)" in text


def test_rerendering_is_byte_identical(tmp_path: Path) -> None:
    """No timestamps or random ids in the SVGs: re-rendering changes nothing in git."""
    plot = load_plot()
    doc = synthetic_results()
    first = tmp_path / "a"
    second = tmp_path / "b"
    plot.render(doc, first)
    plot.render(doc, second)
    for path in first.iterdir():
        assert path.read_bytes() == (second / path.name).read_bytes(), path.name


def test_newest_results_prefers_the_latest_stamp(tmp_path: Path) -> None:
    plot = load_plot()
    for name in ("20261122-010000.json", "20261122-020000.json", "latest.json"):
        (tmp_path / name).write_text("{}")
    assert plot.newest_results(tmp_path).name == "20261122-020000.json"
