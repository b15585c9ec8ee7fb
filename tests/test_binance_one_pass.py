"""Binance's one-pass decoding (envelope and payload together, tagged on ``e``) must produce
exactly what the generic two-pass path produces, for every captured frame, and leave every
frame it cannot type (acks, errors, shutdowns, other payloads) to the generic path."""

from __future__ import annotations

from typing import Any

import pytest
from test_binance_plugin import make_protocol

from streamkit.feed import Output
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
