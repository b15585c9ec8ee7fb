"""Review findings in the App's lifecycle: REST calls honour each feed's TLS options, a second
``stop()`` waits for the shutdown in progress, and a failed ``start()`` cannot be mistaken for
a running App."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from certs import ca_and_server_context

from streamkit.app import App
from streamkit.config import parse_config
from streamkit.errors import ConfigError
from streamkit.model import decode_json
from streamkit.simulator import BinanceSimulator


@pytest.fixture
async def https_rest(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """An HTTPS endpoint signed by a private CA: (base URL, CA file)."""
    ca_path, context = ca_and_server_context(tmp_path, ca_name="review CA")

    async def depth(request: web.Request) -> web.Response:
        return web.Response(body=b'{"ok":true}')

    web_app = web.Application()
    web_app.router.add_get("/api/v3/depth", depth)
    runner = web.AppRunner(web_app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"https://127.0.0.1:{port}", ca_path
    finally:
        await runner.cleanup()


async def test_rest_snapshots_use_the_feeds_tls_options(https_rest: tuple[str, Path]) -> None:
    # The WebSocket side honoured transport.ca_file but REST calls (book snapshots) went
    # through one HttpClient built with default options: against a private CA every
    # snapshot failed verification and the book never synced.
    base, ca = https_rest
    app = App(
        parse_config(
            f"""
feeds:
  - exchange: binance
    url: ws://127.0.0.1:9/unused
    rest_url: {base}
    symbols: [BTC-USDT]
    channels: [trades]
    transport: {{ca_file: {ca}}}
"""
        )
    )
    await app.start()
    try:
        [actor] = app.actors
        status, body = await actor.http_fetch(f"{base}/api/v3/depth")
    finally:
        await app.stop()
    assert (status, body) == (200, b'{"ok":true}')


async def test_a_failed_start_leaves_the_app_stopped_not_half_started() -> None:
    # check_plugins failed after _started was set: a second start() then returned at once
    # and run() "ran" an App with no feeds until its duration ended, raising nothing.
    app = App(
        parse_config(
            """
feeds:
  - exchange: binance
    symbols: [BTC-USDT]
    channels: [no_such_channel]
"""
        )
    )
    with pytest.raises(ConfigError):
        await app.start()
    with pytest.raises(ConfigError):
        await app.start()
    with pytest.raises(ConfigError):
        await app.run(duration=0.1)
    await app.stop()  # harmless after a failed start


@pytest.fixture
async def sim() -> AsyncIterator[BinanceSimulator]:
    async with BinanceSimulator(rate=200.0, ping_interval=0.5) as simulator:
        yield simulator


async def test_run_returns_only_after_a_concurrent_stop_finished(
    sim: BinanceSimulator, tmp_path: Path
) -> None:
    # stop() from another task while run() is waiting: run()'s own stop() returned at once
    # (the App was already "stopped") and run() returned while sinks were still draining,
    # so a caller (e.g. asyncio.run) could tear the loop down before the sinks flushed.
    out = tmp_path / "records.jsonl"
    app = App(
        parse_config(
            f"""
feeds:
  - exchange: binance
    url: {sim.ws_url}
    rest_url: {sim.rest_url}
    symbols: [NKN-USDT]
    channels: [trades, bbo]
sinks:
  - {{type: jsonl, path: {out}, flush_interval: 60}}
"""
        )
    )
    first = app.stream(name="first")
    runner = asyncio.create_task(app.run())
    async with asyncio.timeout(10):
        for _ in range(20):
            await first.get()
    first.close()
    stopper = asyncio.create_task(app.stop())
    await runner  # must not return before the shutdown is complete
    [sink] = app.sinks
    lines = out.read_bytes().splitlines()
    assert sink.written > 0 and len(lines) == sink.written
    assert all(decode_json(line) for line in lines)
    await stopper
