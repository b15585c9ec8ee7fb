"""The YAML configuration: typed Structs, and loading with errors that point at the bad key.

``load_config(path)`` returns an :class:`AppConfig` or raises :class:`ConfigError` whose
``problems`` are ``(key_path, message)`` pairs such as
``("feeds[0].transport.recv_queue_sise", "unknown key (did you mean 'recv_queue_size'?)")``.
Nothing in here touches the network or imports plugins: ``validate_plugins`` (in
:mod:`streamkit.app`) checks exchange ids and channels against the installed feeds.
"""

from __future__ import annotations

import difflib
import re
import stat
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec
import yaml

from streamkit.envvars import expand_env
from streamkit.errors import ConfigError
from streamkit.transport.options import TransportOptions

MAX_CONFIG_BYTES = 1024 * 1024
"""A market-data config is a few KB; refusing anything over 1 MiB keeps a mistaken path (a
capture file, a binary) from being parsed at all."""

_Positive = Annotated[float, msgspec.Meta(gt=0)]


class _Strict(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Config sections reject unknown keys: a typo must never silently fall back to a default."""


class BackoffOptions(_Strict, frozen=True):
    """Reconnect delays: capped exponential with full jitter (delay drawn from
    ``[0, min(max, initial * multiplier**attempt)]``). ``reset_after``: a connection that
    streamed this long resets the attempt counter."""

    initial: _Positive = 0.5
    max: _Positive = 30.0
    multiplier: Annotated[float, msgspec.Meta(ge=1)] = 2.0
    reset_after: _Positive = 60.0


class FeedConfig(_Strict, frozen=True):
    """One exchange feed.

    exchange: plugin id (``streamkit feeds`` lists them).
    symbols: normalized symbols (``BTC-USDT``, ``BTC-USDT-PERP``).
    channels: normalized channel names (``trades``, ``bbo``, ``l2_book``, ...).
    url: WebSocket URL override, or ``simulator`` for this config's built-in simulator.
    rest_url: REST base URL override (scheme, host, port), or ``simulator``.
    name: label used in logs, status records and metrics (default: the exchange id).
    transport: options of the WebSocket transport.
    stale_after: seconds without a data frame (heartbeats do not count) before the
        connection is declared stale and replaced.
    connect_timeout: seconds allowed for connect + subscribe acknowledgements.
    pong_timeout: seconds to wait for a heartbeat answer before declaring the connection dead.
    reconnect: backoff between reconnect attempts.
    book_depth: depth of the REST snapshot used to seed books (plugins cap it to the venue's).
    options: plugin-specific settings (each plugin documents its own).
    """

    exchange: str
    symbols: list[str]
    channels: list[str]
    url: str | None = None
    rest_url: str | None = None
    name: str | None = None
    transport: TransportOptions = TransportOptions()
    stale_after: _Positive = 30.0
    connect_timeout: _Positive = 10.0
    pong_timeout: _Positive = 10.0
    reconnect: BackoffOptions = BackoffOptions()
    book_depth: Annotated[int, msgspec.Meta(ge=1)] = 1000
    options: dict[str, Any] = {}

    @property
    def label(self) -> str:
        return self.name or self.exchange


Policy = Literal["block", "drop_oldest", "conflate", "disconnect"]


class _SinkBase(_Strict, frozen=True, tag_field="type"):
    """What every sink shares: which records it takes, and its queue.

    types: record type names to take (``trade``, ``book``, ...; empty: all types).
    exchange / symbol: patterns with ``*`` wildcards (``BTC-*``).
    queue_size and policy: the sink's own subscriber queue and what happens when it is full.
    """

    types: list[str] = []
    exchange: str = "*"
    symbol: str = "*"
    queue_size: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    policy: Policy = "block"


class JsonlSinkConfig(_SinkBase, tag="jsonl", frozen=True, kw_only=True):
    """Append every record as one JSON object per line (the DESIGN.md record contract).
    ``flush_interval``: seconds between flushes to disk (records are also flushed on exit)."""

    path: str
    flush_interval: _Positive = 1.0
    rotate_bytes: Annotated[int, msgspec.Meta(ge=1)] | None = None
    """Start a new file once the current one holds this many (uncompressed) bytes (checked
    at each flush, so a file can exceed it by up to one flush: 256 KiB)."""
    rotate_interval: _Positive | None = None
    """Start a new file every this many seconds."""
    compression: Literal["none", "zstd"] = "none"
    """``zstd`` writes ``.zst`` files (needs the ``zstandard`` package: ``streamkit[zstd]``)."""


class ConsoleSinkConfig(_SinkBase, tag="console", frozen=True, kw_only=True):
    """Print records to stdout, one line each (``format: text`` or ``json``)."""

    format: Literal["text", "json"] = "text"
    policy: Policy = "drop_oldest"


class RetryOptions(_Strict, frozen=True):
    """Delays between attempts to publish what a broker did not acknowledge: capped
    exponential, ``initial * multiplier**attempt`` up to ``max`` (with jitter)."""

    initial: _Positive = 0.1
    max: _Positive = 5.0
    multiplier: Annotated[float, msgspec.Meta(ge=1)] = 2.0


class NatsStreamConfig(_Strict, frozen=True):
    """The JetStream stream the ``nats`` sink publishes into; created when missing, checked
    (and, with ``update: true``, updated) when it exists.

    subjects: subjects the stream captures (must cover the sink's subject template).
    max_age: seconds a message is kept (None: no limit). max_msgs / max_bytes: None is no limit.
    duplicate_window: seconds within which a re-published record (same ``Nats-Msg-Id``) is
        recognised and stored once: what makes the sink's retries safe.
    """

    name: str = "STREAMKIT"
    subjects: list[str] = msgspec.field(default_factory=lambda: ["md.>"])
    storage: Literal["file", "memory"] = "file"
    max_age: _Positive | None = None
    max_msgs: Annotated[int, msgspec.Meta(ge=1)] | None = None
    max_bytes: Annotated[int, msgspec.Meta(ge=1)] | None = None
    duplicate_window: _Positive = 120.0
    create: bool = True
    update: bool = False


class NatsSinkConfig(_SinkBase, tag="nats", frozen=True, kw_only=True):
    """Publish every record to NATS JetStream with publish acknowledgements.

    subject: template with ``{type}``, ``{exchange}``, ``{symbol}`` (``_`` when null; dots
        and wildcards in values become ``_``).
    encoding: ``msgpack`` (compact, default) or ``json`` (the DESIGN.md JSON object).
    batch_size: records taken off the queue per pipelined batch.
    max_in_flight: published records awaiting their ack at most.
    ack_timeout: seconds to wait for an ack before the record is retried.
    shutdown_timeout: at shutdown, seconds to keep retrying unacknowledged records before
        they are reported as lost.
    """

    url: str = "nats://127.0.0.1:4222"
    subject: str = "md.{type}.{exchange}.{symbol}"
    encoding: Literal["msgpack", "json"] = "msgpack"
    stream: NatsStreamConfig = NatsStreamConfig()
    batch_size: Annotated[int, msgspec.Meta(ge=1)] = 512
    max_in_flight: Annotated[int, msgspec.Meta(ge=1)] = 4096
    ack_timeout: _Positive = 5.0
    retry: RetryOptions = RetryOptions()
    shutdown_timeout: _Positive = 20.0


class RedisSinkConfig(_SinkBase, tag="redis", frozen=True, kw_only=True):
    """Append every record to a Redis stream (``XADD``) in pipelined batches.

    key: stream key template with ``{type}``, ``{exchange}``, ``{symbol}`` (``_`` when null).
    maxlen: approximate cap per stream (``MAXLEN ~``); None keeps everything.
    encoding: of the ``data`` field: ``msgpack`` (default) or ``json``.
    """

    url: str = "redis://127.0.0.1:6379"
    key: str = "md:{type}:{exchange}:{symbol}"
    maxlen: Annotated[int, msgspec.Meta(ge=1)] | None = 1_000_000
    encoding: Literal["msgpack", "json"] = "msgpack"
    batch_size: Annotated[int, msgspec.Meta(ge=1)] = 512
    retry: RetryOptions = RetryOptions()
    shutdown_timeout: _Positive = 20.0


SinkConfig = JsonlSinkConfig | ConsoleSinkConfig | NatsSinkConfig | RedisSinkConfig


class SimulatorConfig(_Strict, frozen=True):
    """Start the built-in simulator of one exchange (127.0.0.1 only unless ``host`` says
    otherwise). ``simulator:`` takes one of these or a list (one per exchange).

    Feeds whose ``url``/``rest_url`` is ``simulator`` are pointed at the simulator of their
    exchange.
    """

    exchange: str = "binance"
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0
    rate: _Positive = 50.0
    options: dict[str, Any] = {}
    """Passed to the simulator as keyword arguments (e.g. ``replay_once: true``; venue
    simulators also take ``time_scale``, Binance ``ping_interval``)."""


class MetricsConfig(_Strict, frozen=True):
    """Serve ``/metrics`` (Prometheus), ``/health`` and ``/ready`` over HTTP. Off unless this
    section is present; binds to 127.0.0.1 unless ``host`` says otherwise."""

    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 9464


class NbboConfig(_Strict, frozen=True):
    """Cross-venue best bid/offer (``nbbo`` records, exchange ``nbbo``) from the feeds' BBO
    records.

    symbols: normalized symbols to compute it for (empty: every symbol with a BBO).
    exchanges: venues that take part (empty: every feed).
    max_age: seconds without a BBO update after which a venue's quote drops out; a
        ``disconnected``/``reconnecting``/``stale``/``error`` status drops it at once.
    queue_size: the consumer's own queue (policy ``conflate``: it never slows a feed).
    """

    symbols: list[str] = []
    exchanges: list[str] = []
    max_age: _Positive = 10.0
    queue_size: Annotated[int, msgspec.Meta(ge=1)] = 10_000


class BookSnapshotsConfig(_Strict, frozen=True):
    """Top-N snapshots (``book_snapshot`` records) of every verified book at a fixed
    interval, built from the feeds' ``book`` records.

    depth: levels per side in each snapshot.
    interval: seconds between snapshots.
    symbols / exchanges: which books (empty: all).
    queue_size: the consumer's own queue (policy ``block``: a book needs every delta).
    """

    depth: Annotated[int, msgspec.Meta(ge=1)] = 10
    interval: _Positive = 1.0
    symbols: list[str] = []
    exchanges: list[str] = []
    queue_size: Annotated[int, msgspec.Meta(ge=1)] = 10_000


class DerivedConfig(_Strict, frozen=True):
    """Streams computed from other records and published back to the bus like any channel.
    Each is off unless its section is present."""

    nbbo: NbboConfig | None = None
    book_snapshots: BookSnapshotsConfig | None = None


class SupervisionConfig(_Strict, frozen=True):
    """Restart intensity: more than ``max_restarts`` within ``within`` seconds escalates."""

    max_restarts: Annotated[int, msgspec.Meta(ge=0)] = 10
    within: _Positive = 60.0


class LoggingConfig(_Strict, frozen=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["console", "json"] = "console"


class AppConfig(_Strict, frozen=True):
    """A whole ``streamkit run`` configuration."""

    feeds: list[FeedConfig]
    sinks: list[SinkConfig] = []
    simulator: SimulatorConfig | list[SimulatorConfig] | None = None

    @property
    def simulators(self) -> list[SimulatorConfig]:
        if self.simulator is None:
            return []
        return self.simulator if isinstance(self.simulator, list) else [self.simulator]

    supervision: SupervisionConfig = SupervisionConfig()
    logging: LoggingConfig = LoggingConfig()
    metrics: MetricsConfig | None = None
    derived: DerivedConfig = DerivedConfig()


# --- loading -------------------------------------------------------------------------------


class _SafeLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases: they are never needed in a config and they are how
    "billion laughs" documents blow up memory."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
            line = event.start_mark.line + 1 if event.start_mark else "?"
            raise ConfigError([("", f"line {line}: YAML aliases (*name) are not allowed")])
        return super().compose_node(parent, index)


def load_config(path: str | Path) -> AppConfig:
    """Read, parse and validate a YAML config file. Raises :class:`ConfigError`."""
    p = Path(path)
    try:
        st = p.stat()
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(str(p))
        if not stat.S_ISREG(st.st_mode):
            # A FIFO, socket or device would block the read or never end: refuse it.
            raise ConfigError([("", f"{p}: not a regular file")])
        if st.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(
                [("", f"{p}: file is {st.st_size} bytes; configs are limited to 1 MiB")]
            )
        with p.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)  # bounded even if the file grows meanwhile
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError([("", f"{p}: file is over 1 MiB; configs are limited to 1 MiB")])
    except FileNotFoundError:
        raise ConfigError([("", f"{p}: no such file")]) from None
    except IsADirectoryError:
        raise ConfigError([("", f"{p}: is a directory, not a config file")]) from None
    except PermissionError:
        raise ConfigError([("", f"{p}: permission denied")]) from None
    except OSError as exc:
        raise ConfigError([("", f"{p}: cannot read: {exc.strerror or exc}")]) from None
    return parse_config(raw, source=str(p))


def parse_config(raw: bytes | str, source: str = "<config>") -> AppConfig:
    """Parse and validate YAML text. Raises :class:`ConfigError`."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(
                [("", f"{source}: not UTF-8 text (bad byte at offset {exc.start})")]
            ) from None
    else:
        text = raw
    try:
        data = yaml.load(text, Loader=_SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError([("", f"{source}: invalid YAML: {exc}")]) from None
    except RecursionError:  # PyYAML composes nodes recursively
        raise ConfigError([("", f"{source}: the YAML is nested too deeply")]) from None
    if data is None:
        raise ConfigError([("", f"{source}: the config is empty; it needs at least 'feeds'")])
    if not isinstance(data, dict):
        raise ConfigError([("", f"{source}: the top level must be a mapping of keys")])
    return validate_data(expand_env(data))


def validate_data(data: dict[str, Any]) -> AppConfig:
    """Convert parsed YAML into an :class:`AppConfig`, naming the key path of any error."""
    try:
        config = msgspec.convert(data, AppConfig, strict=True)
    except msgspec.ValidationError as exc:
        raise ConfigError([_explain(str(exc), data)]) from None
    problems = _semantic_problems(config)
    if problems:
        raise ConfigError(problems)
    return config


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<key>[^`]+)`")


def _explain(message: str, data: Any) -> tuple[str, str]:
    """Turn msgspec's ``"<msg> - at `$.a[0].b`"`` into ``("a[0].b", friendlier message)``."""
    m = _AT.match(message)
    assert m is not None
    msg, path = m.group("msg"), (m.group("path") or "").lstrip(".")
    unknown = _UNKNOWN.match(msg)
    if unknown:
        key = unknown.group("key")
        full = f"{path}.{key}" if path else key
        hint = _suggest(key, _struct_for_path(path))
        return full, f"unknown key{hint}"
    if msg.startswith("Object missing required field"):
        key = msg.split("`")[1]
        return (f"{path}.{key}" if path else key), "required key is missing"
    return path, msg


def _struct_for_path(path: str) -> type[msgspec.Struct] | None:
    """The Struct type expected at a key path (for 'did you mean' suggestions)."""
    current: Any = AppConfig
    for part in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", path):
        fields = (
            {f.name: f.type for f in msgspec.structs.fields(current)} if _is_struct(current) else {}
        )
        t = fields.get(part)
        if t is None:
            return None
        current = _unwrap(t)
    return current if _is_struct(current) else None


def _is_struct(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, msgspec.Struct)


def _unwrap(t: Any) -> Any:
    """list[X] / X | None / Annotated[X, ...] -> X (the first Struct inside, if any)."""
    args = getattr(t, "__args__", None)
    if _is_struct(t) or not args:
        return t
    for arg in args:
        inner = _unwrap(arg)
        if _is_struct(inner):
            return inner
    return t


def _suggest(key: str, struct: type[msgspec.Struct] | None) -> str:
    if struct is None:
        return ""
    names = [f.name for f in msgspec.structs.fields(struct)]
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{close[0]}'?)"
    return f" (valid keys: {', '.join(names)})"


def _semantic_problems(config: AppConfig) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    simulated = {sim.exchange for sim in config.simulators}
    for i, sim in enumerate(config.simulators):
        from streamkit.simulator.factory import EXCHANGES

        where = f"simulator[{i}]" if isinstance(config.simulator, list) else "simulator"
        if sim.exchange not in EXCHANGES:
            problems.append(
                (
                    f"{where}.exchange",
                    f"no simulator for {sim.exchange!r} (known: {', '.join(EXCHANGES)})",
                )
            )
        elif [s.exchange for s in config.simulators].index(sim.exchange) != i:
            # Simulators are looked up by exchange: a second one would replace the first,
            # which would then never be stopped.
            problems.append((f"{where}.exchange", f"a simulator for {sim.exchange!r} exists"))
    if not config.feeds:
        problems.append(("feeds", "at least one feed is required"))
    for i, feed in enumerate(config.feeds):
        if not feed.symbols:
            problems.append((f"feeds[{i}].symbols", "at least one symbol is required"))
        if not feed.channels:
            problems.append((f"feeds[{i}].channels", "at least one channel is required"))
        # A duplicate subscribes one stream twice and publishes each of its records twice.
        problems += _duplicates(f"feeds[{i}].symbols", "symbol", feed.symbols)
        problems += _duplicates(f"feeds[{i}].channels", "channel", feed.channels)
        if feed.name is not None and not feed.name.strip():
            problems.append((f"feeds[{i}].name", "must not be empty (omit it to use the exchange)"))
        for key in ("url", "rest_url"):
            value = getattr(feed, key)
            if value == "simulator":
                if feed.exchange not in simulated:
                    problems.append(
                        (
                            f"feeds[{i}].{key}",
                            f"'simulator' needs a top-level 'simulator:' section with "
                            f"exchange: {feed.exchange}",
                        )
                    )
            elif value is not None:
                problem = _ws_url_problem(value) if key == "url" else _rest_url_problem(value)
                if problem:
                    problems.append((f"feeds[{i}].{key}", problem))
        if feed.transport.ca_file is not None and not Path(feed.transport.ca_file).is_file():
            problems.append(
                (f"feeds[{i}].transport.ca_file", f"no such file: {feed.transport.ca_file}")
            )
    labels = [f.label for f in config.feeds]
    for i, label in enumerate(labels):
        if labels.index(label) != i:
            problems.append(
                (f"feeds[{i}].name", f"two feeds are named {label!r}; give each a unique 'name'")
            )
    for i, sink in enumerate(config.sinks):
        problems += _sink_problems(f"sinks[{i}]", sink)
    return problems


def _duplicates(path: str, what: str, values: list[str]) -> list[tuple[str, str]]:
    return [
        (f"{path}[{i}]", f"duplicate {what} {value!r}")
        for i, value in enumerate(values)
        if values.index(value) != i
    ]


def _ws_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a feed's WebSocket URL, or None. An empty value must not
    reach the plugin: it would fall back to the venue's real endpoint."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("ws", "wss"):
        return f"must be a ws:// or wss:// URL (or 'simulator'), got {url!r}"
    if not parts.hostname:
        return f"has no host: {url!r}"
    return None


def _rest_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a REST base URL, or None. Plugins append their endpoint's
    path (``/api/v3/depth``) to it, so it must not carry a path or query of its own."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        return f"must be an http:// or https:// URL (or 'simulator'), got {url!r}"
    if not parts.hostname:
        return f"has no host: {url!r}"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return (
            f"must be a base URL (scheme, host, port) without a path or query, got {url!r}: "
            f"the plugin adds the endpoint path itself"
        )
    return None


def _sink_problems(path: str, sink: SinkConfig) -> list[tuple[str, str]]:
    from streamkit.model import RECORD_TYPES

    problems: list[tuple[str, str]] = []
    # Checked here so that a typo is a config error, not a ValueError from App.start().
    for i, name in enumerate(sink.types):
        if name not in RECORD_TYPES:
            close = difflib.get_close_matches(name, list(RECORD_TYPES), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(
                (
                    f"{path}.types[{i}]",
                    f"unknown record type {name!r}{hint}; known: {', '.join(RECORD_TYPES)}",
                )
            )
    # An empty pattern matches nothing: the sink would silently receive no record.
    for key in ("exchange", "symbol"):
        if not getattr(sink, key):
            problems.append((f"{path}.{key}", "must not be empty (use '*' for all)"))
    if isinstance(sink, JsonlSinkConfig) and not sink.path.strip():
        problems.append((f"{path}.path", "must not be empty"))
    return problems
