"""``streamkit run`` in a terminal shows a live table of its feeds (run under a pseudo-terminal,
the screen read back); piped, it prints no table."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pexpect

REPO = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_live_table_in_a_terminal(tmp_path: Path) -> None:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "streamkit.cli", "run", str(REPO / "examples" / "demo.yaml"), "--duration", "4"],
        cwd=str(tmp_path),
        dimensions=(40, 160),
        # the terminal's own size decides the table width, not an inherited COLUMNS
        env={k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")},
        encoding="utf-8",
        timeout=60,
    )
    child.expect(pexpect.EOF)
    child.close()
    screen = ANSI.sub("", child.before or "")
    assert child.exitstatus == 0, screen[-2000:]
    for header in ("connection", "state", "msgs/s", "last msg", "latency p50/p99", "reconnects"):
        assert header in screen, header
    rows = [line for line in screen.splitlines() if "binance/0" in line and "streaming" in line]
    assert rows, screen[-2000:]
    # the console sink's records scroll above the table
    assert " trade " in screen


def test_no_table_when_piped(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamkit.cli",
            "run",
            str(REPO / "examples" / "demo.yaml"),
            "--duration",
            "2",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert "msgs/s" not in result.stdout + result.stderr
