"""streamkit.runtime: uvloop when installed, plain asyncio on request or without it."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from streamkit import runtime

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_forced_asyncio_runs_on_the_standard_loop() -> None:
    assert runtime.loop_name("asyncio") == "asyncio"
    assert runtime.run(_loop_module(), loop="asyncio").startswith("asyncio")


def test_default_prefers_uvloop_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMKIT_LOOP", raising=False)
    expected = "uvloop" if HAVE_UVLOOP else "asyncio"
    assert runtime.loop_name() == expected
    assert runtime.run(_loop_module()).startswith(expected)


def test_environment_choice_and_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMKIT_LOOP", "asyncio")
    assert runtime.loop_name() == "asyncio"
    monkeypatch.setenv("STREAMKIT_LOOP", "trio")
    with pytest.raises(ValueError, match="STREAMKIT_LOOP"):
        runtime.loop_name()


def test_run_returns_the_result_and_propagates_errors() -> None:
    async def boom() -> None:
        raise KeyError("x")

    async def answer() -> int:
        return 42

    assert runtime.run(answer()) == 42
    with pytest.raises(KeyError):
        runtime.run(boom())
