"""Render a bench/run.py results JSON into the docs: SVG plots and a results page.

    python bench/plot.py                          # newest run in bench/results/ -> docs/bench/
    python bench/plot.py bench/results/X.json --out docs/bench --index docs/benchmarks.md

Writes into ``--out``:

- ``latency-<scenario>.svg``: one latency CDF per scenario that carries latencies (every
  client on one chart; x: server write to consumer, µs, log scale; y: fraction of messages on
  a logit scale so that the median and the 99th/99.9th percentiles are all readable);
- ``throughput.svg``: messages per second of every client in the burst scenarios;
- ``cpu-per-message.svg``: CPU µs per message of every client, per scenario;
- ``results.md``: the date, the command, the machine, issue 5's targets met or missed, the
  figures and the full table.

and replaces the section between ``<!-- bench-results:start -->`` and
``<!-- bench-results:end -->`` of ``--index`` (docs/benchmarks.md) with a summary that links to
the results page (``--index ''`` leaves it alone).

Needs matplotlib (the ``plot`` extra, part of ``dev`` and ``bench``); it draws with the Agg
backend, text kept as SVG text, and without timestamps in the files, so re-rendering the same
results gives the same bytes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot's import

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import CRYPTOFEED_REFERENCE  # noqa: E402

REPO = HERE.parent
INDEX_START = "<!-- bench-results:start -->"
INDEX_END = "<!-- bench-results:end -->"

# Series names on every chart, in the order they are drawn (baselines first, streamkit last).
CLIENT_LABELS = {
    "floor": "floor: asyncio protocol + decode",
    "libcurl": "libcurl read directly (no decode)",
    "curl_cffi": "curl_cffi AsyncWebSocket (no decode)",
    "sk-transport": "streamkit transport (no decode)",
    "streamkit-decode": "streamkit transport + Binance decode/normalize (no book)",
    "streamkit-curl_cffi": "streamkit pipeline on curl_cffi",
    "streamkit": "streamkit pipeline",
    "cryptofeed": "cryptofeed",
}
CLIENT_COLORS = {
    "floor": "#7f7f7f",
    "libcurl": "#9467bd",
    "curl_cffi": "#d62728",
    "sk-transport": "#ff7f0e",
    "streamkit-decode": "#17becf",
    "streamkit-curl_cffi": "#8c564b",
    "streamkit": "#1f77b4",
    "cryptofeed": "#2ca02c",
}
REFERENCE_LABEL = "cryptofeed 2.4 (issue's figure, not this run)"

plt.rcParams.update(
    {
        "svg.fonttype": "none",  # text as <text>: smaller files, searchable series names
        "svg.hashsalt": "streamkit-bench",  # stable element ids between renders
        "font.size": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
    }
)


def label(client: str) -> str:
    return CLIENT_LABELS.get(client, client)


def client_order(client: str) -> int:
    names = list(CLIENT_LABELS)
    return names.index(client) if client in names else len(names)


def newest_results(results_dir: Path) -> Path:
    """The newest ``<timestamp>.json`` in ``results_dir`` (``latest.json`` as a fallback)."""
    stamped = sorted(p for p in results_dir.glob("*.json") if p.name != "latest.json")
    if stamped:
        return stamped[-1]
    latest = results_dir / "latest.json"
    if latest.exists():
        return latest
    raise SystemExit(f"no results in {results_dir}: run python bench/run.py --quick first")


def measured(rows: Iterable[dict[str, Any]], scenario: str) -> list[dict[str, Any]]:
    """Rows of ``scenario`` that ran and passed their correctness check, in drawing order.

    A failed row's figures may describe a broken stream, so they are never plotted (the
    results table still lists them as FAIL).
    """
    ok = [r for r in rows if r.get("scenario") == scenario and r.get("ok")]
    return sorted(ok, key=lambda r: client_order(str(r["client"])))


def scenario_names(doc: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for r in doc["rows"]:
        if r["scenario"] not in names:
            names.append(r["scenario"])
    return names


def is_burst(doc: dict[str, Any], scenario: str) -> bool:
    """Whether msgs/s measures the client (burst) rather than the server's pace."""
    spec = doc.get("scenarios", {}).get(scenario)
    if spec is not None:
        return bool(spec.get("rate", 0) == 0 and spec.get("count", 0) > 0)
    return "burst" in scenario


