"""Erlang/OTP-style supervision of asyncio tasks.

A :class:`Supervisor` owns an ordered list of children (:class:`ChildSpec`). :meth:`Supervisor.run`
starts them in order, each as its own task, and watches them:

* A child *fails* when its coroutine raises anything, including a ``CancelledError`` that the
  supervisor did not cause itself (someone else cancelled the child's task; except while the
  supervisor is stopping that child anyway). A child that returns has *exited normally*.
* Its :class:`Restart` type decides whether an ended child is started again: ``permanent``
  always, ``transient`` only after a failure, ``temporary`` never (and it is forgotten, as in OTP).
* The :class:`Strategy` decides which children a restart involves: only the one that ended
  (``one_for_one``), all of them (``one_for_all``), or it and every child started after it
  (``rest_for_one``). Involved children that are still running are stopped in reverse start
  order, then all of them are started again in start order.
* Restart intensity: a supervisor that would make more than ``max_restarts`` restarts within
  ``within`` seconds (a sliding window on the monotonic clock) instead stops all its children and
  raises :class:`~streamkit.errors.EscalationError` from ``run()``. Run under a parent (see
  :meth:`Supervisor.as_child`) that escalation is simply a failure of that child in the parent,
  subject to the parent's own restart intensity.

Stopping a child means cancelling its task and waiting up to its ``shutdown_timeout``; a child
that is still running after that is logged and abandoned (never awaited forever). Supervisors
never leave a child running behind them: ``run()`` stops every child before it returns or
raises, including when the task running it is cancelled.

Every start, restart, exit, failure and escalation is logged through structlog (failures with
``exc_info``) and reported to the optional ``on_event`` callback as a :class:`SupervisorEvent`.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

import structlog

from streamkit.errors import EscalationError

__all__ = [
    "ChildSpec",
    "EventKind",
    "Restart",
    "Strategy",
    "Supervisor",
    "SupervisorEvent",
]

# Module-level proxy, bound lazily on every call: binding at construction time would freeze the
# structlog configuration of that moment (and, e.g., defeat structlog.testing.capture_logs).
_log = structlog.get_logger(__name__)


class Restart(enum.StrEnum):
    """Whether a child that ended is started again."""

    PERMANENT = "permanent"
    """Always restarted, whether it failed or returned."""
    TRANSIENT = "transient"
    """Restarted only when it failed; a normal return ends it for this run."""
    TEMPORARY = "temporary"
    """Never restarted; once it ends (for any reason) it is removed from the supervisor."""


class Strategy(enum.StrEnum):
    """Which children a restart involves."""

    ONE_FOR_ONE = "one_for_one"
    """Only the child that ended."""
    ONE_FOR_ALL = "one_for_all"
    """Every child: all are stopped (reverse order) and started again (start order)."""
    REST_FOR_ONE = "rest_for_one"
    """The child that ended and every child started after it."""


EventKind: TypeAlias = Literal["started", "failed", "restarted", "exited", "escalated"]


@dataclass(frozen=True, slots=True)
class SupervisorEvent:
    """One thing that happened to a child, as reported to ``on_event``.

    ``kind`` is ``"started"`` (first start in a run), ``"restarted"``, ``"exited"`` (returned
    normally), ``"failed"`` (raised; ``error`` is the exception) or ``"escalated"`` (the
    supervisor gave up because of this child; ``error`` is its last failure, ``None`` when it
    kept returning normally). Being stopped by the supervisor is not an event.
    """

    supervisor: str
    child: str
    kind: EventKind
    error: BaseException | None = None


@dataclass(frozen=True)
class ChildSpec:
    """How to run one child.

    ``start`` is called anew for every start and restart; the awaitable it returns *is* the
    child, which runs until it returns or raises. ``start`` is called inside the child's task, so
    an exception from the call itself is a failure of the child like any other.
    ``shutdown_timeout`` is how long the supervisor waits for the child to finish after
    cancelling it before abandoning it (``math.inf``: wait as long as it takes).
    """

    name: str
    start: Callable[[], Awaitable[None]]
    restart: Restart = Restart.PERMANENT
    shutdown_timeout: float = 5.0

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a child needs a non-empty name")
        # Written so that NaN is rejected too.
        if not self.shutdown_timeout >= 0:
            raise ValueError(
                f"child {self.name!r}: shutdown_timeout must be >= 0, got {self.shutdown_timeout!r}"
            )


@dataclass(eq=False)
class _Child:
    """The supervisor's mutable record of one child (compared by identity)."""

    spec: ChildSpec
    task: asyncio.Task[None] | None = None
    # Whether it was started during the current run(): its next start is then a restart.
    started: bool = False


