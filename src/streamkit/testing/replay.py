"""Replaying frames through a protocol the way the connection actor would, and the
garbage-frame check."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Mapping

from streamkit.feed import (
    Action,
    ConnectionPlan,
    Feed,
    FeedProtocol,
    HttpGet,
    Output,
    Reconnect,
    ResyncBook,
    Send,
)
from streamkit.testing.records import RecordChecker
from streamkit.testing.report import ConformanceReport, FrameError, Violation

GARBAGE_FRAMES: tuple[bytes, ...] = (
    b"garbage",
    b"{}",
    b"[]",
    b"\x00\xff\xfe\x80\x9c binary \x01\x02",
)
"""Frames no venue sends: a plugin must raise on each (the actor reports a decode_error)."""

RECV_TS_BASE = 1_700_000_000 * 10**9
"""The kit's clock: the n-th call into the protocol gets ``RECV_TS_BASE + n``."""

HttpAnswer = bytes | str | tuple[int, bytes | str]
"""An answer to an HttpGet: a body (status 200) or ``(status, body)``."""

HttpAnswers = Mapping[str, HttpAnswer] | Callable[[HttpGet], HttpAnswer | None]
"""Answers by exact URL, or a function of the request (None: leave it unanswered)."""


class Replay:
    """Drives one protocol through the frames the way the connection actor would."""

    def __init__(
        self,
        feed: Feed,
        report: ConformanceReport,
        http_answers: HttpAnswers | None,
        http_rounds: int,
        allow_frame_errors: bool,
    ) -> None:
        self.feed = feed
        self.report = report
        self.v = report.violations
        self.http_answers = http_answers
        self.http_rounds = http_rounds
        self.allow_frame_errors = allow_frame_errors
        self.answered: collections.Counter[str] = collections.Counter()
        self.records = RecordChecker(feed, self.v)
        self.clock = RECV_TS_BASE

    def tick(self) -> int:
        self.clock += 1
        return self.clock

    def run(self, frames: Iterable[bytes | str]) -> None:
        plan = ConnectionPlan(0, tuple(self.feed.streams()))
        connection = f"{self.feed.label}/0"
        try:
            protocol = self.feed.protocol(plan, connection)
            ws_url = protocol.url()
        except Exception as exc:
            self.v.append(Violation("protocol", f"protocol()/url() raised {exc!r}"))
            return
        if not isinstance(ws_url, str):
            self.v.append(Violation("protocol", f"url() returned {ws_url!r}, not a str"))
        out = Output()
        recv_ts = self.tick()
        try:
            protocol.on_connected(recv_ts, out)
            # The actor's order: on_connected, then subscriptions() (which may number requests).
            protocol.subscriptions()
        except Exception as exc:
            self.v.append(Violation("protocol", f"on_connected/subscriptions raised {exc!r}"))
        self.settle(protocol, out, recv_ts, "on_connected")
        for index, frame in enumerate(frames):
            data = frame.encode() if isinstance(frame, str) else frame
            self.report.frames += 1
            out = Output()
            recv_ts = self.tick()
            try:
                is_data = protocol.on_message(data, recv_ts, out)
            except Exception as exc:
                error = FrameError(index, data[:200], repr(exc))
                self.report.frame_errors.append(error)
                if not self.allow_frame_errors:
                    self.v.append(
                        Violation("decode", f"frame {index} raised {exc!r}: {data[:120]!r}")
                    )
                continue
            if not isinstance(is_data, bool):
                self.v.append(
                    Violation("decode", f"frame {index}: on_message returned {is_data!r}, not bool")
                )
            elif is_data:
                self.report.data_frames += 1
            self.settle(protocol, out, recv_ts, f"frame {index}")

    def settle(self, protocol: FeedProtocol, out: Output, recv_ts: int, origin: str) -> None:
        """Check the records of one call, then perform its actions (depth first, like the
        actor's dispatch: answers to HTTP requests arrive before the next frame)."""
        for record in out.records:
            self.records.check(record, recv_ts, origin)
        self.report.records.extend(out.records)
        self.report.acks.extend(out.acks)
        for action in list(out.actions):
            self.perform(protocol, action, origin)

    def perform(self, protocol: FeedProtocol, action: Action, origin: str) -> None:
        if isinstance(action, HttpGet):
            self.report.http_requests.append(action)
            answer = self.answer(action)
            if answer is None:
                self.report.unanswered_http.append(action)
                return
            status, body = answer
            out = Output()
            recv_ts = self.tick()
            try:
                protocol.on_http(action, status, body, recv_ts, out)
            except Exception as exc:
                self.v.append(Violation("http", f"on_http({action.url}) raised {exc!r}"))
                return
            self.settle(protocol, out, recv_ts, f"answer to {action.url}")
        elif isinstance(action, ResyncBook):
            self.report.resyncs.append(action)
            if action.symbol not in self.feed.config.symbols:
                self.v.append(Violation("actions", f"{origin}: resync of unknown {action.symbol}"))
            try:
                follow_ups = protocol.resync(action.symbol, action.reason)
            except Exception as exc:
                self.v.append(Violation("actions", f"{origin}: resync() raised {exc!r}"))
                return
            for follow_up in follow_ups:
                self.perform(protocol, follow_up, origin)
        elif isinstance(action, Send):
            if not isinstance(action.payload, bytes):
                self.v.append(Violation("actions", f"{origin}: Send payload is not bytes"))
            self.report.sends.append(action)
        elif isinstance(action, Reconnect):
            self.report.reconnects.append(action)
        else:
            self.v.append(Violation("actions", f"{origin}: unknown action {action!r}"))

    def answer(self, request: HttpGet) -> tuple[int, bytes] | None:
        if self.http_answers is None or self.answered[request.url] >= self.http_rounds:
            return None
        if callable(self.http_answers):
            found = self.http_answers(request)
        else:
            found = self.http_answers.get(request.url)
        if found is None:
            return None
        self.answered[request.url] += 1
        status, body = found if isinstance(found, tuple) else (200, found)
        return status, body.encode() if isinstance(body, str) else body


def check_garbage(feed: Feed, garbage: Iterable[bytes], v: list[Violation]) -> None:
    """Each garbage frame, on a fresh protocol, must raise a ValueError and produce nothing."""
    plan = ConnectionPlan(0, tuple(feed.streams()))
    for frame in garbage:
        try:
            protocol = feed.protocol(plan, f"{feed.label}/0")
            protocol.on_connected(RECV_TS_BASE, Output())
        except Exception as exc:
            v.append(Violation("garbage", f"could not build a fresh protocol: {exc!r}"))
            return
        out = Output()
        try:
            result = protocol.on_message(frame, RECV_TS_BASE, out)
        except ValueError:
            pass  # DecodeError, msgspec.DecodeError/ValidationError, UnicodeDecodeError
        except Exception as exc:
            v.append(
                Violation(
                    "garbage",
                    f"{frame!r} raised {type(exc).__name__} ({exc}); raise DecodeError "
                    "(a ValueError) for frames you cannot understand",
                )
            )
        else:
            v.append(
                Violation("garbage", f"{frame!r} was accepted (returned {result!r}), not raised")
            )
        if out.records:
            v.append(Violation("garbage", f"{frame!r} produced records {out.records!r}"))