def save(fig: Figure, path: Path) -> None:
    fig.savefig(path, format="svg", metadata={"Date": None}, bbox_inches="tight")
    plt.close(fig)


# --- figures ---------------------------------------------------------------------------------


def plot_latency_cdf(doc: dict[str, Any], scenario: str, path: Path) -> bool:
    """One CDF line per client; False (and no file) when no row carries latencies."""
    rows = [r for r in measured(doc["rows"], scenario) if r.get("latency_cdf")]
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    for r in rows:
        # The logit axis cannot place 0 and 1; the extremes are the min and max sample.
        points = [(us, q) for us, q in r["latency_cdf"] if 0.0 < q < 1.0 and us > 0]
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        client = str(r["client"])
        tail = f"p50 {fmt_us(r.get('p50_us'))}, p99 {fmt_us(r.get('p99_us'))}"
        ax.plot(
            xs,
            ys,
            drawstyle="steps-post",
            label=f"{label(client)}  ({tail})",
            color=CLIENT_COLORS.get(client),
            linewidth=2.0 if client == "streamkit" else 1.3,
        )
    ax.set_xscale("log")
    ax.set_yscale("logit")
    ax.set_ylim(0.01, 0.9999)
    ax.set_yticks([0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999])
    ax.set_yticklabels(["0.01", "0.1", "0.5", "0.9", "0.99", "0.999", "0.9999"])
    ax.minorticks_off()
    ax.grid(True, which="major", alpha=0.3)
    ax.set_xlabel("latency, server write to consumer (µs, log scale)")
    ax.set_ylabel("fraction of messages (logit scale)")
    what = doc.get("scenarios", {}).get(scenario, {}).get("what", "")
    ax.set_title(f"{scenario}: latency CDF" + (f"\n{what}" if what else ""), fontsize=9)
    # Below the axes: inside, it would hide some client's curve in one scenario or another.
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.16), fontsize=7.5, frameon=False)
    save(fig, path)
    return True


def bar_panels(
    doc: dict[str, Any],
    scenarios: list[str],
    key: str,
    xlabel: str,
    title: str,
    path: Path,
    reference: dict[str, float] | None = None,
) -> bool:
    """Horizontal bars of ``key`` per client, one panel per scenario.

    ``reference`` maps a scenario to cryptofeed's figure from the issue, drawn hatched and
    labelled as not measured in this run, when cryptofeed did not run.
    """
    panels: list[tuple[str, list[tuple[str, float, bool]]]] = []
    for s in scenarios:
        bars = [
            (str(r["client"]), float(r[key]), False)
            for r in measured(doc["rows"], s)
            if r.get(key) is not None
        ]
        ran = {c for c, _, _ in bars}
        if reference and s in reference and "cryptofeed" not in ran:
            bars.append(("cryptofeed", reference[s], True))
        if len(bars) >= 2:  # one bar compares against nothing
            panels.append((s, bars))
    if not panels:
        return False
    height = sum(0.35 * len(b) + 0.7 for _, b in panels) + 0.4
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(7.0, height),
        squeeze=False,
        gridspec_kw={"height_ratios": [len(b) for _, b in panels]},
    )
    for ax, (s, bars) in zip(axes[:, 0], panels, strict=True):
        names = [REFERENCE_LABEL if ref else label(c) for c, _, ref in bars]
        values = [v for _, v, _ in bars]
        drawn = ax.barh(
            range(len(bars)),
            values,
            color=[CLIENT_COLORS.get(c, "#333333") for c, _, _ in bars],
            hatch=None,
        )
        for patch, (_, _, ref) in zip(drawn, bars, strict=True):
            if ref:
                patch.set_hatch("///")
                patch.set_alpha(0.5)
        ax.set_yticks(range(len(bars)))
        ax.set_yticklabels(names)
        ax.invert_yaxis()
        top = max(values)
        for i, v in enumerate(values):
            ax.text(v + top * 0.01, i, fmt_value(v), va="center", fontsize=7.5)
        ax.set_xlim(0, top * 1.18)
        ax.xaxis.set_major_formatter(FuncFormatter(short_number))
        ax.set_title(s, fontsize=9, loc="left")
        ax.tick_params(axis="y", length=0)
    axes[-1, 0].set_xlabel(xlabel)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0.0, 0.0, 1.0, 1.0 - 0.35 / height))  # room for the suptitle
    save(fig, path)
    return True


