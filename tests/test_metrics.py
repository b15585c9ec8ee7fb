"""The metrics and health endpoints, scraped over HTTP while the App streams from the
simulator."""

from __future__ import annotations

import asyncio
import re

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from streamkit.app import App
from streamkit.config import parse_config
from streamkit.model import Trade

CONFIG = """
simulator: {rate: 100}
metrics: {port: 0}
feeds:
  - exchange: binance
    url: simulator
    symbols: [NKN-USDT]
    channels: [trades, bbo, l2_book]
sinks:
  - {type: jsonl, path: %s}
"""


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(all_samples: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    for (n, lbls), v in all_samples.items():
        if n == name and all((k, val) in lbls for k, val in labels.items()):
            return float(v)
    raise KeyError(f"{name} {labels} not exported")


async def test_metrics_health_and_ready(tmp_path) -> None:  # type: ignore[no-untyped-def]
    app = App(parse_config(CONFIG % (tmp_path / "out.jsonl")))
    trades = app.stream(Trade, maxsize=10_000, name="test-consumer")
    async with aiohttp.ClientSession() as http:
        await app.start()
        try:
            assert app.metrics is not None
            base = app.metrics.url
            assert base.startswith("http://127.0.0.1:")
            async with asyncio.timeout(10):
                for _ in range(5):
                    await trades.get()
                while True:  # ready once subscribed and streaming
                    async with http.get(f"{base}/ready") as r:
                        if r.status == 200:
                            assert (await r.json())["ready"] is True
                            break
                    await asyncio.sleep(0.05)
            async with http.get(f"{base}/health") as r:
                assert r.status == 200
            async with http.get(f"{base}/metrics") as r:
                assert r.status == 200
                text = await r.text()
        finally:
            await app.stop()
    got = samples(text)
    conn = {"feed": "binance", "connection": "binance/0"}
    assert value(got, "streamkit_messages_received_total", **conn) > 0
    assert value(got, "streamkit_bytes_received_total", **conn) > 0
    assert value(got, "streamkit_records_published_total", type="trade", **conn) >= 5
    assert value(got, "streamkit_records_published_total", type="book", **conn) >= 1
    assert value(got, "streamkit_connection_state", state="streaming", **conn) == 1.0
    assert value(got, "streamkit_connection_state", state="backing_off", **conn) == 0.0
    assert value(got, "streamkit_reconnects_total", **conn) == 0
    assert value(got, "streamkit_decode_errors_total", **conn) == 0
    assert value(got, "streamkit_last_data_age_seconds", **conn) < 5
    assert value(got, "streamkit_exchange_latency_seconds_count", **conn) > 0
    assert value(got, "streamkit_subscriber_delivered_total", subscriber="test-consumer") >= 5
    assert value(got, "streamkit_subscriber_dropped_total", subscriber="test-consumer") == 0
    assert value(got, "streamkit_status_events_total", exchange="binance", event="connected") == 1
    assert value(got, "streamkit_status_events_total", exchange="binance", event="subscribed") == 1
    assert value(got, "streamkit_sink_written_total", sink="sink[0]:jsonl") > 0
    assert re.search(r"# TYPE streamkit_exchange_latency_seconds histogram", text)


async def test_ready_is_503_while_not_streaming(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = CONFIG.replace(
        "url: simulator",
        "url: ws://127.0.0.1:9/nothing-listens-here\n    rest_url: http://127.0.0.1:9",
    )
    app = App(parse_config(cfg % (tmp_path / "out.jsonl")))
    async with aiohttp.ClientSession() as http:
        await app.start()
        try:
            assert app.metrics is not None
            await asyncio.sleep(0.3)
            async with http.get(f"{app.metrics.url}/ready") as r:
                assert r.status == 503
                body = await r.json()
            async with http.get(f"{app.metrics.url}/health") as r:
                assert r.status == 200  # alive, just not connected
        finally:
            await app.stop()
    assert body["ready"] is False and "binance/0" in body["not_streaming"]
