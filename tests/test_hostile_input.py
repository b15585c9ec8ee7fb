"""Hostile config files and command lines: each gets one clear error that names the problem,
exit code 1 (2 for command-line usage), and never a traceback.

Most cases call ``streamkit.cli.main`` in-process (fast; an unexpected exception would fail the
test with its traceback); one test runs the real command on the nastiest inputs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamkit.cli import main

GOOD_FEED = "feeds: [{exchange: binance, symbols: [BTC-USDT], channels: [trades]}]\n"

BOMB = b"""
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
feeds: *g
"""

CASES: dict[str, tuple[bytes, str]] = {
    "unknown_top_key": (GOOD_FEED.encode() + b"sinkz: []\n", "sinkz: unknown key"),
    "unknown_nested_key": (
        b"feeds: [{exchange: binance, symbols: [BTC-USDT], channels: [trades],"
        b" transport: {verfy: false}}]\n",
        "feeds[0].transport.verfy: unknown key (did you mean 'verify'?)",
    ),
    "wrong_type": (
        b"feeds: [{exchange: binance, symbols: BTC-USDT, channels: [trades]}]\n",
        "feeds[0].symbols: Expected `array`, got `str`",
    ),
    "wrong_type_number": (
        GOOD_FEED.encode() + b"supervision: {max_restarts: lots}\n",
        "supervision.max_restarts: Expected `int`, got `str`",
    ),
    "negative": (
        GOOD_FEED.encode() + b"supervision: {max_restarts: -1}\n",
        "supervision.max_restarts: Expected `int` >= 0",
    ),
    "empty": (b"", "the config is empty"),
    "only_comments": (b"# nothing here\n\n", "the config is empty"),
    "top_level_list": (b"- 1\n- 2\n", "the top level must be a mapping"),
    "top_level_scalar": (b"just a string\n", "the top level must be a mapping"),
    "invalid_yaml": (b"feeds: [unclosed\n", "invalid YAML"),
    "tab_indent": (b"feeds:\n\t- exchange: binance\n", "invalid YAML"),
    "nul_byte": (b"feeds: \x00\n", "invalid YAML"),
    "non_utf8": (b"feeds: [\xff\xfe\x80]\n", "not UTF-8 text (bad byte at offset 8)"),
    "latin1": ("feeds: [{name: café}]\n".encode("latin-1"), "not UTF-8 text"),
    "alias_bomb": (BOMB, "YAML aliases (*name) are not allowed"),
    "deep_flow_nesting": (b"feeds: " + b"[" * 20_000 + b"]" * 20_000, "nested too deeply"),
    "deep_block_nesting": (
        b"".join(b"  " * i + b"k:\n" for i in range(800)),
        "nested too deeply",
    ),
    "huge_file": (b"# " + b"x" * (1024 * 1024 + 10) + b"\n", "configs are limited to 1 MiB"),
    "unset_env": (
        b"feeds: [{exchange: binance, symbols: [BTC-USDT], channels: [trades],"
        b' url: "${STREAMKIT_HOSTILE_UNSET}"}]\n',
        "feeds[0].url: environment variable STREAMKIT_HOSTILE_UNSET is not set",
    ),
    "unknown_exchange": (
        b"feeds: [{exchange: nosuch, symbols: [BTC-USDT], channels: [trades]}]\n",
        "feeds[0].exchange: no feed plugin 'nosuch'",
    ),
}


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("case", list(CASES))
def test_hostile_config_files(
    case: str, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    content, expected = CASES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_bytes(content)
    os.environ.pop("STREAMKIT_HOSTILE_UNSET", None)
    assert main([command, str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: invalid config"), err
    assert expected in err, err
    assert "Traceback" not in err
    assert len(err) < 2000, "one clear error, not a dump"


def test_special_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)  # nobody writes: opening it for reading would block forever
    cases = {
        str(tmp_path): "is a directory",
        str(fifo): "not a regular file",
        "/dev/zero": "not a regular file",
        str(tmp_path / "missing.yaml"): "no such file",
        str(tmp_path / "missing" / "deeper.yaml"): "no such file",
    }
    for path, expected in cases.items():
        assert main(["validate", path]) == 1, path
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err, (path, err)


@pytest.mark.parametrize(
    "argv",
    [
        ["run"],
        ["run", "x.yaml", "--duration", "-1"],
        ["run", "x.yaml", "--duration", "soon"],
        ["run", "x.yaml", "--duration", "nan"],
        ["run", "x.yaml", "--log-format", "xml"],
        ["explode"],
        ["simulate", "--rate", "0"],
        ["simulate", "--port", "http"],
    ],
)
def test_bad_command_lines_are_usage_errors(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: streamkit" in err and "error:" in err and "Traceback" not in err


def test_the_real_command_on_the_nastiest_inputs(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    bomb = tmp_path / "bomb.yaml"
    bomb.write_bytes(BOMB)
    deep = tmp_path / "deep.yaml"
    deep.write_bytes(b"feeds: " + b"[" * 100_000 + b"]" * 100_000)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)) * 64)
    for path in (fifo, bomb, deep, binary, tmp_path):
        result = subprocess.run(
            [sys.executable, "-m", "streamkit.cli", "run", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 1, (path, result.stderr[-2000:])
        assert result.stderr.startswith("error: invalid config"), result.stderr[-2000:]
        assert "Traceback" not in result.stderr