# --- text ------------------------------------------------------------------------------------


def short_number(v: float, _pos: int | None = None) -> str:
    """Axis ticks: 200k rather than 200000."""
    if abs(v) >= 1_000_000:
        return f"{v / 1_000_000:g}M"
    return f"{v / 1000:g}k" if abs(v) >= 1000 else f"{v:g}"


def fmt_us(v: Any) -> str:
    return "-" if not is_number(v) else f"{float(v):,.0f} µs"


def fmt_value(v: float) -> str:
    if v >= 1000:
        return f"{v:,.0f}"
    return f"{v:.2f}" if v < 100 else f"{v:.1f}"


def value_text(target: dict[str, Any]) -> str:
    """A target's value as bench/run.py printed it (older results: two decimals)."""
    return str(target.get("value_text") or cell(target.get("value"), ",.2f"))


def is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not (isinstance(v, float) and math.isnan(v))


def cell(v: Any, spec: str) -> str:
    return format(v, spec) if is_number(v) else "-"


def when(doc: dict[str, Any]) -> str:
    stamp = str(doc.get("when", ""))
    if len(stamp) == 15 and stamp[8] == "-":  # 20261122-021500
        return f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]} {stamp[9:11]}:{stamp[11:13]}"
    return stamp or "unknown"


def targets_paragraph(doc: dict[str, Any]) -> str:
    """Which of issue 5's targets this run met or missed, in plain words."""
    targets = doc.get("targets", [])
    met = [t for t in targets if t.get("met") is True]
    missed = [t for t in targets if t.get("met") is False]
    unmeasured = [t for t in targets if t.get("met") is None]

    def names(ts: list[dict[str, Any]]) -> str:
        return "; ".join(f"{t['target']} ({value_text(t)}, target {limit_text(t)})" for t in ts)

    parts = [f"This run met {len(met)} of issue 5's {len(targets)} targets."]
    if missed:
        parts.append(f"Missed: {names(missed)}.")
    if unmeasured:
        parts.append(f"Not measured: {', '.join(t['target'] for t in unmeasured)}.")
    if any("cryptofeed" in str(t.get("note", "")) for t in targets):
        parts.append(
            "cryptofeed was not installed, so the cryptofeed ratios divide by the figures "
            "measured when the issue was filed, not by this run's."
        )
    if doc.get("note"):  # what the person publishing the run knows and the JSON does not
        parts.append(str(doc["note"]))
    if doc.get("quick"):
        parts.append(
            "This was the CI-sized `--quick` run (seconds of streaming per row), so single "
            "rows are noisy: tail latencies in particular move between runs; the full run "
            "streams five times longer."
        )
    return " ".join(parts)


def limit_text(target: dict[str, Any]) -> str:
    """``≤ 1.5`` or ``≥ 2.5``: which side of the limit meets the target (as in run.py)."""
    name = str(target["target"])
    lower_is_better = "streamkit / floor" in name or "CPU %" in name or "RSS" in name
    return ("≤ " if lower_is_better else "≥ ") + f"{target['limit']:,g}"