@dataclass(frozen=True, slots=True)
class _Ended:
    child: _Child
    task: asyncio.Task[None]


@dataclass(frozen=True, slots=True)
class _StartRequest:
    child: _Child
    done: asyncio.Future[None] | None


@dataclass(frozen=True, slots=True)
class _RemoveRequest:
    child: _Child
    done: asyncio.Future[None]


# None only wakes the supervision loop up (to look at the stop flag).
_Message: TypeAlias = _Ended | _StartRequest | _RemoveRequest | None


@dataclass(frozen=True, slots=True)
class _Escalation:
    child: str
    cause: BaseException | None


async def _run_child(start: Callable[[], Awaitable[None]]) -> None:
    # Calling start() in here rather than in the supervisor makes an exception raised by the
    # factory itself a failure of the child instead of a crash of the supervision loop.
    await start()


def _error_of(task: asyncio.Task[None], *, cancelled_by_us: bool) -> BaseException | None:
    """The exception a finished child task ended with, ``None`` for a normal end.

    Also marks the exception as retrieved, so asyncio does not warn about it again.
    """
    if task.cancelled():
        if cancelled_by_us:
            return None
        try:
            task.result()
        except asyncio.CancelledError as exc:
            return exc
    return task.exception()


def _resolve(future: asyncio.Future[None] | None) -> None:
    # The waiter may have been cancelled meanwhile; that must not disturb the supervisor.
    if future is not None and not future.done():
        future.set_result(None)


