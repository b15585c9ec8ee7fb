"""Running streamkit's event loop: uvloop when it is installed, plain asyncio otherwise.

uvloop is an optional extra (``pip install streamkit[fast]``): streamkit behaves the same on
both loops, and uvloop makes the loop itself cheaper per wake-up, but not necessarily the
whole pipeline: on the bench machine the burst pipeline was slower on it (see
docs/benchmarks.md, "Runtime"), so measure with ``bench/run.py --loop uvloop``. Set
``STREAMKIT_LOOP=asyncio`` to force the standard loop (benchmarks compare against it), or
``STREAMKIT_LOOP=uvloop`` to require uvloop (an error if it is missing).
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import os
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

__all__ = ["LoopName", "loop_factory", "loop_name", "run"]

T = TypeVar("T")
LoopName = Literal["uvloop", "asyncio"]


def loop_name(prefer: str | None = None) -> LoopName:
    """The loop :func:`run` will use: ``prefer`` (or ``$STREAMKIT_LOOP``) if set, else uvloop
    when importable, else asyncio.

    Raises:
        ValueError: the preference is neither ``uvloop`` nor ``asyncio``.
        ModuleNotFoundError: uvloop was required but is not installed.
    """
    choice = (prefer or os.environ.get("STREAMKIT_LOOP") or "").strip().lower()
    if choice == "asyncio":
        return "asyncio"
    if choice not in ("", "uvloop"):
        raise ValueError(f"STREAMKIT_LOOP must be 'uvloop' or 'asyncio', not {choice!r}")
    try:
        importlib.import_module("uvloop")
    except ModuleNotFoundError:
        if choice == "uvloop":
            raise ModuleNotFoundError(
                "STREAMKIT_LOOP=uvloop but uvloop is not installed (pip install streamkit[fast])"
            ) from None
        return "asyncio"
    return "uvloop"


def loop_factory(prefer: str | None = None) -> Callable[[], asyncio.AbstractEventLoop]:
    """A zero-argument callable making a new event loop of the kind :func:`loop_name`
    picks (for ``asyncio.Runner(loop_factory=...)``)."""
    if loop_name(prefer) == "uvloop":
        uvloop = importlib.import_module("uvloop")
        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    return asyncio.new_event_loop


def run(
    main: Coroutine[Any, Any, T],
    *,
    loop: str | None = None,
    debug: bool = False,
    freeze_gc: bool = True,
) -> T:
    """Run ``main`` to completion on a fresh event loop (uvloop when available, see
    :func:`loop_name`) and close the loop; like :func:`asyncio.run` otherwise.

    ``freeze_gc`` (default) moves every object that exists before the loop starts (modules,
    classes, plugins, config: tens of thousands of them) to the garbage collector's permanent
    generation, so the full collections that a long-running stream eventually triggers do
    not traverse them again and again (measured: such a collection took ~19 ms, a latency
    spike for every message queued behind it)."""
    if freeze_gc:
        gc.collect()
        gc.freeze()
    with asyncio.Runner(debug=debug, loop_factory=loop_factory(loop)) as runner:
        return runner.run(main)
