"""The example plugin in examples/custom_feed: it conforms, and its own test passes.

The example is not installed: its folder is put on sys.path here, which is all a plugin
needs to be imported (installing it only adds the entry point that config files use).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from streamkit.config import FeedConfig
from streamkit.feed import Output
from streamkit.model import Book, Status
from streamkit.testing import check_feed

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "custom_feed"
if str(EXAMPLE) not in sys.path:
    sys.path.insert(0, str(EXAMPLE))

from streamkit_example import ExampleXFeed  # noqa: E402


def load_example_test() -> ModuleType:
    path = EXAMPLE / "tests" / "test_examplex.py"
    spec = importlib.util.spec_from_file_location("examplex_example_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_examples_own_test_passes() -> None:
    load_example_test().test_examplex_conforms()


def test_example_conforms_and_its_pyproject_registers_it() -> None:
    frames = load_example_test().FRAMES
    report = check_feed(
        ExampleXFeed,
        frames,
        symbols=["BTC-USD", "ETH-USD-PERP"],
        channels=["trades", "bbo", "l2_book"],
        plan_symbols=[f"C{i}-USD" for i in range(40)],  # 120 streams: 3 connections
    )
    assert report.ok, report.summary()
    assert report.data_frames == 7
    pyproject = (EXAMPLE / "pyproject.toml").read_text()
    assert '[project.entry-points."streamkit.feeds"]' in pyproject
    assert 'examplex = "streamkit_example:ExampleXFeed"' in pyproject


def test_example_plans_and_subscribes_within_limits() -> None:
    symbols = [f"C{i}-USD" for i in range(40)]
    cfg = FeedConfig(exchange="examplex", symbols=symbols, channels=["trades", "bbo", "l2_book"])
    feed = ExampleXFeed(cfg)
    plans = feed.plan()
    assert [len(p.streams) for p in plans] == [42, 42, 36]  # whole symbols, <= 50 each
    requests = feed.protocol(plans[0], "examplex/0").subscriptions()
    assert [len(r.streams) for r in requests] == [10, 10, 10, 10, 2]
    first = json.loads(requests[0].payload)
    assert first == {"op": "subscribe", "args": first["args"], "id": 1}
    assert first["args"][:3] == ["trades.C0_USD", "bbo.C0_USD", "book.C0_USD"]


def test_example_drops_updates_until_the_resync_snapshot() -> None:
    cfg = FeedConfig(exchange="examplex", symbols=["BTC-USD"], channels=["l2_book"])
    feed = ExampleXFeed(cfg)
    [plan] = feed.plan()
    protocol = feed.protocol(plan, "examplex/0")
    out = Output()

    def book(action: str, seq: int, prev: int | None) -> bytes:
        return json.dumps(
            {
                "type": "book",
                "symbol": "BTC_USD",
                "action": action,
                "seq": seq,
                "prev_seq": prev,
                "bids": [["100", "1"]],
                "asks": [["101", "1"]],
                "ts": 1700000000000,
            }
        ).encode()

    for i, frame in enumerate([book("snapshot", 1, None), book("update", 3, 2)]):
        protocol.on_message(frame, i, out)
    assert [type(r) for r in out.records] == [Book, Status, Status]
    out.clear()
    protocol.on_message(book("update", 4, 3), 9, out)  # chained to the gap: still dropped
    assert out.records == []
    protocol.on_message(book("snapshot", 10, None), 10, out)
    protocol.on_message(book("update", 11, 10), 11, out)
    assert [(r.snapshot, r.seq) for r in out.records if isinstance(r, Book)] == [
        (True, 10),
        (False, 11),
    ]
    assert not [r for r in out.records if isinstance(r, Status)]


@pytest.mark.parametrize("symbol", ["BTC-USD", "ETH-USD-PERP", "1INCH-USDT"])
def test_example_symbols_round_trip(symbol: str) -> None:
    feed = ExampleXFeed(FeedConfig(exchange="examplex", symbols=[symbol], channels=["trades"]))
    assert feed.normalize_symbol(feed.exchange_symbol(symbol)) == symbol
    assert not feed.check()


def test_example_rejects_foreign_symbols() -> None:
    cfg = FeedConfig(exchange="examplex", symbols=["BTC-USD-231229"], channels=["trades"])
    assert [key for key, _ in ExampleXFeed(cfg).check()] == ["symbols[0]"]