def targets_table(doc: dict[str, Any]) -> list[str]:
    """One row per target; the last column gives, for a target that compares streamkit with
    a baseline, the same ratio with the raw asyncio floor in streamkit's place (run.py)."""
    lines = [
        "| target | this run | limit | result | the floor in streamkit's place |",
        "| --- | ---: | ---: | --- | ---: |",
    ]
    for t in doc.get("targets", []):
        result = {True: "met", False: "**missed**", None: "not measured"}[t.get("met")]
        if t.get("note"):
            result += f" ({t['note']})"
        value = value_text(t)
        floor = "—" if t.get("floor") is None else cell(t["floor"], ",.2f")
        if t.get("floor_met") is False:
            floor += " (misses it too)"
        lines.append(f"| {t['target']} | {value} | {limit_text(t)} | {result} | {floor} |")
    return lines


def rows_table(doc: dict[str, Any]) -> list[str]:
    lines = [
        "| scenario | client | msgs/s | CPU µs/msg | p50 µs | p99 µs | p99.9 µs | RSS MB | check |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in doc["rows"]:
        client = label(str(r["client"]))
        if "skipped" in r:
            lines.append(f"| {r['scenario']} | {client} | | | | | | | skipped: {r['skipped']} |")
            continue
        check = "ok" if r.get("ok") else "FAIL: " + "; ".join(r.get("problems", []))[:80]
        lines.append(
            f"| {r['scenario']} | {client} | {cell(r.get('msgs_per_s'), ',.0f')} "
            f"| {cell(r.get('cpu_us_per_msg'), '.2f')} | {cell(r.get('p50_us'), ',.0f')} "
            f"| {cell(r.get('p99_us'), ',.0f')} | {cell(r.get('p999_us'), ',.0f')} "
            f"| {cell(r.get('rss_mb'), '.0f')} | {check} |"
        )
    return lines


def machine_lines(doc: dict[str, Any]) -> list[str]:
    m = doc.get("machine", {})
    command = "python bench/run.py" + (" --quick" if doc.get("quick") else "")
    if doc.get("loop", "asyncio") != "asyncio":
        command += f" --loop {doc['loop']}"
    if doc.get("repeat", 1) > 1:
        command += f" --repeat {doc['repeat']}"
    return [
        "| | |",
        "| --- | --- |",
        f"| date | {when(doc)} |",
        f"| command | `{command}` |",
        f"| code | commit `{m.get('commit', 'unknown')}` |",
        f"| cores | {m.get('cores', '?')} ({m.get('cpu_model') or 'unknown CPU'}) |",
        f"| Python | {m.get('python', '?')} {m.get('implementation', '')} |",
        f"| libcurl | {m.get('libcurl', '?')} |",
        f"| event loop | {m.get('loop', doc.get('loop', '?'))} |",
        f"| CPU pinning | {m.get('pinning', 'none (not recorded)')} |",
        f"| OS | {m.get('platform', '?')} |",
    ]


def results_page(doc: dict[str, Any], figures: list[tuple[str, str]]) -> str:
    lines = [
        "# Benchmark results",
        "",
        "<!-- Written by bench/plot.py from a bench/run.py results JSON; do not edit by hand:",
        "     python bench/run.py --quick && python bench/plot.py -->",
        "",
        f"Measured by `bench/run.py` on {when(doc)}; how the suite works and how to run it is"
        " on the [benchmarks page](../benchmarks.md). Ratios between clients of the same run"
        " are what carries over to other machines, not the absolute figures.",
        "",
        "## Machine",
        "",
        *machine_lines(doc),
        "",
        "## Issue 5's targets",
        "",
        targets_paragraph(doc),
        "",
        *targets_table(doc),
        "",
        "## Figures",
        "",
        "Latency is measured from the server's write (its time is in the frame) to the"
        " consumer. In the burst scenarios the server writes as fast as it can, so latency"
        " there measures how far behind the client falls (queueing), not what one message"
        " costs; the paced scenarios show per-message latency.",
        "",
        "| figure | shows |",
        "| --- | --- |",
        *(f"| [{name}]({name}) | {what} |" for name, what in figures),
        "",
    ]
    for name, what in figures:
        lines += [f"### {what}", "", f"![{what}]({name})", ""]
    lines += ["## Every row", "", *rows_table(doc), ""]
    return "\n".join(lines)


def index_section(doc: dict[str, Any], figures: list[tuple[str, str]], out_rel: str) -> str:
    """The summary that goes between the markers of docs/benchmarks.md."""
    lines = [
        "",
        f"Latest published run: {when(doc)}, "
        f"`python bench/run.py{' --quick' if doc.get('quick') else ''}` on "
        f"{doc.get('machine', {}).get('cores', '?')} cores, "
        f"{doc.get('machine', {}).get('loop', doc.get('loop', '?'))}, "
        f"commit `{doc.get('machine', {}).get('commit', 'unknown')}`. "
        f"**[All results, plots and the machine]({out_rel}/results.md)**.",
        "",
        targets_paragraph(doc),
        "",
    ]
    for name, what in figures:
        if name in ("latency-paced_50k.svg", "throughput.svg"):
            lines += [f"![{what}]({out_rel}/{name})", ""]
    return "\n".join(lines)


def update_index(index: Path, section: str) -> bool:
    """Replace what is between the markers of ``index``; False when it has no markers."""
    text = index.read_text()
    start, end = text.find(INDEX_START), text.find(INDEX_END)
    if start < 0 or end < start:
        return False
    index.write_text(text[: start + len(INDEX_START)] + "\n" + section + "\n" + text[end:])
    return True


# --- main ------------------------------------------------------------------------------------


def render(doc: dict[str, Any], out: Path) -> list[tuple[str, str]]:
    """Write every figure and results.md into ``out``; return ``(file name, caption)``s."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.svg"):  # a scenario left out of this run must not linger
        old.unlink()
    figures: list[tuple[str, str]] = []
    for s in scenario_names(doc):
        name = f"latency-{s}.svg"
        if plot_latency_cdf(doc, s, out / name):
            figures.append((name, f"{s}: latency CDF"))
    bursts = [s for s in scenario_names(doc) if is_burst(doc, s)]
    reference = {"burst_trades": CRYPTOFEED_REFERENCE["burst_msgs_per_s"]}
    if bar_panels(
        doc,
        bursts,
        "msgs_per_s",
        "messages per second (higher is better)",
        "Throughput against the baselines (burst scenarios)",
        out / "throughput.svg",
        reference,
    ):
        figures.append(("throughput.svg", "throughput against the baselines"))
    cpu_reference = {"paced_50k": CRYPTOFEED_REFERENCE["paced_cpu_us_per_msg"]}
    if bar_panels(
        doc,
        scenario_names(doc),
        "cpu_us_per_msg",
        "CPU µs per message (lower is better)",
        "CPU per message against the baselines",
        out / "cpu-per-message.svg",
        cpu_reference,
    ):
        figures.append(("cpu-per-message.svg", "CPU per message against the baselines"))
    (out / "results.md").write_text(results_page(doc, figures))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", type=Path, help="default: newest in bench/results")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench")
    parser.add_argument(
        "--index",
        default=str(REPO / "docs" / "benchmarks.md"),
        help="page whose bench-results section links the results ('' to leave it alone)",
    )
    parser.add_argument(
        "--note",
        default="",
        help="a sentence added to the targets paragraph (e.g. what else ran on the machine)",
    )
    args = parser.parse_args(argv)
    path = args.results or newest_results(HERE / "results")
    doc = json.loads(path.read_text())
    if args.note:
        doc["note"] = args.note
    figures = render(doc, args.out)
    print(f"{path} -> {args.out}: {', '.join(n for n, _ in figures)}, results.md")
    if args.index:
        index = Path(args.index)
        rel = Path(os.path.relpath(args.out.resolve(), index.resolve().parent)).as_posix()
        if update_index(index, index_section(doc, figures, rel)):
            print(f"updated the results section of {index}")
        else:
            print(f"{index} has no {INDEX_START} marker; left alone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
