"""TLS and security: wss:// with a private CA, verification on by default and a clear error
when it fails, ``verify: false`` warned about, secrets from the environment that never reach
logs or status records, loopback-only simulator, plugins loaded only through entry points."""

from __future__ import annotations

import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog
from certs import ca_and_server_context
from faultkit import LeakCheck, collect_until, feed_yaml, has_after, make_app, statuses

from streamkit import plugins
from streamkit.config import SimulatorConfig, parse_config
from streamkit.errors import ConfigError, PluginError
from streamkit.model import StatusEvent, Trade
from streamkit.simulator import BinanceSimulator
from streamkit.simulator.chaos import ChaosProxy

ST = StatusEvent


@pytest.fixture
async def sim() -> AsyncIterator[BinanceSimulator]:
    async with BinanceSimulator(rate=50.0, ping_interval=0.5) as simulator:
        yield simulator


@pytest.fixture
async def tls(sim: BinanceSimulator, tmp_path: Path) -> AsyncIterator[tuple[ChaosProxy, Path]]:
    """The simulator behind a TLS-terminating proxy: (proxy, CA file)."""
    ca_path, context = ca_and_server_context(tmp_path)
    async with ChaosProxy(sim.port, ssl_context=context) as proxy:
        yield proxy, ca_path


async def test_wss_with_a_custom_ca_file_streams(
    sim: BinanceSimulator, tls: tuple[ChaosProxy, Path]
) -> None:
    proxy, ca = tls
    assert proxy.ws_url().startswith("wss://127.0.0.1:")
    leaks = LeakCheck.now()
    app = make_app(feed_yaml(proxy.ws_url(), sim.rest_url, transport=f"{{ca_file: {ca}}}"))
    sub = app.stream(maxsize=100_000)
    await app.start()
    try:
        seen = await collect_until(sub, lambda rs: has_after(rs, ST.SUBSCRIBED, Trade))
    finally:
        await app.stop()
    await leaks.assert_back()
    assert not statuses(seen, ST.ERROR)


async def test_verification_is_on_by_default_and_its_failure_is_clear(
    sim: BinanceSimulator, tls: tuple[ChaosProxy, Path]
) -> None:
    proxy, _ = tls
    app = make_app(feed_yaml(proxy.ws_url(), sim.rest_url))  # no ca_file: certifi's bundle
    assert app.config.feeds[0].transport.verify is True
    sub = app.stream(maxsize=100_000)
    with structlog.testing.capture_logs() as logs:
        await app.start()
        try:
            seen = await collect_until(sub, lambda rs: len(statuses(rs, ST.ERROR)) >= 2)
        finally:
            await app.stop()
    assert not any(isinstance(r, Trade) for r in seen)
    for error in statuses(seen, ST.ERROR):
        assert "TLS certificate verification failed" in error.detail, error.detail
        assert "ca_file" in error.detail
    failed = [e for e in logs if e["event"] == "connect failed"]
    assert failed and "TLS certificate verification failed" in failed[0]["error"]


async def test_verify_false_is_explicit_and_warned_at_startup(
    sim: BinanceSimulator, tls: tuple[ChaosProxy, Path]
) -> None:
    proxy, _ = tls
    app = make_app(feed_yaml(proxy.ws_url(), sim.rest_url, transport="{verify: false}"))
    sub = app.stream(maxsize=100_000)
    with structlog.testing.capture_logs() as logs:
        await app.start()
        try:
            await collect_until(sub, lambda rs: has_after(rs, ST.SUBSCRIBED, Trade))
        finally:
            await app.stop()
    [warning] = [e for e in logs if "verification is OFF" in e["event"]]
    assert warning["log_level"] == "warning" and warning["feed"] == "binance"
    started = next(i for i, e in enumerate(logs) if e["event"] == "started")
    assert logs.index(warning) < started


SECRET = "sk-live-0123456789abcdef"


