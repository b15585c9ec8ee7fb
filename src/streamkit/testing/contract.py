"""Static checks of a Feed plugin: class attributes, config, symbol mapping, plan and
subscriptions (no frames needed)."""

from __future__ import annotations

import collections
import re
from collections.abc import Mapping, Sequence

from streamkit.config import FeedConfig
from streamkit.feed import (
    ConnectionPlan,
    Feed,
    Heartbeat,
    Limits,
    Stream,
    SubscribeRequest,
)
from streamkit.testing.report import ConformanceReport, Violation

NORMALIZED_CHANNELS = frozenset(
    {"trades", "bbo", "l2_book", "ticker", "funding", "open_interest", "liquidations", "candles"}
)
"""Every channel name a plugin may declare (DESIGN.md)."""

SYMBOL_PATTERN = re.compile(r"^[A-Z0-9]+-[A-Z0-9]+(-PERP|-\d{6}(-\d+(\.\d+)?-[CP])?)?$")
"""Normalized symbols: BASE-QUOTE, BASE-QUOTE-PERP, BASE-QUOTE-YYMMDD, and options
BASE-QUOTE-YYMMDD-STRIKE-C|P."""

FEED_ID_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")


def check_class(feed_cls: type[Feed], v: list[Violation]) -> None:
    if not (isinstance(feed_cls, type) and issubclass(feed_cls, Feed)):
        v.append(Violation("class", f"{feed_cls!r} is not a streamkit.feed.Feed subclass"))
        return
    name = feed_cls.__name__
    feed_id = getattr(feed_cls, "id", None)
    if not isinstance(feed_id, str) or not FEED_ID_PATTERN.match(feed_id):
        v.append(Violation("class.id", f"{name}.id must be a lowercase id str, not {feed_id!r}"))
    channels = getattr(feed_cls, "channels", None)
    if not isinstance(channels, frozenset) or not channels:
        v.append(Violation("class.channels", f"{name}.channels must be a non-empty frozenset"))
    elif unknown := sorted(str(c) for c in channels - NORMALIZED_CHANNELS):
        v.append(
            Violation(
                "class.channels",
                f"{name}.channels has non-normalized names {unknown} "
                f"(allowed: {sorted(NORMALIZED_CHANNELS)})",
            )
        )
    ws = getattr(feed_cls, "default_url", None)
    if not isinstance(ws, str) or not ws.startswith(("ws://", "wss://")):
        v.append(Violation("class.default_url", f"{name}.default_url must be ws(s)://, not {ws!r}"))
    rest = feed_cls.default_rest_url
    if rest is not None and not (
        isinstance(rest, str) and rest.startswith(("http://", "https://"))
    ):
        v.append(Violation("class.default_rest_url", f"{name}.default_rest_url must be http(s)://"))
    check_limits(name, feed_cls.limits, v)
    check_heartbeat(name, feed_cls.heartbeat, v)
    abstract = sorted(getattr(feed_cls, "__abstractmethods__", ()))
    if abstract:
        v.append(Violation("class", f"{name} leaves abstract methods unimplemented: {abstract}"))


def check_limits(name: str, limits: object, v: list[Violation]) -> None:
    if not isinstance(limits, Limits):
        v.append(Violation("class.limits", f"{name}.limits must be a Limits, not {limits!r}"))
        return
    for attr in ("max_streams_per_connection", "max_streams_per_message", "max_connects"):
        value = getattr(limits, attr)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            v.append(Violation("class.limits", f"{name}.limits.{attr} must be an int >= 1"))
    for attr in ("max_messages_per_second", "connect_window"):
        value = getattr(limits, attr)
        if not isinstance(value, int | float) or not value > 0:
            v.append(Violation("class.limits", f"{name}.limits.{attr} must be > 0"))
    age = limits.max_connection_age
    if age is not None and not (isinstance(age, int | float) and age > 0):
        v.append(Violation("class.limits", f"{name}.limits.max_connection_age must be > 0"))
    if (
        isinstance(limits.max_streams_per_message, int)
        and isinstance(limits.max_streams_per_connection, int)
        and limits.max_streams_per_message > limits.max_streams_per_connection
    ):
        v.append(
            Violation(
                "class.limits",
                f"{name}.limits.max_streams_per_message exceeds max_streams_per_connection",
            )
        )


def check_heartbeat(name: str, beat: object, v: list[Violation]) -> None:
    if not isinstance(beat, Heartbeat):
        v.append(Violation("class.heartbeat", f"{name}.heartbeat must be a Heartbeat"))
        return
    if beat.interval is not None and not (
        isinstance(beat.interval, int | float) and beat.interval > 0
    ):
        v.append(Violation("class.heartbeat", f"{name}.heartbeat.interval must be > 0 or None"))
    if beat.payload is not None:
        if not isinstance(beat.payload, bytes) or not beat.payload:
            v.append(Violation("class.heartbeat", f"{name}.heartbeat.payload must be bytes"))
        if beat.interval is None:
            v.append(
                Violation(
                    "class.heartbeat",
                    f"{name}.heartbeat has a payload but no interval: it would never be sent",
                )
            )


