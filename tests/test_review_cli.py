"""Review finding: ``streamkit run`` with a port already taken (simulator or metrics) printed
a traceback; it must print one clear line and exit 1."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from streamkit.cli import main


def test_run_with_a_busy_port_prints_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = tmp_path / "busy.yaml"
        config.write_text(
            f"""
simulator: {{port: {port}}}
feeds:
  - exchange: binance
    url: simulator
    symbols: [NKN-USDT]
    channels: [trades]
"""
        )
        code = main(["run", str(config), "--duration", "1", "--no-live"])
    err = capsys.readouterr().err
    assert code == 1
    assert "error: cannot start" in err and "address already in use" in err
    assert "Traceback" not in err
