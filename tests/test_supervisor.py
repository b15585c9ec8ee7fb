"""Tests for streamkit.supervisor: restart types, strategies, intensity, nesting, shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable

import pytest
from structlog.testing import capture_logs

from streamkit.errors import EscalationError
from streamkit.supervisor import (
    ChildSpec,
    Restart,
    Strategy,
    Supervisor,
    SupervisorEvent,
)

ChildFn = Callable[[], Awaitable[None]]


async def wait_until(predicate: Callable[[], bool], limit: float = 1.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.001)


async def assert_no_stray_tasks() -> None:
    for _ in range(3):
        await asyncio.sleep(0)
    stray = asyncio.all_tasks() - {asyncio.current_task()}
    assert not stray, f"leftover tasks: {stray}"


async def block_forever() -> None:
    await asyncio.Event().wait()


class Recorder:
    """Makes children that record 'start:<name>', 'fail:<name>' and 'stop:<name>' (cancelled)
    into one shared, ordered log."""

    def __init__(self) -> None:
        self.log: list[str] = []

    def starts(self, name: str) -> int:
        return self.log.count(f"start:{name}")

    def forever(self, name: str) -> ChildFn:
        async def child() -> None:
            self.log.append(f"start:{name}")
            try:
                await block_forever()
            except asyncio.CancelledError:
                self.log.append(f"stop:{name}")
                raise

        return child

    def failing(self, name: str, times: int) -> ChildFn:
        """Fails (shortly after starting) on its first ``times`` runs, then runs forever."""
        forever = self.forever(name)

        async def child() -> None:
            if self.starts(name) >= times:
                await forever()
                return
            self.log.append(f"start:{name}")
            await asyncio.sleep(0.005)
            self.log.append(f"fail:{name}")
            raise RuntimeError(f"{name} failed")

        return child


async def test_one_for_one_restarts_only_the_failed_child() -> None:
    rec = Recorder()
    sup = Supervisor(
        "s",
        [ChildSpec("steady", rec.forever("steady")), ChildSpec("flaky", rec.failing("flaky", 2))],
    )
    task = asyncio.create_task(sup.run())
    await wait_until(lambda: rec.starts("flaky") == 3)
    await asyncio.sleep(0.02)  # room for any wrong extra restart

    assert rec.starts("flaky") == 3
    assert rec.starts("steady") == 1
    assert "stop:steady" not in rec.log
    assert sup.restarts == {"steady": 0, "flaky": 2}
    assert sup.running_children == ("steady", "flaky")

    await sup.stop()
    await task  # returns normally: no exception
    await assert_no_stray_tasks()


@pytest.mark.parametrize(
    ("restart", "fails", "expected_starts"),
    [
        (Restart.PERMANENT, False, 2),
        (Restart.PERMANENT, True, 2),
        (Restart.TRANSIENT, False, 1),
        (Restart.TRANSIENT, True, 2),
        (Restart.TEMPORARY, False, 1),
        (Restart.TEMPORARY, True, 1),
    ],
)
async def test_restart_types(restart: Restart, fails: bool, expected_starts: int) -> None:
    starts = 0

    async def child() -> None:
        nonlocal starts
        starts += 1
        if starts > 1:
            await block_forever()
        await asyncio.sleep(0)
        if fails:
            raise RuntimeError("boom")

    spec = ChildSpec("c", child, restart)
    sup = Supervisor("s", [spec])
    task = asyncio.create_task(sup.run())
    await wait_until(lambda: task.done() or starts == 2)
    await asyncio.sleep(0.02)

    assert starts == expected_starts
    # With its only child not restarted, run() returns on its own (all children ended).
    assert task.done() == (expected_starts == 1)
    await sup.stop()
    await task
    # Temporary children are forgotten once they end; the others stay configured.
    assert sup.children == (() if restart is Restart.TEMPORARY else (spec,))
    await assert_no_stray_tasks()


async def test_cancellation_by_someone_else_is_a_failure() -> None:
    child_tasks: list[asyncio.Task[object]] = []
    events: list[SupervisorEvent] = []

    async def child() -> None:
        task = asyncio.current_task()
        assert task is not None
        child_tasks.append(task)
        await block_forever()

    sup = Supervisor("s", [ChildSpec("c", child, Restart.TRANSIENT)], on_event=events.append)
    task = asyncio.create_task(sup.run())
    await wait_until(lambda: len(child_tasks) == 1)
    child_tasks[0].cancel()
    await wait_until(lambda: len(child_tasks) == 2)

    assert [e.kind for e in events] == ["started", "failed", "restarted"]
    assert isinstance(events[1].error, asyncio.CancelledError)
    await sup.stop()
    await task
    await assert_no_stray_tasks()


async def test_intensity_exceeded_escalates_and_stops_everything() -> None:
    rec = Recorder()
    events: list[SupervisorEvent] = []
    failures: list[ValueError] = []

    async def bad() -> None:
        exc = ValueError(f"failure {len(failures) + 1}")
        failures.append(exc)
        raise exc

    sup = Supervisor(
        "top",
        [ChildSpec("steady", rec.forever("steady")), ChildSpec("bad", bad)],
        max_restarts=3,
        within=10,
        on_event=events.append,
    )
    with pytest.raises(EscalationError) as info:
        await asyncio.wait_for(sup.run(), 1)

    err = info.value
    assert (err.supervisor, err.child) == ("top", "bad")
    # 3 restarts are allowed; the failure that would need a 4th escalates.
    assert len(failures) == 4
    assert err.cause is failures[-1]
    assert err.__cause__ is failures[-1]
    assert sup.restarts["bad"] == 3
    assert rec.log == ["start:steady", "stop:steady"]
    assert events[-1] == SupervisorEvent("top", "bad", "escalated", failures[-1])
    assert not sup.running
    assert sup.running_children == ()
    await assert_no_stray_tasks()


async def test_permanent_child_returning_in_a_loop_escalates_without_cause() -> None:
    async def returns() -> None:
        return None

    sup = Supervisor("s", [ChildSpec("c", returns)], max_restarts=2, within=10)
    with pytest.raises(EscalationError) as info:
        await asyncio.wait_for(sup.run(), 1)
    assert info.value.cause is None
    assert sup.restarts["c"] == 2
    await assert_no_stray_tasks()


@pytest.mark.parametrize(("spacing", "escalates"), [(0.12, False), (0.0, True)])
async def test_restart_intensity_window_slides(spacing: float, escalates: bool) -> None:
    starts = 0

    async def child() -> None:
        nonlocal starts
        starts += 1
        if starts > 3:
            await block_forever()
        await asyncio.sleep(spacing)
        raise RuntimeError(f"failure {starts}")

    # One restart per 0.1 s allowed: restarts spread further apart never pile up in the
    # window (a counter that never forgets would escalate at the second one), a burst does.
    sup = Supervisor("s", [ChildSpec("c", child)], max_restarts=1, within=0.1)
    task = asyncio.create_task(sup.run())
    await wait_until(lambda: task.done() or starts == 4, limit=2)

    if escalates:
        with pytest.raises(EscalationError):
            await task
        assert starts == 2
    else:
        assert not task.done()
        assert sup.restarts["c"] == 3
        await sup.stop()
        await task
    await assert_no_stray_tasks()


async def test_one_for_all_restarts_every_child_in_order() -> None:
    rec = Recorder()
    events: list[SupervisorEvent] = []
    sup = Supervisor(
        "s",
        [
            ChildSpec("a", rec.forever("a")),
            ChildSpec("b", rec.failing("b", 1)),
            ChildSpec("c", rec.forever("c")),
        ],
        strategy=Strategy.ONE_FOR_ALL,
        on_event=events.append,
    )
    task = asyncio.create_task(sup.run())
    await wait_until(lambda: rec.starts("c") == 2)
    await sup.stop()
    await task

    assert rec.log == [
        *["start:a", "start:b", "start:c", "fail:b"],
        *["stop:c", "stop:a"],  # running siblings stopped in reverse start order
        *["start:a", "start:b", "start:c"],  # then everything started in start order
        *["stop:c", "stop:b", "stop:a"],  # final stop()
    ]
    assert sup.restarts == {"a": 1, "b": 1, "c": 1}
    assert [(e.kind, e.child) for e in events][3:] == [
        ("failed", "b"),
        ("restarted", "a"),
        ("restarted", "b"),
        ("restarted", "c"),
    ]
    await assert_no_stray_tasks()


async def test_rest_for_one_restarts_the_failed_child_and_later_ones() -> None:
    rec = Recorder()
    sup = Supervisor(
        "s",
        [
            ChildSpec("a", rec.forever("a")),
            ChildSpec("b", rec.failing("b", 1)),
            ChildSpec("c", rec.forever("c")),
            # A temporary child taken down by a sibling's restart is not restarted (OTP).
            ChildSpec("d", rec.forever("d"), Restart.TEMPORARY),
        ],
        strategy=Strategy.REST_FOR_ONE,
    )
    task = asyncio.create_task(sup.run())
    await wait_until(lambda: rec.starts("c") == 2)
    await sup.stop()
    await task

    assert rec.log == [
        *["start:a", "start:b", "start:c", "start:d", "fail:b"],
        *["stop:d", "stop:c", "start:b", "start:c"],
        *["stop:c", "stop:b", "stop:a"],
    ]
    assert sup.restarts == {"a": 0, "b": 1, "c": 1}
    assert [spec.name for spec in sup.children] == ["a", "b", "c"]
    await assert_no_stray_tasks()


async def test_stop_during_a_group_restart_restarts_nothing() -> None:
    rec = Recorder()
    events: list[SupervisorEvent] = []

    async def slow_to_stop() -> None:
        rec.log.append("start:a")
        try:
            await block_forever()
        except asyncio.CancelledError:
            await asyncio.sleep(0.1)  # cleanup in progress while stop() arrives
            rec.log.append("stop:a")
            raise

    sup = Supervisor(
        "s",
        [ChildSpec("a", slow_to_stop), ChildSpec("b", rec.failing("b", 1))],
        strategy=Strategy.ONE_FOR_ALL,
        on_event=events.append,
    )
    task = asyncio.create_task(sup.run())
    await wait_until(lambda: "fail:b" in rec.log)
    await asyncio.sleep(0.01)  # the supervisor is now waiting for "a" to stop
    await sup.stop()
    await task

    assert rec.log == ["start:a", "start:b", "fail:b", "stop:a"]
    assert [e.kind for e in events] == ["started", "started", "failed"]
    await assert_no_stray_tasks()


async def test_nested_escalation_is_a_child_failure_in_the_parent() -> None:
    rec = Recorder()
    events: list[SupervisorEvent] = []
    attempts = 0

    async def always_fails() -> None:
        nonlocal attempts
        attempts += 1
        raise ValueError("bad")

    inner = Supervisor("inner", [ChildSpec("bad", always_fails)], max_restarts=1, within=10)
    outer = Supervisor(
        "outer",
        [ChildSpec("steady", rec.forever("steady")), inner.as_child()],
        max_restarts=2,
        within=10,
        on_event=events.append,
    )
    with pytest.raises(EscalationError) as info:
        await asyncio.wait_for(outer.run(), 2)

    err = info.value
    assert (err.supervisor, err.child) == ("outer", "inner")
    assert isinstance(err.cause, EscalationError)
    assert (err.cause.supervisor, err.cause.child) == ("inner", "bad")
    assert isinstance(err.cause.cause, ValueError)
    # The parent restarted the inner supervisor twice, each run starting with a fresh window:
    # 3 inner runs x (first attempt + 1 allowed restart).
    assert attempts == 6
    assert [e.kind for e in events if e.child == "inner"] == [
        *["started", "failed", "restarted", "failed", "restarted", "failed"],
        "escalated",
    ]
    assert all(isinstance(e.error, EscalationError) for e in events if e.kind == "failed")
    # one_for_one in the parent: the sibling ran undisturbed until the parent gave up.
    assert rec.log == ["start:steady", "stop:steady"]
    assert not inner.running
    await assert_no_stray_tasks()


async def test_stop_shuts_down_in_reverse_start_order_including_nested() -> None:
    rec = Recorder()
    inner = Supervisor(
        "inner", [ChildSpec("x", rec.forever("x")), ChildSpec("y", rec.forever("y"))]
    )
    outer = Supervisor(
        "outer",
        [ChildSpec("a", rec.forever("a")), inner.as_child(), ChildSpec("b", rec.forever("b"))],
    )
    task = asyncio.create_task(outer.run())
    await wait_until(lambda: len(rec.log) == 4)

    # Idempotent, concurrent, and mixed with the synchronous form.
    outer.request_stop()
    await asyncio.gather(outer.stop(), outer.stop())
    assert task.done()
    await task  # returns normally: no exception
    assert rec.log[4:] == ["stop:b", "stop:y", "stop:x", "stop:a"]
    assert not outer.running
    assert not inner.running
    await assert_no_stray_tasks()


async def test_request_stop_from_a_signal_handler() -> None:
    rec = Recorder()
    loop = asyncio.get_running_loop()
    sup = Supervisor("s", [ChildSpec("a", rec.forever("a"))])
    loop.add_signal_handler(signal.SIGUSR1, sup.request_stop)
    try:
        task = asyncio.create_task(sup.run())
        await wait_until(lambda: rec.log == ["start:a"])
        os.kill(os.getpid(), signal.SIGUSR1)
        await asyncio.wait_for(task, 1)
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)
    assert rec.log == ["start:a", "stop:a"]
    await assert_no_stray_tasks()


async def test_stop_before_run_and_running_again() -> None:
    rec = Recorder()
    events: list[SupervisorEvent] = []
    sup = Supervisor("s", [ChildSpec("a", rec.forever("a"))], on_event=events.append)
    await sup.stop()
    await asyncio.wait_for(sup.run(), 0.5)  # returns at once, starting nothing
    assert events == []

    # The stop was consumed by that run: the supervisor can run again.
    task = asyncio.create_task(sup.run())
    await wait_until(lambda: rec.log == ["start:a"])
    with pytest.raises(RuntimeError, match="already running"):
        await sup.run()
    await sup.stop()
    await task
    assert rec.log == ["start:a", "stop:a"]

    # Without children (and keep_running=False) there is nothing to supervise.
    await asyncio.wait_for(Supervisor("empty").run(), 0.5)
    await assert_no_stray_tasks()


async def test_cancelling_run_stops_all_children() -> None:
    rec = Recorder()
    inner = Supervisor("inner", [ChildSpec("x", rec.forever("x"))])
    sup = Supervisor(
        "s",
        [ChildSpec("a", rec.forever("a")), inner.as_child(), ChildSpec("b", rec.forever("b"))],
    )
    task = asyncio.create_task(sup.run())
    await wait_until(lambda: len(rec.log) == 3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rec.log[3:] == ["stop:b", "stop:x", "stop:a"]
    assert not sup.running
    await assert_no_stray_tasks()


async def test_stubborn_child_is_abandoned_after_shutdown_timeout() -> None:
    rec = Recorder()
    release = asyncio.Event()

    async def stubborn() -> None:
        try:
            await block_forever()
        except asyncio.CancelledError:
            await release.wait()  # ignores the cancellation until the test lets it go
            rec.log.append("stop:stubborn")

    sup = Supervisor(
        "s",
        [ChildSpec("a", rec.forever("a")), ChildSpec("stubborn", stubborn, shutdown_timeout=0.05)],
    )
    task = asyncio.create_task(sup.run())
    await wait_until(lambda: rec.log == ["start:a"])
    await asyncio.sleep(0)  # let the stubborn child reach its wait

    with capture_logs() as logs:
        began = time.monotonic()
        await asyncio.wait_for(sup.stop(), 1)
        elapsed = time.monotonic() - began
    await task

    assert elapsed < 0.5
    # It was stopped first (reverse order) and given up on; the stop went on with the rest.
    assert rec.log == ["start:a", "stop:a"]
    abandoned = [e for e in logs if e["event"] == "child abandoned"]
    assert [(e["supervisor"], e["child"], e["log_level"]) for e in abandoned] == [
        ("s", "stubborn", "error")
    ]
    (leftover,) = sup.abandoned_tasks
    assert not leftover.done()

    release.set()
    await leftover
    assert rec.log[-1] == "stop:stubborn"
    await asyncio.sleep(0)
    assert not sup.abandoned_tasks
    await assert_no_stray_tasks()


async def test_failures_are_logged_and_reported() -> None:
    rec = Recorder()
    events: list[SupervisorEvent] = []
    with capture_logs() as logs:
        sup = Supervisor("s", [ChildSpec("c", rec.failing("c", 1))], on_event=events.append)
        task = asyncio.create_task(sup.run())
        await wait_until(lambda: rec.starts("c") == 2)
        await sup.stop()
        await task

    assert [(e.supervisor, e.child, e.kind) for e in events] == [
        ("s", "c", "started"),
        ("s", "c", "failed"),
        ("s", "c", "restarted"),
    ]
    error = events[1].error
    assert isinstance(error, RuntimeError)
    assert str(error) == "c failed"
    failed = [e for e in logs if e["event"] == "child failed"]
    assert len(failed) == 1
    assert failed[0]["log_level"] == "error"
    assert (failed[0]["supervisor"], failed[0]["child"]) == ("s", "c")
    assert failed[0]["exc_info"] is error
    await assert_no_stray_tasks()


async def test_broken_on_event_callback_does_not_stop_supervision() -> None:
    rec = Recorder()

    def broken(event: SupervisorEvent) -> None:
        raise RuntimeError("observer bug")

    with capture_logs() as logs:
        sup = Supervisor("s", [ChildSpec("c", rec.failing("c", 1))], on_event=broken)
        task = asyncio.create_task(sup.run())
        await wait_until(lambda: rec.starts("c") == 2)
        await sup.stop()
        await task
    assert sum(e["event"] == "on_event callback raised" for e in logs) == 3
    await assert_no_stray_tasks()


async def test_dynamic_children() -> None:
    rec = Recorder()
    sup = Supervisor("s", keep_running=True)
    task = asyncio.create_task(sup.run())
    await asyncio.sleep(0.01)
    assert not task.done()  # keep_running: an empty supervisor waits for children

    await sup.start_child(ChildSpec("a", rec.forever("a")))
    assert sup.running_children == ("a",)  # started by the time start_child returns
    with pytest.raises(ValueError, match="already has a child"):
        sup.add_child(ChildSpec("a", rec.forever("a")))
    sup.add_child(ChildSpec("b", rec.forever("b")))
    await wait_until(lambda: rec.log == ["start:a", "start:b"])

    await sup.remove_child("a")
    assert rec.log[-1] == "stop:a"
    assert [spec.name for spec in sup.children] == ["b"]
    with pytest.raises(KeyError):
        await sup.remove_child("a")

    await sup.stop()
    await task
    assert rec.log[-1] == "stop:b"
    await assert_no_stray_tasks()
