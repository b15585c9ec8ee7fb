"""The result of a conformance run: what was seen, and every broken rule."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import TypeVar

from streamkit.feed import (
    HttpGet,
    Reconnect,
    ResyncBook,
    Send,
    Stream,
)
from streamkit.model import (
    Record,
    type_name,
)

R = TypeVar("R", bound=Record)


@dataclass(frozen=True)
class Violation:
    """One broken rule: ``check`` names the rule, ``detail`` says where and what."""

    check: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.check}] {self.detail}"


@dataclass(frozen=True)
class FrameError:
    """A replayed frame that raised: its position, an excerpt, and the exception."""

    index: int
    excerpt: bytes
    error: str


@dataclass
class ConformanceReport:
    """What :func:`check_feed` saw. ``ok`` is True when there is no violation."""

    feed_id: str
    frames: int = 0
    data_frames: int = 0
    records: list[Record] = field(default_factory=list)
    http_requests: list[HttpGet] = field(default_factory=list)
    unanswered_http: list[HttpGet] = field(default_factory=list)
    sends: list[Send] = field(default_factory=list)
    reconnects: list[Reconnect] = field(default_factory=list)
    resyncs: list[ResyncBook] = field(default_factory=list)
    acks: list[str] = field(default_factory=list)
    unsubscribed_streams: list[Stream] = field(default_factory=list)
    """Planned streams no subscribe message carries (e.g. channels a venue serves over REST)."""
    frame_errors: list[FrameError] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def counts(self) -> dict[str, int]:
        """Records produced, by type name (``{"trade": 3, "book": 10, ...}``)."""
        return dict(collections.Counter(type_name(type(r)) for r in self.records))

    def of_type(self, cls: type[R]) -> list[R]:
        """The records of one type, in order."""
        return [r for r in self.records if isinstance(r, cls)]

    def summary(self) -> str:
        head = (
            f"{self.feed_id}: {self.frames} frames ({self.data_frames} data), "
            f"records {self.counts}, {len(self.http_requests)} HTTP requests, "
            f"{len(self.violations)} violation(s)"
        )
        return "\n".join([head, *(f"  - {v}" for v in self.violations)])
