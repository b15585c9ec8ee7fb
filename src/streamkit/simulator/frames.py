"""Re-rendering captured JSON payloads with a few integer fields changed, without re-serialising.

A replayed frame must keep every byte the venue sent (key order, number formatting, string
prices) except the fields the simulator rewrites: event times and ids. Parsing and re-encoding
would normalise the text, and is slower than splicing: a :class:`FrameTemplate` cuts the
captured text once around those fields and renders by joining the pieces.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

# `"key":<integer>`. Inside a JSON string a quote is always escaped, so this cannot match in a
# string value; Binance payload keys are unique within each object, and the simulator only
# templates keys that occur once per frame (the first occurrence is used).
_INT_FIELD: Final = re.compile(r'"(\w+)":(-?\d+)')


class FrameTemplate:
    """A captured JSON payload whose named integer fields can be replaced.

    ``values`` holds the captured value of each templated field and ``text`` the captured
    payload; ``render({})`` returns ``text`` unchanged.
    """

    __slots__ = ("_chunks", "_slots", "text", "values")

    def __init__(self, text: str, fields: Iterable[str]) -> None:
        wanted = set(fields)
        chunks: list[str] = []
        slots: list[str] = []
        values: dict[str, int] = {}
        pos = 0
        for match in _INT_FIELD.finditer(text):
            name = match.group(1)
            if name in wanted and name not in values:
                chunks.append(text[pos : match.start(2)])
                slots.append(name)
                values[name] = int(match.group(2))
                pos = match.end(2)
        chunks.append(text[pos:])
        missing = wanted - values.keys()
        if missing:
            raise ValueError(f"integer field(s) {sorted(missing)} not found in {text[:80]!r}")
        self.text = text
        self.values: Mapping[str, int] = values
        self._chunks = tuple(chunks)
        self._slots = tuple(slots)

    def render(self, changes: Mapping[str, int]) -> str:
        """The payload with ``changes`` applied; fields not in ``changes`` keep their value."""
        parts: list[str] = []
        for chunk, name in zip(self._chunks, self._slots, strict=False):
            parts.append(chunk)
            value = changes.get(name)
            parts.append(str(self.values[name] if value is None else value))
        parts.append(self._chunks[-1])
        return "".join(parts)
