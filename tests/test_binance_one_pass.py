"""Binance's one-pass decoding (envelope and payload together, tagged on ``e``) must produce
exactly what the generic two-pass path produces, for every captured frame, and leave every
frame it cannot type (acks, errors, shutdowns, other payloads) to the generic path."""

from __future__ import annotations

from typing import Any

import pytest
from test_binance_plugin import make_protocol

from streamkit.feed import Output
from streamkit.model import Trade
from streamkit.transport.base import Frame
from streamkit_binance.feed import BinanceProtocol
from streamkit_binance.schemas import AggTradeEvent


def run(protocol: BinanceProtocol, frames: list[bytes]) -> list[Any]:
    """(returned flag, records, actions, acks, rejects) or the exception, per frame."""
    results: list[Any] = []
    for frame in frames:
        out = Output()
        try:
            saw = protocol.on_message(frame, 123, out)
        except Exception as exc:
            results.append((type(exc), str(exc)))
            continue
        results.append((saw, list(out.records), list(out.actions), out.acks, out.rejects))
    return results


def without_one_pass(protocol: BinanceProtocol) -> BinanceProtocol:
    protocol._typed = None
    return protocol


@pytest.mark.parametrize("channels", [["trades"], ["trades", "l2_book"], ["candles"]])
def test_one_pass_equals_two_pass_on_the_capture(
    binance_capture: list[dict[str, Any]], channels: list[str]
) -> None:
    frames = [r["raw"].encode() for r in binance_capture if r["kind"] != "rest_book_snapshot"]
    frames += [
        b'{"stream":"nknusdt@aggTrade","data":{"e":"depthUpdate","E":1}}',  # wrong payload
        b'{"stream":"nknusdt@aggTrade","data":{"e":"aggTrade"}}',  # missing fields
        b'{"stream":"elsewhere@aggTrade","data":{"e":"aggTrade"}}',  # not subscribed
        b"{not json",
    ]
    fast = make_protocol(channels=channels)
    assert fast._typed is not None
    slow = without_one_pass(make_protocol(channels=channels))
    assert run(fast, frames) == run(slow, frames)
    if "trades" in channels:
        # the capture's trades really take the one-pass path
        trades = [r["raw"].encode() for r in binance_capture if r["kind"] == "trade"]
        typed = [fast._typed.decode(t).data for t in trades if b"@aggTrade" in t]
        assert typed and all(isinstance(t, AggTradeEvent) for t in typed)


def test_connection_with_bbo_keeps_the_generic_path() -> None:
    # bookTicker payloads carry no "e": such a connection cannot decode in one pass.
    assert make_protocol(channels=["trades", "bbo"])._typed is None


def frame_by_frame(protocol: BinanceProtocol, frames: list[bytes]) -> tuple[bool, list[Any]]:
    """What the actor did before batches: ``on_message`` per frame, a failure noted in
    ``out`` where it happened."""
    out = Output()
    saw = False
    for data in frames:
        try:
            saw = protocol.on_message(data, 123, out) or saw
        except Exception as exc:
            out.records.append(("failed", data, type(exc), str(exc)))  # type: ignore[arg-type]
    return saw, [*out.records, *out.actions, *out.acks, *out.rejects]


def batched(protocol: BinanceProtocol, frames: list[bytes]) -> tuple[bool, list[Any]]:
    out = Output()

    def failed(data: bytes, exc: Exception, out: Output) -> None:
        out.records.append(("failed", data, type(exc), str(exc)))  # type: ignore[arg-type]

    saw = protocol.on_frames([Frame(f, False) for f in frames], 123, out, failed)
    return saw, [*out.records, *out.actions, *out.acks, *out.rejects]


@pytest.mark.parametrize("channels", [["trades"], ["trades", "l2_book"], ["trades", "bbo"]])
def test_on_frames_equals_on_message_frame_by_frame(
    binance_capture: list[dict[str, Any]], channels: list[str]
) -> None:
    # The batch loop (the actor's hot path) must leave out exactly as on_message does frame
    # by frame, failures reported in place and the batch going on after them: for the one-pass
    # path (trades, trades + books) and for the generic one (bbo has no "e").
    frames = [r["raw"].encode() for r in binance_capture if r["kind"] != "rest_book_snapshot"]
    bad = [
        b"{not json",
        b'{"stream":"nknusdt@aggTrade","data":{"e":"aggTrade"}}',  # missing fields
        b'{"stream":"elsewhere@aggTrade","data":{"e":"aggTrade"}}',  # not subscribed
        b'{"result":null,"id":7}',  # an ack
        # typed, but the depth handler's price interning raises
        b'{"stream":"nknusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"NKNUSDT",'
        b'"U":1,"u":2,"b":[["abc","1"]],"a":[]}}',
    ]
    mixed = frames[:5] + bad + frames[5:] + bad[:1]
    want = frame_by_frame(make_protocol(channels=channels), mixed)
    got = batched(make_protocol(channels=channels), mixed)
    assert got == want
    failures = [r for r in want[1] if isinstance(r, tuple) and r[0] == "failed"]
    # the workload really fails frames (and goes on after them) and carries data
    assert [f[1] for f in failures].count(b"{not json") == 2 and want[0]
    after_first_failure = want[1][want[1].index(failures[0]) :]
    assert any(isinstance(r, Trade) for r in after_first_failure)