class Supervisor:
    """Starts, watches and restarts a set of child tasks; see the module docstring.

    All methods must be called from the event loop's thread (from another thread, use
    ``loop.call_soon_threadsafe(supervisor.request_stop)``). Configuration attributes
    (``name``, ``strategy``, ``max_restarts``, ``within``, ``keep_running``) are read-only in
    spirit: do not change them while the supervisor runs.

    ``keep_running=False`` (the default) makes :meth:`run` return once no child is running or
    due to be started; ``True`` keeps it supervising an empty set of children until
    :meth:`stop`, for supervisors whose children are all added later with :meth:`start_child`.
    """

    def __init__(
        self,
        name: str,
        children: Sequence[ChildSpec] = (),
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        max_restarts: int = 5,
        within: float = 60.0,
        on_event: Callable[[SupervisorEvent], None] | None = None,
        keep_running: bool = False,
    ) -> None:
        if max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, got {max_restarts!r}")
        if not within > 0:
            raise ValueError(f"within must be > 0 seconds, got {within!r}")
        self.name = name
        self.strategy = Strategy(strategy)
        self.max_restarts = max_restarts
        self.within = within
        self.keep_running = keep_running
        self._on_event = on_event
        self._children: list[_Child] = []  # in start order
        self._restarts: dict[str, int] = {}
        self._restart_times: deque[float] = deque()
        # Strong references: the event loop only keeps weak ones to tasks, and an abandoned
        # child must neither be garbage-collected mid-flight nor have its outcome go unlogged.
        self._abandoned: set[asyncio.Task[None]] = set()
        self._queue: asyncio.Queue[_Message] | None = None  # exists exactly while running
        self._finished: asyncio.Event | None = None
        self._running = False
        self._stop_requested = False
        for spec in children:
            self._register(spec)

    # -- introspection -------------------------------------------------------------------

    @property
    def children(self) -> tuple[ChildSpec, ...]:
        """The specs of the current children, in start order."""
        return tuple(child.spec for child in self._children)

    @property
    def running(self) -> bool:
        """Whether :meth:`run` is executing (including while it shuts down)."""
        return self._running

    @property
    def running_children(self) -> tuple[str, ...]:
        """Names of the children whose task is currently alive, in start order."""
        return tuple(
            child.spec.name
            for child in self._children
            if child.task is not None and not child.task.done()
        )

    @property
    def restarts(self) -> Mapping[str, int]:
        """How many times each current child was restarted (cumulative over runs; a copy)."""
        return dict(self._restarts)

    @property
    def abandoned_tasks(self) -> frozenset[asyncio.Task[None]]:
        """Child tasks that outlived their ``shutdown_timeout`` and are still running."""
        return frozenset(self._abandoned)

    # -- children ------------------------------------------------------------------------

    def add_child(self, spec: ChildSpec) -> None:
        """Add a child after the existing ones.

        A running supervisor starts it shortly (from its supervision loop); otherwise it starts
        with the next :meth:`run`. Synchronous, so usable from callbacks. Raises ``ValueError``
        if a child of that name exists.
        """
        child = self._register(spec)
        if self._queue is not None:
            self._queue.put_nowait(_StartRequest(child, None))

    async def start_child(self, spec: ChildSpec) -> None:
        """Add a child like :meth:`add_child` and, if the supervisor is running, return once it
        has been started (its task created).

        If the supervisor stops before getting to it, this returns anyway and the child starts
        with the next :meth:`run`. Cancelling the caller does not undo the addition.
        """
        child = self._register(spec)
        if self._queue is None:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_StartRequest(child, done))
        await done

    async def remove_child(self, name: str) -> None:
        """Stop the named child (as :meth:`stop` would stop it) and forget it.

        Returns once it is gone. Raises ``KeyError`` if there is no such child.
        """
        child = next((c for c in self._children if c.spec.name == name), None)
        if child is None:
            raise KeyError(name)
        if self._queue is None:
            self._forget(child)
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_RemoveRequest(child, done))
        await done

    def as_child(
        self,
        name: str | None = None,
        restart: Restart = Restart.PERMANENT,
        shutdown_timeout: float = math.inf,
    ) -> ChildSpec:
        """A spec that runs this supervisor as a child of another one.

        Its :class:`~streamkit.errors.EscalationError` is then a failure of that child in the
        parent, and a restart calls :meth:`run` again with a fresh restart-intensity window.
        ``shutdown_timeout`` defaults to infinity, as OTP recommends for supervisors: this
        supervisor already bounds its own shutdown by its children's timeouts, and a parent
        giving up earlier would abandon the grandchildren.
        """
        return ChildSpec(name or self.name, self.run, restart, shutdown_timeout)

    # -- running -------------------------------------------------------------------------

    async def run(self) -> None:
        """Start the children in order and supervise them.

        Returns normally when no child is left running (all exited without needing a restart)
        unless ``keep_running``, or once :meth:`stop`/:meth:`request_stop` was called (a stop
        requested while not running makes the next ``run()`` return at once). Raises
        :class:`~streamkit.errors.EscalationError` when the restart intensity is exceeded.
        Whatever the outcome -- including cancellation of the calling task, which propagates
        -- every child has been stopped, in reverse start order, before this returns or raises.
        A supervisor runs once at a time (``RuntimeError`` otherwise) but may be run again
        after ``run()`` returned.
        """
        if self._running:
            raise RuntimeError(f"supervisor {self.name!r} is already running")
        queue: asyncio.Queue[_Message] = asyncio.Queue()
        finished = asyncio.Event()
        self._running = True
        self._queue = queue
        self._finished = finished
        # Each run is a fresh incarnation, like a restarted OTP supervisor: a nested supervisor
        # restarted by its parent must not inherit the restart history that made it give up.
        self._restart_times.clear()
        for child in self._children:
            child.started = False
        escalation: _Escalation | None = None
        try:
            if not self._stop_requested:
                _log.info("supervisor started", supervisor=self.name, strategy=str(self.strategy))
                for child in list(self._children):
                    self._start(child)
                escalation = await self._supervise(queue)
        finally:
            try:
                await self._shutdown_all()
            finally:
                self._drain(queue)
                self._queue = None
                self._finished = None
                self._running = False
                self._stop_requested = False
                finished.set()
        if escalation is not None:
            _log.error(
                "restart intensity exceeded; escalating",
                supervisor=self.name,
                child=escalation.child,
                max_restarts=self.max_restarts,
                within=self.within,
                exc_info=escalation.cause,
            )
            self._emit(escalation.child, "escalated", escalation.cause)
            raise EscalationError(self.name, escalation.child, escalation.cause) from (
                escalation.cause
            )
        _log.info("supervisor stopped", supervisor=self.name)

    def request_stop(self) -> None:
        """Ask :meth:`run` to stop all children and return; does not wait. Idempotent.

        Synchronous so that it can be a signal handler
        (``loop.add_signal_handler(signal.SIGTERM, sup.request_stop)``) or any other callback.
        """
        self._stop_requested = True
        if self._queue is not None:
            self._queue.put_nowait(None)

    async def stop(self) -> None:
        """Stop all children in reverse start order (each awaited up to its
        ``shutdown_timeout``) and make :meth:`run` return normally; returns once that is done.

        Idempotent and safe to call from any task, including a child of this supervisor (which
        is then cancelled like the others). Cancelling the caller does not cancel the shutdown.
        """
        self.request_stop()
        if self._finished is not None:
            await self._finished.wait()

    # -- internals -----------------------------------------------------------------------

    def _register(self, spec: ChildSpec) -> _Child:
        if any(child.spec.name == spec.name for child in self._children):
            raise ValueError(f"supervisor {self.name!r} already has a child {spec.name!r}")
        child = _Child(spec)
        self._children.append(child)
        self._restarts.setdefault(spec.name, 0)
        return child

    def _forget(self, child: _Child) -> None:
        if child in self._children:
            self._children.remove(child)
            self._restarts.pop(child.spec.name, None)

    def _emit(self, child: str, kind: EventKind, error: BaseException | None = None) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(SupervisorEvent(self.name, child, kind, error))
        except Exception:
            # A broken observer must not take the supervised pipeline down; it is logged, not
            # hidden.
            _log.exception("on_event callback raised", supervisor=self.name, child=child)

    def _start(self, child: _Child) -> None:
        restarted = child.started
        child.started = True
        name = child.spec.name
        task = asyncio.create_task(_run_child(child.spec.start), name=f"{self.name}/{name}")
        child.task = task
        task.add_done_callback(functools.partial(self._on_task_done, child))
        if restarted:
            self._restarts[name] = self._restarts.get(name, 0) + 1
            _log.info(
                "child restarted",
                supervisor=self.name,
                child=name,
                restarts=self._restarts[name],
            )
            self._emit(name, "restarted")
        else:
            _log.info("child started", supervisor=self.name, child=name)
            self._emit(name, "started")

    def _on_task_done(self, child: _Child, task: asyncio.Task[None]) -> None:
        # A task that is no longer the child's current one was stopped by us and has already
        # been (or is being) accounted for by _stop_child.
        if child.task is task and self._queue is not None:
            self._queue.put_nowait(_Ended(child, task))

    def _report_end(self, name: str, error: BaseException | None) -> None:
        if error is None:
            _log.info("child exited", supervisor=self.name, child=name)
            self._emit(name, "exited")
        else:
            _log.error("child failed", supervisor=self.name, child=name, exc_info=error)
            self._emit(name, "failed", error)

    async def _supervise(self, queue: asyncio.Queue[_Message]) -> _Escalation | None:
        """The supervision loop: the only place that reacts to children ending, so that
        restarts never interleave with each other or with dynamic additions/removals."""
        while not self._stop_requested:
            if (
                not self.keep_running
                and queue.empty()
                and all(child.task is None for child in self._children)
            ):
                return None
            message = await queue.get()
            if isinstance(message, _Ended):
                escalation = await self._on_ended(message.child, message.task)
                if escalation is not None:
                    return escalation
            elif isinstance(message, _StartRequest):
                child = message.child
                # A group restart may have started it already.
                if child in self._children and child.task is None and not child.started:
                    self._start(child)
                _resolve(message.done)
            elif isinstance(message, _RemoveRequest):
                try:
                    await self._stop_child(message.child)
                    self._forget(message.child)
                finally:
                    _resolve(message.done)
        return None

    async def _on_ended(self, child: _Child, task: asyncio.Task[None]) -> _Escalation | None:
        """React to a child task that ended on its own; return an escalation to give up."""
        if child.task is not task:
            return None  # stopped by us in the meantime; already accounted for
        child.task = None
        spec = child.spec
        # Not cancelled by us: we clear child.task before cancelling, which made this stale.
        error = _error_of(task, cancelled_by_us=False)
        self._report_end(spec.name, error)
        if self._stop_requested:
            return None  # no restarts (and no escalation) while shutting down
        if spec.restart is Restart.TEMPORARY:
            self._forget(child)
            return None
        if spec.restart is Restart.TRANSIENT and error is None:
            return None
        if self._intensity_exceeded():
            return _Escalation(spec.name, error)

        if self.strategy is Strategy.ONE_FOR_ONE:
            involved = [child]
        elif self.strategy is Strategy.ONE_FOR_ALL:
            involved = list(self._children)
        else:
            involved = self._children[self._children.index(child) :]
        # Reverse start order: a later child may depend on an earlier one, so it goes first.
        for sibling in reversed(involved):
            if sibling is not child:
                await self._stop_child(sibling)
        if self._stop_requested:
            return None  # a stop arrived while siblings were being stopped: don't start them
        for member in involved:
            # OTP: a temporary child taken down by a sibling's restart is not restarted (and
            # _stop_child has already forgotten it). Transient children that had exited
            # normally are, since the whole group is restarted together.
            if member is not child and member.spec.restart is Restart.TEMPORARY:
                continue
            if member.task is None:
                self._start(member)
        return None

    def _intensity_exceeded(self) -> bool:
        """Record one restart; True if that makes more than max_restarts within the window."""
        now = time.monotonic()
        times = self._restart_times
        times.append(now)
        while times and times[0] <= now - self.within:
            times.popleft()
        return len(times) > self.max_restarts

    async def _stop_child(self, child: _Child) -> None:
        """Cancel the child's task and wait for it up to its shutdown_timeout; abandon it after
        that. Reports how it ended. Does nothing if it is not running."""
        task = child.task
        if task is None:
            return
        # Clearing the reference first makes whatever ending follows ours: _on_task_done and
        # _on_ended ignore tasks that are no longer current.
        child.task = None
        name = child.spec.name
        ended_on_its_own = task.done()
        try:
            if not ended_on_its_own:
                task.cancel()
                timeout = child.spec.shutdown_timeout
                try:
                    # asyncio.wait rather than wait_for/timeout: it never cancels the task
                    # (we already did) and it does not rely on this task's own cancellation
                    # state, which 3.11's asyncio.timeout gets wrong once the supervisor itself
                    # has been cancelled and is shutting down in a finally block.
                    await asyncio.wait((task,), timeout=None if math.isinf(timeout) else timeout)
                except asyncio.CancelledError:
                    # Cancelled again while shutting down: the child was cancelled already, but
                    # we cannot wait for it any more.
                    if not task.done():
                        self._abandon(name, task, "supervisor cancelled while stopping it")
                    raise
                if not task.done():
                    self._abandon(name, task, "still running after shutdown_timeout")
                    return
            # A child we are stopping anyway that ended cancelled has simply stopped, whoever
            # cancelled it: asyncio.run's teardown, for one, cancels every task at once, and
            # that is no failure. Any exception, or a return before we stopped it (its _Ended
            # message is stale now), is reported like every other ending.
            error = _error_of(task, cancelled_by_us=True)
            if error is not None or (ended_on_its_own and not task.cancelled()):
                self._report_end(name, error)
            else:
                _log.info("child stopped", supervisor=self.name, child=name)
        finally:
            if child.spec.restart is Restart.TEMPORARY:
                self._forget(child)

    def _abandon(self, name: str, task: asyncio.Task[None], reason: str) -> None:
        self._abandoned.add(task)
        task.add_done_callback(functools.partial(self._on_abandoned_done, name))
        _log.error("child abandoned", supervisor=self.name, child=name, reason=reason)

    def _on_abandoned_done(self, name: str, task: asyncio.Task[None]) -> None:
        self._abandoned.discard(task)
        error = _error_of(task, cancelled_by_us=True)
        if error is not None:
            _log.error("abandoned child failed", supervisor=self.name, child=name, exc_info=error)
        else:
            _log.info("abandoned child finished", supervisor=self.name, child=name)

    async def _shutdown_all(self) -> None:
        """Stop every running child in reverse start order."""
        running = [child for child in reversed(self._children) if child.task is not None]
        try:
            for child in running:
                await self._stop_child(child)
        except asyncio.CancelledError:
            # Cancelled again mid-shutdown (e.g. by asyncio.run's teardown): no time left to
            # wait, but no child may outlive us un-cancelled either.
            for child in running:
                task = child.task
                if task is not None:
                    child.task = None
                    task.cancel()
                    self._abandon(child.spec.name, task, "supervisor cancelled during shutdown")
                    if child.spec.restart is Restart.TEMPORARY:
                        self._forget(child)
            raise

    def _drain(self, queue: asyncio.Queue[_Message]) -> None:
        """Settle the requests the loop did not get to; called once the children are stopped."""
        while not queue.empty():
            message = queue.get_nowait()
            if isinstance(message, _RemoveRequest):
                self._forget(message.child)
                _resolve(message.done)
            elif isinstance(message, _StartRequest):
                _resolve(message.done)  # not started now; it will be by the next run()
            # _Ended messages are stale by now: _shutdown_all accounted for those children.
