"""Line-oriented output files with rotation by size/time and optional zstd compression.

Used by the ``jsonl`` sink and by the frame recorder. Naming:

- no rotation: exactly ``path`` (``+ ".zst"`` when compressed and not already so named),
  appended to across runs (a compressed file then holds several zstd frames, which every
  zstd reader decodes as one stream);
- with rotation: one file per segment, ``<stem>.<UTC start time>Z<suffixes>``, e.g.
  ``trades.20240101T120000123456Z.jsonl.zst``; names sort in time order.

Rotation happens only between ``write`` calls, so a caller that writes whole lines never has
a line split across two files. ``rotate_bytes`` counts uncompressed bytes.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import IO, Any, Literal

Compression = Literal["none", "zstd"]


def _zstd() -> Any:
    try:
        import zstandard
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "zstd compression needs the 'zstandard' package: pip install 'streamkit[zstd]'"
        ) from exc
    return zstandard


class RotatingWriter:
    """Writes bytes to a sequence of files; see the module docstring."""

    def __init__(
        self,
        path: str | Path,
        *,
        rotate_bytes: int | None = None,
        rotate_interval: float | None = None,
        compression: Compression = "none",
        level: int = 3,
        header: bytes = b"",
    ) -> None:
        self.base = Path(path)
        self.rotate_bytes = rotate_bytes
        self.rotate_interval = rotate_interval
        self.compression = compression
        self.level = level
        self.header = header
        """Written at the start of every file (e.g. a line describing what follows)."""
        self.files: list[Path] = []
        """Every file this writer opened, in order."""
        self._raw: IO[bytes] | None = None
        self._out: Any = None
        self._size = 0
        self._opened_at = 0.0

    @property
    def rotating(self) -> bool:
        return self.rotate_bytes is not None or self.rotate_interval is not None

    @property
    def current(self) -> Path | None:
        return self.files[-1] if self._out is not None else None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._out is not None and self._due():
            self.close()
        if self._out is None:
            self._open()
        self._out.write(data)
        self._size += len(data)

    def flush(self) -> None:
        """Push buffered data to the OS (for zstd: end the current block, so a reader sees
        every line written so far)."""
        if self._out is None:
            return
        if self.compression == "zstd":
            self._out.flush(_zstd().FLUSH_BLOCK)
        else:
            self._out.flush()
        if self._raw is not None:
            self._raw.flush()

    def close(self) -> None:
        """Finish the current file (for zstd: end the frame). Writing again opens the next
        file. Idempotent."""
        out, self._out = self._out, None
        raw, self._raw = self._raw, None
        if out is not None and self.compression == "zstd":
            out.flush(_zstd().FLUSH_FRAME)
        if raw is not None:
            raw.flush()
            raw.close()

    def _due(self) -> bool:
        if self.rotate_bytes is not None and self._size >= self.rotate_bytes:
            return True
        return (
            self.rotate_interval is not None
            and time.monotonic() - self._opened_at >= self.rotate_interval
        )

    def _next_path(self) -> Path:
        base = self.base
        suffix = ".zst" if self.compression == "zstd" and base.suffix != ".zst" else ""
        if not self.rotating:
            return base.with_name(base.name + suffix)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        name = base.name
        stem, dot, rest = name.partition(".")
        candidate = base.with_name(f"{stem}.{stamp}{dot}{rest}{suffix}")
        n = 1
        while candidate.exists() or candidate in self.files:
            candidate = base.with_name(f"{stem}.{stamp}-{n}{dot}{rest}{suffix}")
            n += 1
        return candidate

    def _open(self) -> None:
        path = self._next_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._raw = path.open("ab")
        if self.compression == "zstd":
            compressor = _zstd().ZstdCompressor(level=self.level)
            self._out = compressor.stream_writer(self._raw, closefd=False)
        else:
            self._out = self._raw
        self.files.append(path)
        self._size = 0
        self._opened_at = time.monotonic()
        if self.header:
            self._out.write(self.header)
            self._size += len(self.header)


def read_lines(path: str | Path) -> list[bytes]:
    """Every line of a file written by :class:`RotatingWriter` (``.zst`` decompressed)."""
    p = Path(path)
    data = p.read_bytes()
    if p.suffix == ".zst":
        import io

        reader = _zstd().ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
        data = reader.read()
    return data.splitlines()
