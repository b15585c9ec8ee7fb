"""The captured Binance spot frames that ship with the simulator, indexed by symbol.

The data file ``data/binance_spot.jsonl`` is a subset of the repository's fixture capture (see
``data/README.md``): a live REST depth snapshot plus 150 live diffs for NKNUSDT (a cryptofeed
capture from October 2021), live ``bookTicker`` / ``aggTrade`` / ``kline_1m`` frames for NKNUSDT
and LRCBTC, and documentation examples (a BNBBTC ``trade``, ``serverShutdown``, control replies
and the error table).

Contract: every payload here is byte-exact what the venue (or its documentation) sent.
Combined-stream frames are unwrapped by slicing the text, never by re-serialising it, so
replaying an unchanged payload reproduces the capture byte for byte.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Final

import msgspec

DATA_FILE: Final = "data/binance_spot.jsonl"

_COMBINED_PREFIX: Final = '{"stream":"'
_COMBINED_DATA: Final = '","data":'


class CapturedRecord(msgspec.Struct, frozen=True):
    """One line of the data file: the fixture record format trimmed to the fields used."""

    kind: str
    raw: str
    symbol: str | None = None
    group: str | None = None
    provenance: str | None = None
    source: str | None = None


@dataclass(frozen=True, slots=True)
class SymbolCapture:
    """Everything captured for one symbol; each tuple holds raw payloads in arrival order.

    ``trade`` for NKNUSDT and LRCBTC is derived from their live ``aggTrade`` frames (each
    aggregate holds exactly one trade: ``f == l``), because the capture has no ``@trade``
    stream for them; the layout is the documented ``trade`` payload.
    """

    symbol: str
    snapshot: str | None = None
    depth: tuple[str, ...] = ()
    book_ticker: tuple[str, ...] = ()
    agg_trade: tuple[str, ...] = ()
    trade: tuple[str, ...] = ()
    kline: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Capture:
    """The whole data file: per-symbol captures plus the records themselves (for tests)."""

    symbols: Mapping[str, SymbolCapture]
    records: tuple[CapturedRecord, ...] = field(repr=False)


def unwrap_combined(raw: str) -> tuple[str | None, str]:
    """``{"stream":"x","data":P}`` -> ``("x", P)``, by slicing; other frames -> ``(None, raw)``."""
    if not raw.startswith(_COMBINED_PREFIX):
        return None, raw
    end = raw.index(_COMBINED_DATA)
    if not raw.endswith("}"):
        raise ValueError(f"not a combined-stream frame: {raw[:80]!r}")
    return raw[len(_COMBINED_PREFIX) : end], raw[end + len(_COMBINED_DATA) : -1]


def _trade_from_agg_trade(payload: str) -> str:
    agg = msgspec.json.decode(payload)
    trade = {
        "e": "trade",
        "E": agg["E"],
        "s": agg["s"],
        "t": agg["f"],
        "p": agg["p"],
        "q": agg["q"],
        "T": agg["T"],
        "m": agg["m"],
        "M": agg["M"],
    }
    return msgspec.json.encode(trade).decode()


@dataclass
class _Builder:
    symbol: str
    snapshot: str | None = None
    depth: list[str] = field(default_factory=list)
    book_ticker: list[str] = field(default_factory=list)
    agg_trade: list[str] = field(default_factory=list)
    trade: list[str] = field(default_factory=list)
    kline: list[str] = field(default_factory=list)

    def build(self) -> SymbolCapture:
        trades = self.trade or [_trade_from_agg_trade(p) for p in self.agg_trade]
        return SymbolCapture(
            symbol=self.symbol,
            snapshot=self.snapshot,
            depth=tuple(self.depth),
            book_ticker=tuple(self.book_ticker),
            agg_trade=tuple(self.agg_trade),
            trade=tuple(trades),
            kline=tuple(self.kline),
        )


def parse_capture(lines: str) -> Capture:
    """Index the data file's text (one JSON record per line)."""
    decoder = msgspec.json.Decoder(CapturedRecord)
    records = tuple(decoder.decode(line) for line in lines.splitlines() if line.strip())
    builders: dict[str, _Builder] = {}

    def builder(symbol: str) -> _Builder:
        return builders.setdefault(symbol, _Builder(symbol))

    for record in records:
        if record.kind == "rest_book_snapshot" and record.symbol:
            builder(record.symbol).snapshot = record.raw
            continue
        if record.kind not in ("book_delta", "bbo", "trade", "kline"):
            continue  # control replies and errors: reference material for tests
        _, payload = unwrap_combined(record.raw)
        event = msgspec.json.decode(payload)
        symbol = record.symbol or event["s"]
        kind = event.get("e")
        b = builder(symbol)
        if kind == "depthUpdate":
            b.depth.append(payload)
        elif kind == "aggTrade":
            b.agg_trade.append(payload)
        elif kind == "trade":
            b.trade.append(payload)
        elif kind == "kline":
            b.kline.append(payload)
        elif kind is None and "u" in event and "b" in event:  # bookTicker has no "e"
            b.book_ticker.append(payload)
    return Capture({s: b.build() for s, b in builders.items()}, records)


@functools.cache
def load_capture() -> Capture:
    """The packaged capture, read once through importlib.resources (works from a wheel)."""
    text = resources.files("streamkit.simulator").joinpath(DATA_FILE).read_text(encoding="utf-8")
    return parse_capture(text)
