"""``streamkit doctor``: what is installed, and whether a config can run here.

Every check prints one line: ``ok``, ``warn`` or ``FAIL`` with a plain explanation. The
command exits 1 when any check failed.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import platform
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from streamkit import plugins
from streamkit.config import AppConfig, JsonlSinkConfig, load_config
from streamkit.errors import ConfigError


@dataclass(frozen=True)
class Check:
    level: str  # "ok" | "warn" | "FAIL"
    what: str
    detail: str


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment() -> list[Check]:
    """Versions of everything streamkit runs on."""
    from curl_cffi._wrapper import ffi, lib

    libcurl = ffi.string(lib.curl_version()).decode()
    checks = [
        Check("ok", "streamkit", _version("streamkit")),
        Check("ok", "python", f"{platform.python_version()} ({platform.python_implementation()})"),
        Check("ok", "curl_cffi", _version("curl_cffi")),
        Check("ok", "libcurl", libcurl),
        Check("ok", "msgspec", _version("msgspec")),
        Check("ok", "structlog", _version("structlog")),
    ]
    uvloop = _version("uvloop")
    checks.append(
        Check(
            "ok",
            "event loop",
            "asyncio" + ("" if uvloop == "not installed" else f" (uvloop {uvloop} installed)"),
        )
    )
    from streamkit.transport import libcurl as transport

    if transport.SPEEDUPS:
        accel = Check("ok", "read loop", "C accelerator (_streamkit_speedups)")
    elif os.environ.get("STREAMKIT_NO_SPEEDUPS") == "1":
        accel = Check("ok", "read loop", "pure Python (STREAMKIT_NO_SPEEDUPS=1)")
    else:
        accel = Check(
            "warn",
            "read loop",
            "pure Python: the C accelerator is not built (reinstall with a C compiler for "
            "about 2x less CPU per message in the transport)",
        )
    checks.append(accel)
    if "BoringSSL" not in libcurl and "OpenSSL" not in libcurl:
        checks.append(Check("warn", "TLS", "libcurl reports no TLS backend: wss:// will fail"))
    names = plugins.available()
    checks.append(
        Check("ok" if names else "FAIL", "feed plugins", ", ".join(names) or "none installed")
    )
    return checks


def config_checks(path: str) -> list[Check]:
    """Validate a config and probe what it will need: plugins, files, DNS, sinks."""
    from streamkit.app import check_plugins

    try:
        config = load_config(path)
        problems = check_plugins(config)
        if problems:
            raise ConfigError(problems)
    except ConfigError as exc:
        return [Check("FAIL", "config", f"{p}: {m}" if p else m) for p, m in exc.problems]
    checks = [Check("ok", "config", f"{path} is valid ({len(config.feeds)} feed(s))")]
    checks += _feed_checks(config)
    checks += asyncio.run(_sink_checks(config))
    return checks


def _feed_checks(config: AppConfig) -> list[Check]:
    checks = []
    for feed in config.feeds:
        cls = plugins.load(feed.exchange)
        for key, url in (("url", feed.url or cls.default_url), ("rest_url", feed.rest_url)):
            if url in (None, "simulator"):
                continue
            host = urlparse(url).hostname
            if host is None:
                checks.append(Check("FAIL", f"{feed.label}.{key}", f"no host in {url!r}"))
                continue
            try:
                socket.getaddrinfo(host, None)
                checks.append(Check("ok", f"{feed.label}.{key}", f"{host} resolves"))
            except OSError as exc:
                checks.append(Check("warn", f"{feed.label}.{key}", f"cannot resolve {host}: {exc}"))
        if not feed.transport.verify:
            checks.append(
                Check("warn", f"{feed.label}.transport.verify", "TLS verification is OFF")
            )
    return checks


async def _sink_checks(config: AppConfig) -> list[Check]:
    checks = []
    for i, sink in enumerate(config.sinks):
        name = f"sinks[{i}] ({sink.__struct_config__.tag})"
        if isinstance(sink, JsonlSinkConfig):
            checks.append(_writable(name, sink.path))
            continue
        url = getattr(sink, "url", None)
        if isinstance(url, str):
            checks.append(await _reachable(name, url))
    return checks


def _writable(name: str, path: str) -> Check:
    parent = Path(path).resolve().parent
    while not parent.exists():
        parent = parent.parent
    if os.access(parent, os.W_OK):
        return Check("ok", name, f"{path} is writable")
    return Check("FAIL", name, f"cannot write under {parent}")


async def _reachable(name: str, url: str) -> Check:
    parsed = urlparse(url)
    default_ports = {"nats": 4222, "redis": 6379, "rediss": 6380}
    host, port = parsed.hostname or "127.0.0.1", parsed.port or default_ports.get(parsed.scheme)
    if port is None:
        return Check("warn", name, f"cannot tell the port of {url}")
    try:
        async with asyncio.timeout(2):
            _, writer = await asyncio.open_connection(host, port)
        writer.close()
        return Check("ok", name, f"{host}:{port} reachable")
    except (OSError, TimeoutError) as exc:
        return Check("FAIL", name, f"{host}:{port} not reachable ({exc or 'timed out'})")


def report(checks: list[Check], echo: Callable[[str], None] = print) -> int:
    width = max((len(c.what) for c in checks), default=0)
    for c in checks:
        echo(f"{c.level:<4}  {c.what:<{width}}  {c.detail}")
    return 1 if any(c.level == "FAIL" for c in checks) else 0
