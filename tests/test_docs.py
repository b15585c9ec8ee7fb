"""The docs site builds with ``mkdocs build --strict``, and its generated reference pages
cover every config key and every record type."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import msgspec
import pytest

from streamkit.config import AppConfig
from streamkit.model import RECORD_TYPES

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _load(name: str) -> ModuleType:
    """Import a generator from docs/ the way the mkdocs hook does (docs/ on sys.path)."""
    if str(DOCS) not in sys.path:
        sys.path.insert(0, str(DOCS))
    return importlib.import_module(name)


def _struct_fields(cls: type[msgspec.Struct]) -> Iterator[tuple[type, str]]:
    """(Struct, field name) for every field reachable from ``cls``."""
    import msgspec.inspect as mi

    seen: set[type] = set()
    todo: list[type[msgspec.Struct]] = [cls]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        info = mi.type_info(current)
        assert isinstance(info, mi.StructType)
        for f in info.fields:
            yield current, f.name
            todo.extend(_nested(f.type))


def _nested(t: object) -> list[type[msgspec.Struct]]:
    import msgspec.inspect as mi

    if isinstance(t, mi.StructType):
        return [t.cls]
    if isinstance(t, mi.Metadata):
        return _nested(t.type)
    if isinstance(t, mi.UnionType):
        return [c for x in t.types for c in _nested(x)]
    if isinstance(t, mi.ListType):
        return _nested(t.item_type)
    return []


def test_config_reference_documents_every_key_of_every_section() -> None:
    page = _load("gen_config_reference").render()
    sections = page.split("\n## ")
    for struct, name in _struct_fields(AppConfig):
        assert any(f"| `{name}` |" in s for s in sections), f"{struct.__name__}.{name} missing"
    # One section per Struct, linked from the keys that hold it.
    assert "## `derived.book_snapshots` {#derived-book-snapshots}" in page
    assert "[BookSnapshotsConfig](#derived-book-snapshots)" in page
    assert "| `depth` | int ≥ 1 | `10` | levels per side in each snapshot. |" in page


def test_record_schema_lists_every_record_type() -> None:
    page = _load("gen_record_schema").render()
    for tag, cls in RECORD_TYPES.items():
        assert f"## `{tag}` ({cls.__name__})" in page
    assert "| `bid_exchange` | str \\| null | required |" in page


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install '.[docs]')")
    pytest.importorskip("material", reason="mkdocs-material is not installed ('.[docs]')")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    config_page = (tmp_path / "site" / "configuration" / "index.html").read_text()
    # The generated reference made it into the built page (the hook ran).
    assert "recv_queue_size" in config_page and "book_snapshots" in config_page
    assert "nbbo" in (tmp_path / "site" / "records" / "index.html").read_text()
