"""Record a simulator session's raw frames, replay them through the plugin, and get the same
records as live."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import msgspec
import pytest

from streamkit.app import App
from streamkit.channel import SubscriptionClosed
from streamkit.config import JsonlSinkConfig, parse_config
from streamkit.model import BBO, Book, Record, Status, StatusEvent, Trade, decode_json
from streamkit.record import FrameRecorder
from streamkit.replay import merged_events, recording_files, replay, run_replay
from streamkit.simulator import BinanceSimulator

pytest.importorskip("zstandard")

ACTOR_EVENTS = {
    StatusEvent.CONNECTED,
    StatusEvent.SUBSCRIBED,
    StatusEvent.DISCONNECTED,
    StatusEvent.RECONNECTING,
    StatusEvent.STALE,
    StatusEvent.ERROR,
}


def comparable(records: list[Record]) -> list[Record]:
    """What the plugin produced (not the actor's lifecycle statuses), recv_ts zeroed."""
    return [
        msgspec.structs.replace(r, recv_ts=0)
        for r in records
        if not (isinstance(r, Status) and r.event in ACTOR_EVENTS)
    ]


async def record_session(directory: Path, **recorder_kw: object) -> list[Record]:
    """Run the App against a replay-once simulator, recording; return what it published."""
    sim = BinanceSimulator(rate=300.0, replay_once=True)
    await sim.start()
    try:
        cfg = parse_config(
            f"""
feeds:
  - exchange: binance
    url: {sim.ws_url}
    rest_url: {sim.rest_url}
    symbols: [NKN-USDT]
    channels: [trades, bbo, l2_book]
"""
        )
        app = App(cfg)
        live = app.stream(maxsize=100_000)
        recorder = FrameRecorder(directory, flush_interval=0.05, **recorder_kw)  # type: ignore[arg-type]
        await app.start()
        recorder.attach(app)
        # replay_once sends the capture (150 depth updates, bbo, trades) once: wait for it.
        seen: list[Record] = []
        deadline = time.monotonic() + 15
        while sum(isinstance(r, Book) for r in seen) < 100 and time.monotonic() < deadline:
            seen.extend(live.drain_nowait())
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        await app.stop()
        await recorder.close()
    finally:
        await sim.stop()
    with contextlib.suppress(SubscriptionClosed):
        seen.extend(live.drain_nowait())
    return seen


async def test_replay_gives_the_live_records(tmp_path: Path) -> None:
    live = await record_session(tmp_path / "rec")
    files = recording_files([tmp_path / "rec"])
    assert files and all(f.name.endswith(".frames.jsonl.zst") for f in files)
    kinds = [type(e).__name__ for e in merged_events(files)]
    assert kinds[0] == "FeedHeader" and "OpenEvent" in kinds and "HttpEvent" in kinds

    replayed = [r async for batch in replay(files, speed=None) for r in batch]
    assert sum(isinstance(r, Book) for r in live) >= 100
    assert any(isinstance(r, BBO) for r in live) and any(isinstance(r, Trade) for r in live)
    assert comparable(replayed) == comparable(live)  # one to one, in order
    # Frame-borne records even keep their receive time.
    live_trades = [r for r in live if isinstance(r, Trade)]
    assert [r for r in replayed if isinstance(r, Trade)] == live_trades


async def test_replay_paces_and_feeds_sinks(tmp_path: Path) -> None:
    live = await record_session(tmp_path / "rec", rotate_bytes=20_000)
    files = recording_files([tmp_path / "rec"])
    assert len(files) >= 2  # rotated: every segment carries its feed header
    out = tmp_path / "replayed.jsonl"
    stats = await run_replay(files, [JsonlSinkConfig(path=str(out))], speed=None)
    written = [decode_json(line) for line in out.read_bytes().splitlines()]
    assert stats["records"] == len(written)
    assert comparable(written) == comparable(live)

    events = list(merged_events(files))
    span = (events[-1].ts - events[0].ts) / 1e9
    started = time.monotonic()
    paced = [r async for batch in replay(files, speed=span / 0.3) for r in batch]
    assert time.monotonic() - started >= 0.25  # spread over ~0.3 s, not instantaneous
    assert comparable(paced) == comparable(live)
    with pytest.raises(ValueError):
        [r async for batch in replay(files, speed=0) for r in batch]
