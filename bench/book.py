"""Order-book engine throughput: 1.4 KB Binance depth updates (20 bid + 20 ask levels) decoded,
applied and verified through the Binance plugin and the shared BookSync, on one core.

    python bench/book.py [--updates 50000]

Baseline measured in the same run: ``msgspec.json.decode`` of the same frames into plain
Python objects (no exact decimals, no book). The run fails unless every update was published
as a verified Book record and the final book equals an independent dict model.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from decimal import Decimal

import msgspec

from streamkit.config import FeedConfig
from streamkit.feed import HttpGet, Output
from streamkit.model import Book
from streamkit_binance import BinanceFeed

TARGET = 30_000  # issue 5: applied and verified, updates per second on one core


def make_frames(n: int, seed: int = 7) -> tuple[bytes, list[bytes]]:
    rng = random.Random(seed)
    mid = 30_000.0

    def level(side: int, i: int) -> list[str]:
        price = mid - side * (0.5 + i * 0.5)
        return [f"{price:.2f}", f"{rng.choice([0, 0.125, 0.5, 1.25, 3.0]):.8f}"]

    snap = {
        "lastUpdateId": 1001,  # the first diff (U=1001, u=1003) straddles it
        "bids": [level(1, i) for i in range(1000)],
        "asks": [level(-1, i) for i in range(1000)],
    }
    for side in ("bids", "asks"):
        snap[side] = [lv for lv in snap[side] if float(lv[1]) > 0]
    frames = []
    u = 1000
    for _ in range(n):
        data = {
            "e": "depthUpdate",
            "E": 1_700_000_000_000,
            "s": "BTCUSDT",
            "U": u + 1,
            "u": u + 3,
            "b": [level(1, rng.randint(0, 120)) for _ in range(20)],
            "a": [level(-1, rng.randint(0, 120)) for _ in range(20)],
        }
        u += 3
        frames.append(
            json.dumps(
                {"stream": "btcusdt@depth@100ms", "data": data}, separators=(",", ":")
            ).encode()
        )
    return json.dumps(snap).encode(), frames


def model(snapshot: bytes, frames: list[bytes]) -> dict[str, dict[Decimal, Decimal]]:
    snap = json.loads(snapshot)
    book = {s: {Decimal(p): Decimal(q) for p, q in snap[s]} for s in ("bids", "asks")}
    for frame in frames:
        d = json.loads(frame)["data"]
        for side, key in (("bids", "b"), ("asks", "a")):
            for p, q in d[key]:
                if Decimal(q) == 0:
                    book[side].pop(Decimal(p), None)
                else:
                    book[side][Decimal(p)] = Decimal(q)
    return book


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=50_000)
    args = parser.parse_args()
    snapshot, frames = make_frames(args.updates)
    size = sum(map(len, frames)) / len(frames)

    decoder = msgspec.json.Decoder()
    started = time.process_time()
    for frame in frames:
        decoder.decode(frame)
    base = len(frames) / (time.process_time() - started)

    cfg = FeedConfig(exchange="binance", symbols=["BTC-USDT"], channels=["l2_book"])
    feed = BinanceFeed(cfg, url="ws://bench/stream", rest_url="http://bench")
    [plan] = feed.plan()
    protocol = feed.protocol(plan, "binance/0")
    out = Output()
    protocol.on_message(frames[0], 0, out)  # starts the sync: asks for the snapshot
    [request] = [a for a in out.actions if isinstance(a, HttpGet)]
    out.clear()
    protocol.on_http(request, 200, snapshot, 0, out)
    published = sum(1 for r in out.records if isinstance(r, Book))
    out.clear()
    started = time.process_time()
    for frame in frames[1:]:
        protocol.on_message(frame, 0, out)
        published += len(out.records)
        out.records.clear()
    ours = (len(frames) - 1) / (time.process_time() - started)

    sync = protocol.books["BTC-USDT"]
    want = model(snapshot, frames)
    problems = []
    if published != len(frames) + 1:  # the snapshot + every diff (the first straddles it)
        problems.append(f"published {published} book records for {len(frames)} updates")
    if dict(sync.book.bids) != want["bids"] or dict(sync.book.asks) != want["asks"]:
        problems.append("final book differs from the independent model")
    print(f"depth updates of {size:.0f} bytes (20 bid + 20 ask levels), one core")
    print(f"  msgspec decode to plain objects (baseline)  {base:>10,.0f} updates/s")
    print(f"  streamkit decode + apply + verify           {ours:>10,.0f} updates/s")
    print(
        f"  ratio to baseline {ours / base:.2f}x; target {TARGET:,}/s: "
        f"{'met' if ours >= TARGET else 'MISSED'} ({ours / TARGET:.2f}x)"
    )
    if problems:
        print("FAILED:", *problems, sep="\n  ")
        return 1
    print("checks: every update published as a verified book record; final book matches")
    return 0


if __name__ == "__main__":
    sys.exit(main())
