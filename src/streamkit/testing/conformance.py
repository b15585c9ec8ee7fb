"""The conformance kit: does a Feed plugin keep the contract the runtime relies on?

Any plugin, first- or third-party, can be checked against its own captured frames with no
network and no actor::

    from streamkit.testing import assert_conforms

    def test_my_feed_conforms():
        assert_conforms(
            MyFeed,
            frames,  # bytes or str, exactly as received
            symbols=["BTC-USDT"],
            channels=["trades", "l2_book"],
            http_answers={"https://api.example/depth?symbol=BTCUSDT": snapshot_body},
        )

What :func:`check_feed` verifies (each failure is one :class:`Violation`):

- **class**: ``id``, ``channels`` (a subset of :data:`NORMALIZED_CHANNELS`), URLs, ``limits``
  and ``heartbeat`` are present, typed and sane;
- **config**: the requested channels exist and ``Feed.check()`` finds no problem;
- **symbols**: every configured symbol follows the naming convention and round-trips through
  ``exchange_symbol`` / ``normalize_symbol``;
- **plan and subscriptions**: ``plan()`` puts every stream on exactly one connection, none
  over ``max_streams_per_connection``; each ``subscriptions()`` message carries at most
  ``max_streams_per_message`` streams of its own connection, once, under a unique key;
- **records**: every record produced from the frames (and from HTTP answers) is a valid
  normalized record: ``exchange`` is the feed id, ``symbol`` one of the configured ones,
  ``recv_ts`` the receive time of the frame that produced it, ``ts`` None or a plausible ns
  time, prices/sizes real ``Decimal`` values (positive where a price must be), trade sides
  ``buy``/``sell``, and it survives the JSON encoding every sink uses;
- **books**: per symbol a book starts with a snapshot, delta ``seq`` values only increase,
  and no delta is published after a ``gap``/``checksum_mismatch`` until a new snapshot;
- **decoding**: ``on_message`` returns a bool for every frame, captured frames decode
  without raising, and garbage (:data:`GARBAGE_FRAMES`) raises a ``ValueError`` (such as
  :class:`~streamkit.feed.DecodeError` or msgspec's errors) instead of being swallowed;
- **actions**: ``on_http`` and ``resync`` never raise (the actor does not guard them).

How frames are replayed: one protocol is built over *every* configured stream (one plan,
whatever the limits; sharding is checked separately), ``on_connected`` is called, then each
frame in order. Every :class:`~streamkit.feed.HttpGet` the protocol asks for is answered at
once from ``http_answers`` (at most ``http_rounds`` times per URL, so a poller's next poll
and a refetch loop both end), :class:`~streamkit.feed.ResyncBook` calls ``protocol.resync``,
and sends/reconnects are recorded in the report.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from streamkit.feed import (
    Feed,
)
from streamkit.model import (
    Status,
)
from streamkit.testing.contract import (
    NORMALIZED_CHANNELS,
    SYMBOL_PATTERN,
    check_class,
    check_config,
    check_plan,
    check_symbols,
    make_feed,
)
from streamkit.testing.replay import (
    GARBAGE_FRAMES,
    HttpAnswer,
    HttpAnswers,
    Replay,
    check_garbage,
)
from streamkit.testing.report import ConformanceReport, FrameError, Violation

__all__ = [
    "GARBAGE_FRAMES",
    "NORMALIZED_CHANNELS",
    "SYMBOL_PATTERN",
    "ConformanceReport",
    "FrameError",
    "HttpAnswer",
    "HttpAnswers",
    "Violation",
    "assert_conforms",
    "check_feed",
]


def check_feed(
    feed_cls: type[Feed],
    frames: Iterable[bytes | str],
    *,
    symbols: Sequence[str],
    channels: Sequence[str],
    http_answers: HttpAnswers | None = None,
    options: Mapping[str, object] | None = None,
    url: str | None = None,
    rest_url: str | None = None,
    garbage: Iterable[bytes] = GARBAGE_FRAMES,
    plan_symbols: Sequence[str] | None = None,
    http_rounds: int = 2,
    allow_frame_errors: bool = False,
    require_records: bool = True,
) -> ConformanceReport:
    """Run ``feed_cls``'s protocol over ``frames`` with no network and check the contract.

    symbols, channels: the feed's configuration (normalized names), as in a config file.
    http_answers: answers to the protocol's REST requests (book snapshots, polls).
    options, url, rest_url: passed to the feed's config / constructor.
    garbage: frames that must raise (default :data:`GARBAGE_FRAMES`).
    plan_symbols: a larger symbol list to check sharding and subscription limits with
        (default: ``symbols``). Only ``plan()``/``subscriptions()`` see it.
    http_rounds: how many times each URL is answered (bounds polling and refetch loops).
    allow_frame_errors: list captured frames that raise in ``frame_errors`` instead of
        reporting them as violations.
    require_records: a replay of at least one frame must produce at least one data record
        (guards against a test whose frames silently match nothing).
    """
    report = ConformanceReport(feed_id=str(getattr(feed_cls, "id", feed_cls.__name__)))
    v = report.violations
    check_class(feed_cls, v)
    if v:
        return report  # without a sound class nothing below is meaningful
    feed = make_feed(feed_cls, symbols, channels, options, url, rest_url, v)
    if feed is None:
        return report
    check_config(feed, channels, v)
    check_symbols(feed, symbols, v)
    check_plan(feed, report)
    if plan_symbols is not None:
        scaled = make_feed(feed_cls, plan_symbols, channels, options, url, rest_url, v)
        if scaled is not None:
            check_plan(scaled, ConformanceReport(feed.id, violations=v))
    Replay(feed, report, http_answers, http_rounds, allow_frame_errors).run(frames)
    if (
        require_records
        and report.frames
        and not any(not isinstance(r, Status) for r in report.records)
    ):
        v.append(Violation("replay", f"{report.frames} frames produced no data record"))
    check_garbage(feed, garbage, v)
    return report


def assert_conforms(
    feed_cls: type[Feed],
    frames: Iterable[bytes | str],
    *,
    symbols: Sequence[str],
    channels: Sequence[str],
    http_answers: HttpAnswers | None = None,
    options: Mapping[str, object] | None = None,
    url: str | None = None,
    rest_url: str | None = None,
    garbage: Iterable[bytes] = GARBAGE_FRAMES,
    plan_symbols: Sequence[str] | None = None,
    http_rounds: int = 2,
    allow_frame_errors: bool = False,
    require_records: bool = True,
) -> ConformanceReport:
    """:func:`check_feed`, raising ``AssertionError`` listing every violation (pytest shows it).
    Returns the report so a test can assert on the records too."""
    report = check_feed(
        feed_cls,
        frames,
        symbols=symbols,
        channels=channels,
        http_answers=http_answers,
        options=options,
        url=url,
        rest_url=rest_url,
        garbage=garbage,
        plan_symbols=plan_symbols,
        http_rounds=http_rounds,
        allow_frame_errors=allow_frame_errors,
        require_records=require_records,
    )
    if not report.ok:
        raise AssertionError(report.summary())
    return report