async def test_secrets_from_env_never_reach_logs_or_status_records(
    sim: BinanceSimulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STREAMKIT_TEST_API_KEY", SECRET)
    from streamkit.logs import configure_logging

    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    closed = port.getsockname()[1]
    port.close()
    # one feed that works and one that keeps failing, both carrying the secret header
    transport = '{headers: {X-MBX-APIKEY: "${STREAMKIT_TEST_API_KEY}"}}'
    app = make_app(
        feed_yaml(sim.ws_url, sim.rest_url, name="good", transport=transport),
        feed_yaml(f"ws://127.0.0.1:{closed}/stream", sim.rest_url, name="bad", transport=transport),
    )
    assert app.config.feeds[0].transport.headers == {"X-MBX-APIKEY": SECRET}
    configure_logging("debug", "json")
    try:
        sub = app.stream(maxsize=100_000)
        await app.start()
        try:
            seen = await collect_until(
                sub,
                lambda rs: (
                    any(isinstance(r, Trade) for r in rs) and len(statuses(rs, ST.ERROR)) >= 2
                ),
            )
        finally:
            await app.stop()
        # every way the config reaches text: repr of the config, its sections, errors
        texts = [repr(app.config), str(app.config.feeds[0]), repr(app.config.feeds[0].transport)]
    finally:
        structlog.reset_defaults()
    captured = capsys.readouterr()
    assert "connect failed" in captured.err + captured.out  # the logs were captured
    everything = "\n".join([captured.out, captured.err, *texts, *(repr(r) for r in seen)])
    assert SECRET not in everything
    assert "<redacted>" in texts[2]


def test_unset_env_var_is_a_config_error_naming_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMKIT_NOPE", raising=False)
    monkeypatch.setenv("STREAMKIT_EMPTY", "")
    text = """
feeds:
  - exchange: binance
    symbols: [BTC-USDT]
    channels: [trades]
    url: "${STREAMKIT_URL:-wss://example.invalid/ws}"
    rest_url: "${STREAMKIT_EMPTY:-http://fallback.invalid}"
    transport: {headers: {X-Key: "${STREAMKIT_NOPE}", Literal: "a ${STREAMKIT_NOPE} b"}}
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert info.value.problems == [
        ("feeds[0].transport.headers.X-Key", "environment variable STREAMKIT_NOPE is not set")
    ]
    monkeypatch.setenv("STREAMKIT_NOPE", "v")
    cfg = parse_config(text).feeds[0]
    assert cfg.url == "wss://example.invalid/ws"
    assert cfg.rest_url == "http://fallback.invalid"  # ":-" also covers an empty variable
    # only whole values are expanded: a reference inside a longer string stays literal
    assert cfg.transport.headers == {"X-Key": "v", "Literal": "a ${STREAMKIT_NOPE} b"}


async def test_simulator_binds_loopback_unless_told_otherwise() -> None:
    assert SimulatorConfig().host == "127.0.0.1"
    async with BinanceSimulator() as simulator:
        assert simulator.ws_url.startswith("ws://127.0.0.1:")
        with socket.socket() as s:  # reachable on loopback ...
            s.connect(("127.0.0.1", simulator.port))
        addrs = {a.split(":")[0] for a in _listening_addresses(simulator.port)}
        assert addrs == {"127.0.0.1"}, addrs  # ... and listening nowhere else
    async with ChaosProxy(1) as proxy:
        assert proxy.host == "127.0.0.1"


def _listening_addresses(port: int) -> list[str]:
    """``addr:port`` of listening TCP sockets on ``port`` (IPv4, from /proc/net/tcp)."""
    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        hex_addr, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            addr = socket.inet_ntoa(bytes.fromhex(hex_addr)[::-1])
            found.append(f"{addr}:{port}")
    return found


@pytest.mark.parametrize(
    "exchange",
    ["os", "subprocess", "streamkit_probe_not_a_plugin", "../evil", "tests.evil", "json:loads"],
)
def test_unknown_exchange_id_imports_nothing(
    exchange: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a module an import-by-name loader would happily pick up from sys.path
    (tmp_path / "streamkit_probe_not_a_plugin.py").write_text("raise SystemExit('imported!')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    with pytest.raises(PluginError, match="no feed plugin"):
        plugins.load(exchange)
    assert set(sys.modules) - before == set()
    cfg = parse_config(
        f"feeds: [{{exchange: '{exchange}', symbols: [BTC-USDT], channels: [trades]}}]"
    )
    from streamkit.app import check_plugins

    [(path, message)] = check_plugins(cfg)
    assert path == "feeds[0].exchange" and "no feed plugin" in message
    assert "streamkit_probe_not_a_plugin" not in sys.modules
