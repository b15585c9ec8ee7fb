"""Checksum-verified book updates through the OKX and Kraken plugins, against their reference
checksum functions in the same run.

    python bench/checksums.py [--passes 20]

For each venue, the captured book updates (src/streamkit/simulator/data/<venue>.jsonl, after
each group's snapshot) go through the plugin's ``on_message`` in three set-ups, one core:

- ``reference``: the plugin with its checksum replaced by the plain reference function
  (``okx_checksum``, ``book_checksum``), which renders every top level on every update;
- ``streamkit``: the plugin as shipped (``CachedChecksum``: a level's text is rendered once
  per price and size object, :class:`streamkit.book.LevelTexts`);
- ``no checksum``: verification off, the floor of what the rest of an update costs.

Each row is the best of five runs of ``--passes`` passes over the capture (CPU time per
update). Checks: every update is published as a verified ``Book`` record (no gap, mismatch
or resync status) in every set-up, and the final books are identical across set-ups.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

from streamkit.config import FeedConfig
from streamkit.feed import FeedProtocol, Output
from streamkit.model import Book

Setup = Callable[[FeedProtocol], None]


def capture(venue: str) -> list[dict[str, Any]]:
    text = (resources.files("streamkit.simulator") / "data" / f"{venue}.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def okx() -> tuple[Callable[[], FeedProtocol], list[list[bytes]], dict[str, Setup]]:
    from streamkit_okx import OkxFeed
    from streamkit_okx.checksum import okx_checksum

    groups = ["okx-books-BTC-USD-220527", "okx-books-UNI-USD-SWAP", "okx-books-BTC-USDT"]
    rows = capture("okx")
    frames = [[r["raw"].encode() for r in rows if r.get("group") == g] for g in groups]

    def protocol() -> FeedProtocol:
        cfg = FeedConfig(
            exchange="okx",
            symbols=["BTC-USD-220527", "UNI-USD-PERP", "BTC-USDT"],
            channels=["l2_book"],
        )
        feed = OkxFeed(cfg, url="ws://bench")
        [plan] = feed.plan()
        p = feed.protocol(plan, "okx/0")
        p.subscriptions()
        return p

    def reference(p: Any) -> None:
        for sync in p.books.values():
            sync.checksum = okx_checksum

    def none(p: Any) -> None:
        for sync in p.books.values():
            sync.checksum = None

    return protocol, frames, {"reference": reference, "streamkit": lambda p: None, "none": none}


def kraken() -> tuple[Callable[[], FeedProtocol], list[list[bytes]], dict[str, Setup]]:
    from streamkit_kraken import KrakenFeed
    from streamkit_kraken.checksum import book_checksum

    rows = capture("kraken")
    group = "kraken-v2-book10-BTC/USD-pks"
    frames = [[r["raw"].encode() for r in rows if r.get("group") == group]]

    def protocol() -> FeedProtocol:
        cfg = FeedConfig(
            exchange="kraken", symbols=["BTC-USD"], channels=["l2_book"], book_depth=10
        )
        feed = KrakenFeed(cfg, url="ws://bench/v2")
        [plan] = feed.plan()
        return feed.protocol(plan, "kraken/0")

    def reference(p: Any) -> None:
        for d in p.books.values():
            d.sync.checksum = lambda book, d=d: book_checksum(book, d.precision)

    def none(p: Any) -> None:
        for d in p.books.values():
            d.sync.checksum = None

    return protocol, frames, {"reference": reference, "streamkit": lambda p: None, "none": none}


def run(
    make: Callable[[], FeedProtocol], frames: list[list[bytes]], setup: Setup, passes: int
) -> tuple[float, list[str], Any]:
    """(µs per update, problems, final books) of one set-up: best of five runs."""
    best = float("inf")
    problems: list[str] = []
    books: Any = None
    for _ in range(5):
        protocol = make()
        setup(protocol)
        out = Output()
        n = 0
        spent = 0.0
        for _ in range(passes):
            for group in frames:
                protocol.on_message(group[0], 0, out)  # the snapshot, untimed
                out.clear()
                started = time.process_time()
                for frame in group[1:]:
                    protocol.on_message(frame, 0, out)
                spent += time.process_time() - started
                n += len(group) - 1
                published = sum(1 for r in out.records if isinstance(r, Book))
                others = [r for r in out.records if not isinstance(r, Book)]
                if published != len(group) - 1 or others:
                    problems.append(
                        f"{published} of {len(group) - 1} updates published, "
                        f"{len(others)} other records (e.g. {others[:1]})"
                    )
                out.clear()
        best = min(best, spent / n * 1e6)
        books = {
            symbol: (dict(b.book.bids), dict(b.book.asks))
            for symbol, b in getattr(protocol, "books", {}).items()
        }
    return best, problems[:3], books


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=20)
    args = parser.parse_args()
    failed = False
    print(f"{'venue':<8} {'set-up':<12} {'us/update':>10} {'vs reference':>13}  check")
    for venue, build in (("okx", okx), ("kraken", kraken)):
        make, frames, setups = build()
        results = {name: run(make, frames, setup, args.passes) for name, setup in setups.items()}
        base = results["reference"][0]
        final = results["reference"][2]
        for name, (us, problems, books) in results.items():
            if books != final:
                problems = [*problems, "final books differ from the reference set-up's"]
            failed |= bool(problems)
            check = "ok" if not problems else "FAIL " + "; ".join(problems)
            print(f"{venue:<8} {name:<12} {us:>10.2f} {us / base:>12.2f}x  {check}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
