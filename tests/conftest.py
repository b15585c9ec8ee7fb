"""Shared test helpers: the captured Binance frames shipped with the simulator."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest


def load_binance_capture() -> list[dict[str, Any]]:
    """Rows of the real Binance spot capture that the package ships for its simulator."""
    text = (resources.files("streamkit.simulator") / "data" / "binance_spot.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def binance_capture() -> list[dict[str, Any]]:
    return load_binance_capture()
