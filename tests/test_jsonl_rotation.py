"""The jsonl sink's rotation by size and time, and zstd compression."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from brokers import trades

from streamkit.channel import Bus
from streamkit.config import JsonlSinkConfig
from streamkit.model import Record, decode_json
from streamkit.sinks.base import subscribe_sink
from streamkit.sinks.files import read_lines
from streamkit.sinks.jsonl import JsonlSink


async def run_sink(
    cfg: JsonlSinkConfig, batches: list[list[Record]], pause: float = 0
) -> JsonlSink:
    bus = Bus()
    sink = JsonlSink("jsonl-test", cfg)
    task = asyncio.create_task(sink.run(subscribe_sink(bus, sink.name, cfg)))
    for batch in batches:
        await bus.publish_many(batch)
        await asyncio.sleep(pause)
    bus.close()
    await asyncio.wait_for(task, 10)
    return sink


def read_all(files: list[Path]) -> list[Any]:
    return [decode_json(line) for f in files for line in read_lines(f)]


async def test_plain_file_is_unchanged_contract(tmp_path: Path) -> None:
    records: list[Record] = list(trades(10))
    sink = await run_sink(JsonlSinkConfig(path=str(tmp_path / "out.jsonl")), [records])
    assert sink.writer.files == [tmp_path / "out.jsonl"]
    assert read_all([tmp_path / "out.jsonl"]) == records


async def test_size_rotation_with_zstd(tmp_path: Path) -> None:
    pytest.importorskip("zstandard")
    records: list[Record] = list(trades(3000))
    cfg = JsonlSinkConfig(
        path=str(tmp_path / "md" / "trades.jsonl"), rotate_bytes=50_000, compression="zstd"
    )
    chunks = [records[i : i + 100] for i in range(0, len(records), 100)]
    sink = await run_sink(cfg, chunks)
    files = sink.writer.files
    assert len(files) >= 2  # rotation happens at flushes (every 256 KiB or flush_interval)
    assert all(f.name.startswith("trades.") and f.name.endswith(".jsonl.zst") for f in files)
    assert sorted(files) == files  # names sort in time order
    assert sorted(p.name for p in (tmp_path / "md").iterdir()) == [f.name for f in files]
    assert read_all(files) == records  # every record once, in order, no line split
    assert all(f.read_bytes()[:4] == b"\x28\xb5\x2f\xfd" for f in files)  # zstd magic


async def test_time_rotation(tmp_path: Path) -> None:
    records: list[Record] = list(trades(40))
    cfg = JsonlSinkConfig(path=str(tmp_path / "t.jsonl"), rotate_interval=0.1, flush_interval=0.02)
    sink = await run_sink(cfg, [records[i : i + 10] for i in range(0, 40, 10)], pause=0.15)
    assert len(sink.writer.files) >= 2
    assert read_all(sink.writer.files) == records


async def test_compressed_file_appends_across_runs(tmp_path: Path) -> None:
    pytest.importorskip("zstandard")
    cfg = JsonlSinkConfig(path=str(tmp_path / "a.jsonl"), compression="zstd")
    first, second = trades(5), trades(5, start=5)
    await run_sink(cfg, [list(first)])
    sink = await run_sink(cfg, [list(second)])
    assert sink.writer.files == [tmp_path / "a.jsonl.zst"]
    assert read_all(sink.writer.files) == [*first, *second]


async def test_a_sink_that_cannot_write_fails_instead_of_swallowing_records(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A write error (disk full, permissions) must surface to the supervisor, not be held
    silently by the periodic flusher while the sink keeps taking records."""
    import asyncio as _asyncio

    from streamkit.channel import Bus
    from streamkit.config import JsonlSinkConfig
    from streamkit.sinks.jsonl import JsonlSink

    sink = JsonlSink("broken", JsonlSinkConfig(path=str(tmp_path / "x.jsonl"), flush_interval=0.05))

    def failing_write(data: object) -> None:
        raise OSError(28, "No space left on device")

    sink.writer.write = failing_write  # type: ignore[method-assign]
    bus = Bus()
    sub = bus.subscribe(maxsize=100)
    task = _asyncio.create_task(sink.run(sub))
    from decimal import Decimal

    from streamkit.model import Trade

    await bus.publish(
        Trade(
            exchange="x",
            symbol="A-B",
            ts=None,
            recv_ts=1,
            price=Decimal(1),
            size=Decimal(1),
            side="buy",
            id="1",
        )
    )
    import pytest as _pytest

    with _pytest.raises(OSError, match="No space left"):
        await _asyncio.wait_for(task, 2)