def make_feed(
    feed_cls: type[Feed],
    symbols: Sequence[str],
    channels: Sequence[str],
    options: Mapping[str, object] | None,
    url: str | None,
    rest_url: str | None,
    v: list[Violation],
) -> Feed | None:
    try:
        config = FeedConfig(
            exchange=feed_cls.id,
            symbols=list(symbols),
            channels=list(channels),
            options=dict(options or {}),
        )
        return feed_cls(config, url=url, rest_url=rest_url)
    except Exception as exc:
        v.append(Violation("config", f"{feed_cls.__name__}(config) raised {exc!r}"))
        return None


def check_config(feed: Feed, channels: Sequence[str], v: list[Violation]) -> None:
    for channel in channels:
        if channel not in feed.channels:
            v.append(Violation("config", f"channel {channel!r} is not in {feed.id}.channels"))
    try:
        problems = feed.check()
    except Exception as exc:
        v.append(Violation("config", f"check() raised {exc!r}"))
        return
    for key, message in problems:
        v.append(Violation("config", f"check() reports {key}: {message}"))


def check_symbols(feed: Feed, symbols: Sequence[str], v: list[Violation]) -> None:
    for symbol in symbols:
        if not SYMBOL_PATTERN.match(symbol):
            v.append(Violation("symbols", f"{symbol!r} is not a normalized symbol"))
        try:
            native = feed.exchange_symbol(symbol)
            back = feed.normalize_symbol(native)
            again = feed.exchange_symbol(back)
        except Exception as exc:
            v.append(Violation("symbols", f"{symbol!r} does not map: {exc!r}"))
            continue
        if not isinstance(native, str) or back != symbol or again != native:
            v.append(
                Violation(
                    "symbols",
                    f"{symbol!r} -> {native!r} -> {back!r}: the mapping does not round-trip",
                )
            )


# --- plan and subscriptions --------------------------------------------------------------------


def check_plan(feed: Feed, report: ConformanceReport) -> None:
    v = report.violations
    limits = feed.limits
    try:
        streams = feed.streams()
        plans = feed.plan()
    except Exception as exc:
        v.append(Violation("plan", f"streams()/plan() raised {exc!r}"))
        return
    planned: collections.Counter[Stream] = collections.Counter()
    for position, plan in enumerate(plans):
        if not isinstance(plan, ConnectionPlan):
            v.append(Violation("plan", f"plan() returned {plan!r}, not a ConnectionPlan"))
            return
        if plan.index != position:
            v.append(Violation("plan", f"connection {position} has index {plan.index}"))
        if len(plan.streams) > limits.max_streams_per_connection:
            v.append(
                Violation(
                    "plan",
                    f"connection {plan.index} carries {len(plan.streams)} streams "
                    f"(limit {limits.max_streams_per_connection})",
                )
            )
        planned.update(plan.streams)
        check_subscriptions(feed, plan, report)
    if planned != collections.Counter(streams):
        v.append(Violation("plan", "plan() does not put every stream on exactly one connection"))


def check_subscriptions(feed: Feed, plan: ConnectionPlan, report: ConformanceReport) -> None:
    v = report.violations
    limits = feed.limits
    where = f"connection {plan.index}"
    try:
        protocol = feed.protocol(plan, f"{feed.label}/{plan.index}")
        requests = protocol.subscriptions()
    except Exception as exc:
        v.append(Violation("subscriptions", f"{where}: protocol()/subscriptions() raised {exc!r}"))
        return
    keys: set[str] = set()
    subscribed: collections.Counter[Stream] = collections.Counter()
    own = set(plan.streams)
    for request in requests:
        if not isinstance(request, SubscribeRequest):
            v.append(Violation("subscriptions", f"{where}: {request!r} is not a SubscribeRequest"))
            continue
        if not 1 <= len(request.streams) <= limits.max_streams_per_message:
            v.append(
                Violation(
                    "subscriptions",
                    f"{where}: request {request.key!r} carries {len(request.streams)} streams "
                    f"(1..{limits.max_streams_per_message} allowed)",
                )
            )
        if not isinstance(request.payload, bytes) or not request.payload:
            v.append(Violation("subscriptions", f"{where}: request {request.key!r} has no payload"))
        if request.key in keys:
            v.append(Violation("subscriptions", f"{where}: key {request.key!r} used twice"))
        keys.add(request.key)
        subscribed.update(request.streams)
        if foreign := [s.name for s in request.streams if s not in own]:
            v.append(
                Violation("subscriptions", f"{where}: subscribes streams of no plan {foreign}")
            )
    if twice := [s.name for s, n in subscribed.items() if n > 1]:
        v.append(Violation("subscriptions", f"{where}: streams subscribed twice {twice}"))
    if sum(subscribed.values()) > limits.max_streams_per_connection:
        v.append(Violation("subscriptions", f"{where}: over max_streams_per_connection"))
    report.unsubscribed_streams.extend(s for s in plan.streams if s not in subscribed)
