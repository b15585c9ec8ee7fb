"""Multi-process sharding: which worker process streams which symbols, and with what config.

``streamkit run config.yaml --workers N`` runs the config's feeds in N worker processes under
one parent (:mod:`streamkit.worker_pool`). This module is the pure part: the assignment rule
and the derivation of each worker's :class:`~streamkit.config.AppConfig`. Nothing here starts
a process or touches the network.

**Assignment rule** (rendezvous, a.k.a. highest-random-weight hashing): a symbol goes to the
worker ``w`` in ``0..N-1`` with the highest score
``blake2b(f"{exchange}\\x1f{symbol}\\x1f{w}")`` (8-byte digest, big-endian). The key is the
exchange id and the normalized symbol, so:

- the assignment is deterministic across runs, machines and Python versions (no
  ``PYTHONHASHSEED``), and independent of the order of ``symbols`` in the config;
- every channel of a symbol stays in one worker, also across feeds of the same exchange
  (a ``trades`` feed and an ``l2_book`` feed of ``binance`` ``BTC-USDT`` land together);
- adding or removing a symbol moves no other symbol; going from N to N+1 workers moves only
  the symbols that the new worker wins (about 1/(N+1) of them), none between old workers;
- balance is statistical: with many symbols each worker gets about 1/N of them; with few,
  shares are uneven, and a feed with fewer symbols than workers lands on the workers its
  symbols hash to. A worker that gets no symbol at all is not started.

**Derived worker config** (:func:`shard_config`), from the parent's:

- ``feeds``: the same feeds, each keeping only its symbols that this worker won (feeds left
  with none are omitted), renamed ``<label>@w<index>`` so connection names, logs and status
  records (``connection: binance@w1/0``) say which worker produced them;
- ``url``/``rest_url: simulator``: replaced by the URLs of the simulators the parent started
  (one simulator per exchange serves all workers, like a real venue); ``simulator`` is
  removed from the worker configs;
- ``sinks``: the same sinks. ``nats``, ``redis`` and ``console`` are shared as they are (each
  worker is one more client; console lines of different workers interleave). A ``jsonl``
  sink cannot be shared by several writers, so each worker writes its own file:
  ``out/demo.jsonl`` becomes ``out/demo.w0.jsonl``, ``out/demo.w1.jsonl``, ... (the suffix is
  inserted before the first extension; applied for every worker count, N=1 included, so the
  file names depend only on the worker index);
- ``metrics``: worker ``i`` serves on ``port + i`` (port 0 stays 0: each picks a free port);
- ``supervision`` and ``logging``: unchanged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import PurePath

import msgspec

from streamkit.config import AppConfig, FeedConfig, JsonlSinkConfig, SinkConfig, validate_data
from streamkit.errors import ConfigError

_SEP = "\x1f"  # unit separator: cannot occur in an exchange id or a normalized symbol


def _score(exchange: str, symbol: str, worker: int) -> int:
    digest = hashlib.blake2b(
        f"{exchange}{_SEP}{symbol}{_SEP}{worker}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big")


def worker_for(exchange: str, symbol: str, workers: int) -> int:
    """The index (``0..workers-1``) of the worker that streams ``symbol`` of ``exchange``."""
    if workers < 1:
        raise ValueError("workers must be >= 1")
    # max over (score, -w): ties (astronomically unlikely with 64 bits) go to the lower index
    return max(range(workers), key=lambda w: (_score(exchange, symbol, w), -w))


def assign(config: AppConfig, workers: int) -> list[list[FeedConfig]]:
    """The feeds of each worker (index -> feeds), every feed cut down to the symbols that
    worker won, in the config's feed and symbol order. Feeds left without symbols are
    omitted; a worker may get no feed at all."""
    if workers < 1:
        raise ValueError("workers must be >= 1")
    shards: list[list[FeedConfig]] = [[] for _ in range(workers)]
    for feed in config.feeds:
        mine: list[list[str]] = [[] for _ in range(workers)]
        for symbol in feed.symbols:
            mine[worker_for(feed.exchange, symbol, workers)].append(symbol)
        for index, symbols in enumerate(mine):
            if symbols:
                shards[index].append(msgspec.structs.replace(feed, symbols=symbols))
    return shards


class WorkerConfig(msgspec.Struct, frozen=True, kw_only=True):
    """One worker process to run: its index (stable: metrics port and file suffixes derive
    from it) and the complete config it runs."""

    index: int
    workers: int
    config: AppConfig


SimulatorUrls = Mapping[str, tuple[str, str]]
"""exchange id -> (WebSocket URL, REST base URL) of a simulator the parent runs."""


def shard_configs(
    config: AppConfig, workers: int, *, simulator_urls: SimulatorUrls | None = None
) -> list[WorkerConfig]:
    """The configs of the workers to start, in index order, skipping workers that got no
    symbol. Each config has been validated exactly as a worker will validate it.

    ``simulator_urls`` are the running simulators that feeds with ``url: simulator`` (or
    ``rest_url: simulator``) are pointed at. Raises :class:`ConfigError` when ``workers`` is
    below 1, when such a feed has no running simulator, or when ``metrics.port + index``
    leaves the port range.
    """
    if workers < 1:
        raise ConfigError([("", f"--workers must be at least 1 (got {workers})")])
    urls = simulator_urls or {}
    out: list[WorkerConfig] = []
    for index, feeds in enumerate(assign(config, workers)):
        if feeds:
            derived = shard_config(config, index, feeds, urls)
            out.append(WorkerConfig(index=index, workers=workers, config=derived))
    return out


def shard_config(
    config: AppConfig, index: int, feeds: Sequence[FeedConfig], simulator_urls: SimulatorUrls
) -> AppConfig:
    """Worker ``index``'s config: the parent's, with ``feeds`` (from :func:`assign`) and the
    rules in the module docstring applied. Validated with :func:`validate_data`."""
    worker_feeds = [_worker_feed(feed, index, simulator_urls) for feed in feeds]
    metrics = config.metrics
    if metrics is not None and metrics.port != 0:
        port = metrics.port + index
        if port > 65535:
            raise ConfigError(
                [("metrics.port", f"worker {index} would serve metrics on port {port} (> 65535)")]
            )
        metrics = msgspec.structs.replace(metrics, port=port)
    derived = msgspec.structs.replace(
        config,
        feeds=worker_feeds,
        sinks=[_worker_sink(sink, index) for sink in config.sinks],
        simulator=None,
        metrics=metrics,
    )
    # Round-trip through the loader's validation: what the worker will decode, checked here,
    # so that a bad derivation fails in the parent, once, with a key path.
    return validate_data(msgspec.to_builtins(derived))


def worker_label(label: str, index: int) -> str:
    """The feed name a worker uses: ``binance`` -> ``binance@w1``."""
    return f"{label}@w{index}"


def worker_path(path: str, index: int) -> str:
    """A per-worker file name: ``out/demo.jsonl`` -> ``out/demo.w1.jsonl``;
    ``out/demo`` -> ``out/demo.w1``."""
    p = PurePath(path)
    stem, dot, extensions = p.name.partition(".")
    if not stem:  # a dotfile such as ".jsonl": keep the leading dot in the stem
        stem, dot, extensions = p.name, "", ""
    name = f"{stem}.w{index}{dot}{extensions}"
    return str(p.with_name(name))


def _worker_feed(feed: FeedConfig, index: int, simulator_urls: SimulatorUrls) -> FeedConfig:
    url, rest_url = feed.url, feed.rest_url
    if "simulator" in (url, rest_url):
        sim = simulator_urls.get(feed.exchange)
        if sim is None:
            raise ConfigError(
                [("simulator", f"feed {feed.label!r} needs a running {feed.exchange} simulator")]
            )
        ws_url, sim_rest = sim
        # Same rule as App: ``url: simulator`` also points the REST snapshots there unless
        # rest_url says otherwise.
        if url == "simulator":
            url = ws_url
            rest_url = rest_url or "simulator"
        if rest_url == "simulator":
            rest_url = sim_rest
    return msgspec.structs.replace(
        feed, name=worker_label(feed.label, index), url=url, rest_url=rest_url
    )


def _worker_sink(sink: SinkConfig, index: int) -> SinkConfig:
    if isinstance(sink, JsonlSinkConfig):
        return msgspec.structs.replace(sink, path=worker_path(sink.path, index))
    return sink


def run_workers(
    config: AppConfig, config_path: str, workers: int, duration: float | None = None
) -> int:
    """Run ``config`` sharded over ``workers`` processes until SIGINT/SIGTERM or
    ``duration`` seconds; returns the exit code (0: every worker stopped cleanly; 3: restart
    intensity exceeded or a worker did not stop cleanly). Raises :class:`ConfigError` for a
    config that cannot be sharded. See :func:`streamkit.worker_pool.run_workers`."""
    from streamkit.worker_pool import run_workers as run

    return run(config, config_path, workers, duration)
