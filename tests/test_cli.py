"""The ``streamkit`` command as a user runs it: a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def streamkit(
    *args: str, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamkit.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_feeds_lists_binance_with_channels() -> None:
    result = streamkit("feeds")
    assert result.returncode == 0
    line = next(li for li in result.stdout.splitlines() if li.startswith("binance"))
    for channel in ("trades", "bbo", "l2_book"):
        assert channel in line


def test_validate_good_and_bad(tmp_path: Path) -> None:
    ok = streamkit("validate", str(REPO / "examples" / "demo.yaml"))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("ok:")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "feeds:\n  - exchange: binance\n    symbols: [BTC-USDT]\n    channels: [trades]\n"
        "    transport: {recv_queue_sise: 10}\n"
    )
    result = streamkit("validate", str(bad))
    assert result.returncode == 1
    assert "feeds[0].transport.recv_queue_sise: unknown key" in result.stderr
    assert "recv_queue_size" in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_reports_unknown_exchange_and_channel(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "feeds:\n  - {exchange: binance, symbols: [BTC-USDT], channels: [tradez]}\n"
        "  - {exchange: nosuchvenue, name: x, symbols: [BTC-USDT], channels: [trades]}\n"
    )
    result = streamkit("validate", str(bad))
    assert result.returncode == 1
    assert "feeds[0].channels[0]" in result.stderr
    assert "feeds[1].exchange" in result.stderr and "nosuchvenue" in result.stderr


def test_hostile_inputs_exit_1_without_traceback(tmp_path: Path) -> None:
    cases = {
        "empty.yaml": b"",
        "binary.yaml": b"\x00\xff\xfe\x80",
        "list.yaml": b"- 1\n- 2\n",
        "alias.yaml": b"a: &a [1, 2]\nb: *a\n",
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        result = streamkit("validate", str(path))
        assert result.returncode == 1, (name, result.stderr)
        assert "Traceback" not in result.stderr, name
        assert result.stderr.startswith("error:"), name
    missing = streamkit("run", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 1 and "no such file" in missing.stderr


def test_demo_runs_for_duration_and_writes_jsonl(tmp_path: Path) -> None:
    result = streamkit("run", str(REPO / "examples" / "demo.yaml"), "--duration", "4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert " trade " in result.stdout and " bbo " in result.stdout
    records = [json.loads(li) for li in (tmp_path / "out" / "demo.jsonl").read_text().splitlines()]
    types = {r["type"] for r in records}
    assert {"trade", "bbo", "book", "status"} <= types
    for record in records:
        assert {"type", "exchange", "symbol", "ts", "recv_ts"} <= set(record)
        assert isinstance(record["recv_ts"], int)


def test_sigterm_shuts_down_cleanly(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamkit.cli", "run", str(REPO / "examples" / "demo.yaml")],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    out_file = tmp_path / "out" / "demo.jsonl"
    deadline = time.monotonic() + 20
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if " trade " in line:
            break
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr[-2000:]
    assert "stopped" in stderr
    lines = out_file.read_text().splitlines()
    assert lines and all(json.loads(li)["type"] for li in lines)  # flushed, no torn line


def test_doctor_reports_versions_and_config_problems(tmp_path: Path) -> None:
    ok = streamkit("doctor", str(REPO / "examples" / "demo.yaml"))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    for what in ("curl_cffi", "libcurl", "msgspec", "feed plugins", "config"):
        assert any(li.startswith("ok") and what in li for li in ok.stdout.splitlines()), what
    # which read loop new connections use: the C accelerator when it is built
    from streamkit.transport import libcurl

    [read_loop] = [li for li in ok.stdout.splitlines() if "read loop" in li]
    assert ("C accelerator" in read_loop) == libcurl.SPEEDUPS, read_loop
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "feeds:\n  - {exchange: binance, symbols: [BTC-USDT], channels: [trades]}\n"
        "sinks:\n  - {type: redis, url: 'redis://127.0.0.1:9'}\n"
    )
    result = streamkit("doctor", str(bad))
    assert result.returncode == 1
    assert any(
        li.startswith("FAIL") and "sinks[0]" in li and "not reachable" in li
        for li in result.stdout.splitlines()
    ), result.stdout


def test_record_then_replay_reproduces_the_records(tmp_path: Path) -> None:
    rec = streamkit(
        "record",
        str(REPO / "examples" / "demo.yaml"),
        "--dir",
        "rec",
        "--duration",
        "3",
        cwd=tmp_path,
    )
    assert rec.returncode == 0, rec.stderr[-2000:]
    live = [json.loads(li) for li in (tmp_path / "out" / "demo.jsonl").read_text().splitlines()]
    config = tmp_path / "replay.yaml"
    config.write_text(
        "feeds: [{exchange: binance, symbols: [NKN-USDT], channels: [trades]}]\n"
        "sinks: [{type: jsonl, path: replayed.jsonl}]\n"
    )
    rep = streamkit("replay", "rec", "--max", "--config", str(config), cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr[-2000:]
    replayed = [json.loads(li) for li in (tmp_path / "replayed.jsonl").read_text().splitlines()]

    def market(records: list[dict[str, object]]) -> list[dict[str, object]]:
        # replay reproduces what the plugin decoded (not the actor's lifecycle statuses);
        # receive times are the recorded ones, so compare everything but recv_ts
        return [
            {k: v for k, v in r.items() if k != "recv_ts"}
            for r in records
            if r["type"] in ("trade", "bbo", "book")
        ]

    assert market(replayed) == market(live)
    assert len(market(live)) > 20


def test_run_with_workers_shards_and_exits_cleanly(tmp_path: Path) -> None:
    result = streamkit(
        "run",
        str(REPO / "examples" / "demo.yaml"),
        "--workers",
        "2",
        "--duration",
        "4",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    files = sorted((tmp_path / "out").glob("demo.w*.jsonl"))
    assert files, "each worker writes its own jsonl file"
    records = [json.loads(li) for f in files for li in f.read_text().splitlines()]
    assert {"trade", "bbo", "book"} <= {r["type"] for r in records}
    bad = streamkit("run", str(REPO / "examples" / "demo.yaml"), "--workers", "0")
    assert bad.returncode == 2 and "at least 1" in bad.stderr
