"""Review findings: config values that passed validation and then misbehaved at run time.
Each must be a ConfigError that names its key path."""

from __future__ import annotations

import pytest

from streamkit.config import parse_config
from streamkit.errors import ConfigError


def feed(extra: str = "", *, symbols: str = "[BTC-USDT]", channels: str = "[trades]") -> str:
    return f"""
feeds:
  - exchange: binance
    symbols: {symbols}
    channels: {channels}{extra}
"""


def problems(text: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return info.value.problems


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        # "" fell back to the plugin's default: the *real* exchange, silently (e.g. an
        # unset ${WS_URL:-} meant for a test server)
        ('""', "ws://"),
        ("http://127.0.0.1:9000/stream", "ws://"),
        ("127.0.0.1:9000", "ws://"),
        ("wss://", "host"),
    ],
)
def test_feed_url_must_be_a_websocket_url(value: str, needle: str) -> None:
    [(path, msg)] = problems(feed(f"\n    url: {value}"))
    assert path == "feeds[0].url"
    assert needle in msg


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ('""', "http"),
        ("ws://127.0.0.1:9000", "http"),
        # plugins append their endpoint path ("/api/v3/depth") to the base: a path here
        # made every snapshot request 404 and the book resync forever
        ("https://api.binance.com/api/v3", "path"),
        ("https://api.binance.com/?x=1", "path"),
    ],
)
def test_rest_url_must_be_a_base_url(value: str, needle: str) -> None:
    [(path, msg)] = problems(feed(f"\n    rest_url: {value}"))
    assert path == "feeds[0].rest_url"
    assert needle in msg


def test_good_urls_still_pass() -> None:
    cfg = parse_config(
        feed("\n    url: WSS://stream.example.com:9443/stream\n    rest_url: http://127.0.0.1:8/")
    )
    assert cfg.feeds[0].url == "WSS://stream.example.com:9443/stream"


def test_duplicate_symbols_and_channels_are_reported() -> None:
    # duplicates subscribed the same stream twice and published every record twice
    found = problems(feed(symbols="[BTC-USDT, ETH-USDT, BTC-USDT]", channels="[trades, trades]"))
    assert ("feeds[0].symbols[2]", "duplicate symbol 'BTC-USDT'") in found
    assert ("feeds[0].channels[1]", "duplicate channel 'trades'") in found


def test_empty_feed_name_is_reported() -> None:
    [(path, _)] = problems(feed('\n    name: ""'))
    assert path == "feeds[0].name"


def test_two_simulators_for_one_exchange_are_reported() -> None:
    # the App keys simulators by exchange: the first one was overwritten, never stopped
    # (a leaked server and port), and feeds went to the second
    text = feed() + "simulator: [{exchange: binance}, {exchange: binance, port: 0}]\n"
    [(path, msg)] = problems(text)
    assert path == "simulator[1].exchange"
    assert "binance" in msg


def test_sink_record_types_are_checked_with_a_suggestion() -> None:
    # "trades" (the channel name) for "trade" (the record type) passed validation and then
    # crashed App.start with a bare ValueError from Bus.subscribe
    text = feed() + "sinks:\n  - {type: jsonl, path: out.jsonl, types: [trades, book]}\n"
    [(path, msg)] = problems(text)
    assert path == "sinks[0].types[0]"
    assert "unknown record type 'trades'" in msg and "'trade'" in msg


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ('{type: jsonl, path: ""}', "path"),
        ('{type: jsonl, path: out.jsonl, symbol: ""}', "symbol"),
        ('{type: console, exchange: ""}', "exchange"),
    ],
)
def test_empty_sink_strings_are_reported(entry: str, key: str) -> None:
    [(path, _)] = problems(feed() + f"sinks:\n  - {entry}\n")
    assert path == f"sinks[0].{key}"
