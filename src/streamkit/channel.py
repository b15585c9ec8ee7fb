"""Fan-out channels: publish records once, deliver them to every matching subscriber.

A :class:`Bus` routes each published record to the :class:`Subscription` objects whose filter
(record type, ``exchange`` pattern, ``symbol`` pattern) matches it. Every subscription has its
own bounded queue and its own overflow :class:`Policy`, so one slow or crashed consumer never
stalls the feed or the other consumers. The one exception is :attr:`Policy.BLOCK`, the opt-in
lossless mode: a full ``block`` subscriber makes the publisher wait (bounded by
``block_timeout`` if one is set).

Accounting is exact. For every subscription, at any moment no publish call is in progress::

    delivered + dropped + depth == records routed to it while it was attached

where ``dropped`` counts every record that was routed to the subscription but will never be
handed to its consumer: overflow under ``drop_oldest``/``conflate``, the discarded queue of a
subscriber cut off under ``disconnect``/``block_timeout``, and whatever was still queued when the
consumer unsubscribed.

Everything here runs on one event loop and is not thread-safe.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import operator
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from fnmatch import fnmatchcase
from types import TracebackType
from typing import Final, TypeAlias

import structlog

from streamkit.errors import SlowConsumerError, StreamkitError
from streamkit.model import RECORD_TYPES, Record, Status, type_name

__all__ = ["Bus", "Policy", "Subscription", "SubscriptionClosed"]

_log = structlog.get_logger(__name__)

_RouteKey: TypeAlias = tuple[type[Record], str, str | None]

_route_key: Callable[[Record], _RouteKey] = operator.attrgetter("__class__", "exchange", "symbol")
"""A record's route key, ``(type, exchange, symbol)``, built in C (one call per record)."""
"""(record class, exchange, symbol): everything routing depends on."""

_ConflateKey: TypeAlias = tuple[type[Record], str, str | None] | int
"""(record class, exchange, symbol), or ``id(record)`` for a status record (never conflated)."""

_MAX_ROUTES: Final = 65_536
"""Route-cache entries before the cache is flushed. The key space is bounded by the
instruments actually streamed, so this only guards against a feed that invents symbols."""


class Policy(enum.StrEnum):
    """What a subscription does with a new record when its queue already holds ``maxsize``."""

    BLOCK = "block"
    """The publisher waits until the consumer makes room. Lossless; stalls every subscriber of
    the bus while it waits. With ``block_timeout`` the consumer is cut off instead of stalling
    the feed for longer than that."""

    DROP_OLDEST = "drop_oldest"
    """Drop the oldest queued record to make room; the consumer always has the newest
    ``maxsize`` records."""

    CONFLATE = "conflate"
    """Keep only the latest record per (type, exchange, symbol), always (not only when full): a
    new record replaces a queued one with the same key in place. If ``maxsize`` distinct keys
    are queued, drop the oldest. For state-like records (bbo, ticker, funding, open interest,
    candles); it is wrong for trades and book deltas, which are not state. Status records are
    never conflated with each other (each is an event a consumer must see), but do count
    towards ``maxsize``."""

    DISCONNECT = "disconnect"
    """Cut the subscriber off: discard its queue, detach it from the bus, and make its
    iterator raise :class:`~streamkit.errors.SlowConsumerError`."""


class SubscriptionClosed(StreamkitError):
    """:meth:`Subscription.get` (and the other readers) found the subscription ended: the bus
    was closed and the queue is drained, or the subscription was closed by its owner. Iterating
    with ``async for`` ends normally instead of raising this."""


class Subscription:
    """One consumer's view of a :class:`Bus`: a bounded queue of matching records.

    Create with :meth:`Bus.subscribe`. Read it with ``async for record in sub``, :meth:`get`,
    :meth:`get_batch`, :meth:`get_nowait` or :meth:`drain_nowait`; records arrive in publish
    order (under ``conflate``: in the order their keys were first queued). Use it as an async
    context manager (``async with bus.subscribe(...) as sub:``) so that it is unsubscribed when
    the consumer leaves, normally or by an exception; a subscription nobody reads and nobody
    closes is, under ``block`` without ``block_timeout``, a stalled feed.

    How reading ends:

    - after :meth:`Bus.close`, once the queue is drained: ``async for`` stops,
      the other readers raise :class:`SubscriptionClosed`;
    - after :meth:`close`: at once, queued records are discarded (counted in ``dropped``);
    - after a cut-off (``disconnect`` overflow, or ``block_timeout``): at once, the queue is
      discarded and every reader, ``async for`` included, raises
      :class:`~streamkit.errors.SlowConsumerError`, every time it is called.

    Counters: ``delivered`` (records handed to the consumer), ``dropped`` (routed here but
    never to be delivered), ``max_depth`` (high-water mark of the queue) and :attr:`depth`.
    """

    __slots__ = (
        "_bus",
        "_discarded",
        "_error_message",
        "_getters",
        "_latest",
        "_loop",
        "_offer",
        "_open",
        "_putters",
        "_queue",
        "block_timeout",
        "delivered",
        "dropped",
        "exchange",
        "max_depth",
        "maxsize",
        "name",
        "policy",
        "reason",
        "symbol",
        "takes_everything",
        "types",
    )

    name: str
    policy: Policy
    maxsize: int
    block_timeout: float | None
    types: frozenset[str] | None
    exchange: str
    symbol: str
    delivered: int
    dropped: int
    max_depth: int
    reason: str | None
    _bus: Bus
    _open: bool
    _discarded: bool
    _error_message: str | None
    _queue: deque[Record]
    _latest: OrderedDict[_ConflateKey, Record]
    _getters: deque[asyncio.Future[None]]
    _loop: asyncio.AbstractEventLoop | None
    _putters: deque[tuple[asyncio.Future[None], Record]]
    _offer: Callable[[Record], bool]

    def __init__(
        self,
        bus: Bus,
        *,
        name: str,
        types: frozenset[str] | None,
        exchange: str,
        symbol: str,
        maxsize: int,
        policy: Policy,
        block_timeout: float | None,
    ) -> None:
        """Internal: use :meth:`Bus.subscribe`, which validates the arguments."""
        self.name = name
        self.policy = policy
        self.maxsize = maxsize
        self.block_timeout = block_timeout
        self.types = types
        self.exchange = exchange
        self.symbol = symbol
        self.delivered = 0
        self.dropped = 0
        self.max_depth = 0
        self.reason = None
        self._bus = bus
        self._open = True  # the bus may still add records
        self._discarded = False  # queue thrown away (closed or cut off): reading ends at once
        self._error_message = None  # set when cut off: readers raise SlowConsumerError
        # drop_oldest lets the deque evict the oldest record itself (C speed, O(1)).
        self._queue = deque(maxlen=maxsize if policy is Policy.DROP_OLDEST else None)
        # Conflation needs "replace in place" and "pop oldest", both O(1): an OrderedDict.
        self._latest = OrderedDict()
        self._getters = deque()  # consumers waiting for a record (wake-ups only)
        self._loop = None  # the loop the reader waits on (see _new_waiter)
        self._putters = deque()  # block: publishers waiting for room, FIFO, with their record
        # True when every record published goes here: the bus then hands it whole batches.
        self.takes_everything = types is None and exchange == "*" and symbol == "*"
        # Pick the overflow behaviour once, so the hot path does not branch on the policy.
        self._offer = {
            Policy.BLOCK: self._offer_block,
            Policy.DROP_OLDEST: self._offer_drop_oldest,
            Policy.CONFLATE: self._offer_conflate,
            Policy.DISCONNECT: self._offer_disconnect,
        }[policy]

    def __repr__(self) -> str:
        state = "open" if self._open else f"closed ({self.reason})"
        return (
            f"<Subscription {self.name!r} {self.policy.value} maxsize={self.maxsize} "
            f"depth={self.depth} delivered={self.delivered} dropped={self.dropped} {state}>"
        )

    # -- state ---------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Records queued now (not counting records of publishers blocked on a full queue)."""
        return len(self._queue) + len(self._latest)

    @property
    def closed(self) -> bool:
        """True once no further records will be added: the bus was closed, the subscription
        was closed, or it was cut off. Records already queued may still be readable (only in
        the first case); :attr:`reason` says which."""
        return not self._open

    @property
    def cut_off(self) -> bool:
        """True if the subscription was cut off as a slow consumer."""
        return self._error_message is not None

    def matches(self, type_tag: str, exchange: str, symbol: str | None) -> bool:
        """Whether a record with this type tag, exchange and symbol is routed here. A record
        without a symbol (a connection-wide status) matches every symbol pattern if it is a
        status record, and only ``"*"`` otherwise."""
        if self.types is not None and type_tag not in self.types:
            return False
        if self.exchange != "*" and not fnmatchcase(exchange, self.exchange):
            return False
        if self.symbol == "*":
            return True
        if symbol is None:
            return type_tag == "status"
        return fnmatchcase(symbol, self.symbol)

    def stats(self) -> dict[str, int | str]:
        """A snapshot of the counters: name, policy, delivered, dropped, depth, max_depth."""
        return {
            "name": self.name,
            "policy": self.policy.value,
            "delivered": self.delivered,
            "dropped": self.dropped,
            "depth": self.depth,
            "max_depth": self.max_depth,
        }

    # -- consumer side -------------------------------------------------------------------

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Record:
        """Next record; waits while the queue is empty. Ends (StopAsyncIteration) after
        :meth:`Bus.close` once drained or after :meth:`close`; raises
        :class:`~streamkit.errors.SlowConsumerError` once cut off. Safe to cancel: no record
        is lost."""
        record = await self._next()
        if record is None:
            raise StopAsyncIteration
        return record

    async def get(self) -> Record:
        """Next record; waits while the queue is empty. Raises :class:`SubscriptionClosed`
        at the end of the stream and :class:`~streamkit.errors.SlowConsumerError` once cut
        off. Safe to cancel: no record is lost."""
        record = await self._next()
        if record is None:
            raise SubscriptionClosed(f"subscription {self.name!r} ended: {self.reason}")
        return record

    async def get_batch(self, limit: int | None = None) -> list[Record]:
        """Wait for at least one record, then return every queued record (at most ``limit``)
        in order: the cheapest way to consume a busy stream. Raises like :meth:`get`; safe to
        cancel."""
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        # The wait of _next(), inlined: on a paced stream this runs once per record, and a
        # nested coroutine plus a one-record list per wake-up were a measurable share of it.
        while not (self._queue or self._latest):
            if not self._open:
                self._raise_if_cut_off()
                raise SubscriptionClosed(f"subscription {self.name!r} ended: {self.reason}")
            waiter = self._new_waiter()
            self._getters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                self._abandon(waiter)
                raise
        return self._drain(limit)

    def get_nowait(self) -> Record | None:
        """The next record if one is queued, else None. Raises :class:`SubscriptionClosed`
        at the end of the stream and :class:`~streamkit.errors.SlowConsumerError` once cut
        off (both only when nothing is queued)."""
        if self._queue or self._latest:
            return self._take()
        self._raise_if_ended()
        return None

    def drain_nowait(self, limit: int | None = None) -> list[Record]:
        """Every queued record (at most ``limit``), in order, without waiting; ``[]`` if none.
        Raises like :meth:`get_nowait` when nothing is queued and the stream has ended."""
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        if not (self._queue or self._latest):
            self._raise_if_ended()
            return []
        return self._drain(limit)

    def close(self) -> None:
        """Unsubscribe: detach from the bus, discard the queue (counted in ``dropped``),
        release any publisher blocked on this subscription, and end every reader. Idempotent;
        never blocks. Publishers never wait on a closed subscription."""
        if self._discarded:
            return
        if self.reason is None:
            self.reason = "unsubscribed"
        self._open = False
        self._discard()
        self._wake_all()
        self._bus._detach(self)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def _next(self) -> Record | None:
        """The next record, waiting for one; None at a clean end of stream."""
        while not (self._queue or self._latest):
            if not self._open:
                self._raise_if_cut_off()
                return None
            waiter = self._new_waiter()
            self._getters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                self._abandon(waiter)
                raise
        return self._take()

    def _new_waiter(self) -> asyncio.Future[None]:
        """A future for a reader to wait on, from the loop it waits in.

        The loop is remembered while it runs, because ``asyncio.get_running_loop()`` costs
        a ``getpid`` system call (CPython checks the loop was not inherited across a fork,
        and glibc no longer caches the pid): on a paced stream the reader waits once per
        record, so that was one system call per record. A subscription is read from one
        loop at a time, like every asyncio object; a new running loop replaces the old."""
        loop = self._loop
        if loop is None or not loop.is_running():
            loop = self._loop = asyncio.get_running_loop()
        return loop.create_future()

    def _abandon(self, waiter: asyncio.Future[None]) -> None:
        """A reader awaiting ``waiter`` was cancelled: leave no dead waiter behind (think
        ``wait_for(get(), 1)`` in a loop), and if it had been woken for a record it now
        leaves without, pass the wake-up on so another waiting reader does not sleep next
        to a non-empty queue."""
        if waiter.cancelled():
            with suppress(ValueError):
                self._getters.remove(waiter)
        elif self._queue or self._latest:
            self._wake_one()

    def _take(self) -> Record:
        """Pop the oldest record. The queue must not be empty."""
        if self._queue:
            record = self._queue.popleft()
            if self._putters:
                self._admit_putters()
        else:
            record = self._latest.popitem(last=False)[1]
        self.delivered += 1
        return record

    def _drain(self, limit: int | None) -> list[Record]:
        """Pop up to ``limit`` queued records (all if None); never waits or raises."""
        depth = len(self._queue) + len(self._latest)
        if limit is not None and limit < depth:
            return [self._take() for _ in range(limit)]
        records: list[Record]
        if self._latest:
            records = list(self._latest.values())
            self._latest.clear()
        else:
            records = list(self._queue)
            self._queue.clear()
            if self._putters:
                self._admit_putters()
        self.delivered += len(records)
        return records

    def _raise_if_cut_off(self) -> None:
        if self._error_message is not None:
            # A fresh exception each time: re-raising one instance would grow its traceback.
            raise SlowConsumerError(self._error_message)

    def _raise_if_ended(self) -> None:
        if not self._open:
            self._raise_if_cut_off()
            raise SubscriptionClosed(f"subscription {self.name!r} ended: {self.reason}")

    def _wake_one(self) -> None:
        getters = self._getters
        while getters:
            waiter = getters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _wake_all(self) -> None:
        getters = self._getters
        while getters:
            waiter = getters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    # -- publisher side (called by Bus) ----------------------------------------------------
    #
    # Each _offer_* enqueues one record and returns True, or (block only) returns False when
    # the publisher must await _put_wait(record). They return True for a subscription that is
    # no longer open: a publish loop iterates a snapshot of the route, which can contain a
    # subscription closed while the publisher was waiting on another one.

    def _offer_block(self, record: Record) -> bool:
        if not self._open:
            return True
        queue = self._queue
        # Waiting publishers go first (FIFO). The hand-off in _take keeps the queue full while
        # any wait, so the _putters test is a cheap guard for that ordering invariant.
        if self._putters or len(queue) >= self.maxsize:
            return False
        queue.append(record)
        depth = len(queue)
        if depth > self.max_depth:
            self.max_depth = depth
        if self._getters:
            self._wake_one()
        return True

    def _offer_drop_oldest(self, record: Record) -> bool:
        if not self._open:
            return True
        queue = self._queue
        if len(queue) >= self.maxsize:
            self.dropped += 1
            queue.append(record)  # deque(maxlen=maxsize) evicts the oldest
            return True
        queue.append(record)
        depth = len(queue)
        if depth > self.max_depth:
            self.max_depth = depth
        if self._getters:
            self._wake_one()
        return True

    def _offer_batch(self, records: Sequence[Record]) -> None:
        """Every record of ``records``, in order, exactly as one ``_offer`` per record would
        (queue, counters, wake-ups), in O(1) Python steps for ``block`` and ``drop_oldest``:
        the bus's fast path for a subscription that takes every record. For ``block`` the
        caller has checked that the whole batch fits and no publisher is waiting."""
        policy = self.policy
        if not self._open or not records:
            return
        if policy is not Policy.BLOCK and policy is not Policy.DROP_OLDEST:
            offer = self._offer
            for record in records:
                offer(record)
            return
        queue = self._queue
        n = len(records)
        before = len(queue)
        if policy is Policy.DROP_OLDEST:
            # One eviction per record appended to a full queue (deque(maxlen) evicts).
            self.dropped += max(0, before + n - self.maxsize)
        queue.extend(records)
        depth = len(queue)
        if depth > self.max_depth:
            self.max_depth = depth
        # One wake-up per record that went into a queue with room (a reader waits only on an
        # empty queue, so there is always room for the first).
        wakes = min(n, self.maxsize - before) if before < self.maxsize else 0
        getters = self._getters
        while wakes and getters:
            self._wake_one()
            wakes -= 1

    def _offer_conflate(self, record: Record) -> bool:
        if not self._open:
            return True
        latest = self._latest
        key: _ConflateKey
        if isinstance(record, Status):
            # Unique while queued (the dict keeps the record alive), so never replaced.
            key = id(record)
        else:
            key = (type(record), record.exchange, record.symbol)
        if key in latest:
            latest[key] = record  # replaces the value, keeps the key's queue position
            self.dropped += 1
            return True
        if len(latest) >= self.maxsize:
            latest.popitem(last=False)
            self.dropped += 1
        latest[key] = record
        depth = len(latest)
        if depth > self.max_depth:
            self.max_depth = depth
        if self._getters:
            self._wake_one()
        return True

    def _offer_disconnect(self, record: Record) -> bool:
        if not self._open:
            return True
        queue = self._queue
        if len(queue) >= self.maxsize:
            self.dropped += 1  # the record that did not fit; _cut_off counts the queue
            self._cut_off(f"queue full (maxsize={self.maxsize}, policy=disconnect)")
            return True
        queue.append(record)
        depth = len(queue)
        if depth > self.max_depth:
            self.max_depth = depth
        if self._getters:
            self._wake_one()
        return True

    async def _put_wait(self, record: Record) -> None:
        """Block policy, queue full: wait until ``record`` is admitted to the queue, the
        subscription is closed or cut off (the record is then counted as dropped), or
        ``block_timeout`` expires (which cuts the subscription off).

        Cancelling the publisher withdraws the record: it was never routed here and is not
        counted."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        entry = (waiter, record)
        self._putters.append(entry)
        timer = (
            None
            if self.block_timeout is None
            else loop.call_later(self.block_timeout, self._block_timed_out, waiter)
        )
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.cancelled():
                with suppress(ValueError):
                    self._putters.remove(entry)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _admit_putters(self) -> None:
        """Move blocked publishers' records into the queue, oldest first, while there is
        room; each such publisher resumes."""
        queue = self._queue
        putters = self._putters
        while putters and len(queue) < self.maxsize:
            waiter, record = putters.popleft()
            if waiter.done():  # its publisher was cancelled
                continue
            queue.append(record)
            waiter.set_result(None)
        depth = len(queue)
        if depth > self.max_depth:
            self.max_depth = depth
        if queue and self._getters:
            self._wake_one()

    def _block_timed_out(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            self._cut_off(
                f"consumer did not make room for {self.block_timeout:g}s "
                f"(maxsize={self.maxsize}, policy=block)"
            )

    def _discard(self) -> None:
        """Throw away everything queued or waiting to be queued, counting it as dropped, and
        release blocked publishers."""
        self._discarded = True
        self.dropped += len(self._queue) + len(self._latest)
        self._queue.clear()
        self._latest.clear()
        putters = self._putters
        while putters:
            waiter, _ = putters.popleft()
            if not waiter.done():
                self.dropped += 1
                waiter.set_result(None)

    def _end_of_stream(self) -> None:
        """The bus was closed: accept nothing more; readers drain the queue, then end."""
        if not self._open:
            return
        self._open = False
        if self.reason is None:
            self.reason = "bus closed"
        # Only readers waiting on an empty queue are waiting; all of them must now end.
        self._wake_all()

    def _cut_off(self, reason: str) -> None:
        """Disconnect a slow consumer: discard its queue, detach it, end its readers with
        SlowConsumerError, log once, tell the bus owner."""
        if self._discarded:
            return
        self.reason = reason
        self._error_message = f"subscriber {self.name!r} was cut off: {reason}"
        self._open = False
        self._discard()
        self._wake_all()
        self._bus._detach(self)
        _log.warning(
            "slow subscriber cut off",
            subscriber=self.name,
            policy=self.policy.value,
            reason=reason,
            delivered=self.delivered,
            dropped=self.dropped,
        )
        self._bus._notify_cutoff(self)


class Bus:
    """Routes published records to matching subscriptions.

    ``on_cutoff`` is called (synchronously, once per subscription, after it was detached) when
    a subscriber is cut off as a slow consumer, so the owner can report it, e.g. by
    publishing ``Status(event=StatusEvent.DISCONNECTED, detail=f"subscriber {sub.name} cut
    off: {sub.reason}")``. It runs inside a publisher's call (or a timer callback): it must not
    block, and it cannot await; schedule the publish (``loop.create_task(bus.publish(...))``).
    Exceptions it raises are logged and swallowed so that they cannot break a publisher.
    """

    def __init__(self, on_cutoff: Callable[[Subscription], None] | None = None) -> None:
        self._subs: list[Subscription] = []
        # (record class, exchange, symbol) -> the subscriptions it goes to, in subscribe
        # order. Filled lazily by _resolve; cleared whenever the set of subscriptions changes.
        self._routes: dict[_RouteKey, tuple[Subscription, ...]] = {}
        self._closed = False
        self._on_cutoff = on_cutoff
        self._ids = itertools.count(1)
        # The block-policy subscriptions: the only ones an offer can refuse (try_publish_many).
        self._blocking: tuple[Subscription, ...] = ()
        # Every subscription, when each one takes every record (else None): try_publish_many
        # then hands them whole batches.
        self._everything: tuple[Subscription, ...] | None = ()

    @property
    def subscriptions(self) -> list[Subscription]:
        """The attached subscriptions (a copy), in subscribe order."""
        return list(self._subs)

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> list[dict[str, int | str]]:
        """:meth:`Subscription.stats` of every attached subscription."""
        return [sub.stats() for sub in self._subs]

    def subscribe(
        self,
        types: type[Record] | str | Iterable[type[Record] | str] | None = None,
        exchange: str = "*",
        symbol: str = "*",
        *,
        maxsize: int = 1024,
        policy: Policy | str = Policy.BLOCK,
        name: str | None = None,
        block_timeout: float | None = None,
    ) -> Subscription:
        """Attach a new subscription; it receives records published from now on.

        ``types`` is a record class, a type tag (``"trade"``) or an iterable of them; None
        means every type. ``exchange`` and ``symbol`` are case-sensitive fnmatch patterns
        (``"BTC-*"``); a status record with a null symbol matches every symbol pattern.
        ``block_timeout`` (seconds, ``block`` policy only) cuts the subscriber off when a
        publisher has waited that long for room.

        Raises ValueError for an unknown type tag, an empty ``types``, ``maxsize < 1``, an
        unknown policy or a misused ``block_timeout``; RuntimeError once the bus is closed.
        """
        if self._closed:
            raise RuntimeError("bus is closed")
        policy = Policy(policy)
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        if block_timeout is not None:
            if policy is not Policy.BLOCK:
                raise ValueError(f"block_timeout only applies to policy=block, not {policy}")
            if not block_timeout > 0:
                raise ValueError(f"block_timeout must be > 0, got {block_timeout}")
        seq = next(self._ids)
        sub = Subscription(
            self,
            name=name if name is not None else f"sub-{seq}",
            types=_type_tags(types),
            exchange=exchange,
            symbol=symbol,
            maxsize=maxsize,
            policy=policy,
            block_timeout=block_timeout,
        )
        self._subs.append(sub)
        self._routes.clear()
        self._note_blocking()
        return sub

    async def publish(self, record: Record) -> None:
        """Deliver one record to every matching subscription.

        Never yields to the event loop unless a ``block`` subscriber is full; then it waits
        for room (or that subscriber's ``block_timeout``). Safe to cancel: subscriptions that
        already have the record keep it; the one being waited on and those after it do not
        get it (and do not count it). Raises RuntimeError once the bus is closed.
        """
        if self._closed:
            raise RuntimeError("bus is closed")
        key = (type(record), record.exchange, record.symbol)
        subs = self._routes.get(key)
        if subs is None:
            subs = self._resolve(key)
        for sub in subs:
            if not sub._offer(record):
                await sub._put_wait(record)

    async def publish_many(self, records: Sequence[Record]) -> None:
        """Publish a batch (typically the records of one frame) in order: the hot path.

        Costs O(matching subscriptions) per record once a (type, exchange, symbol) has been
        seen: routes are cached, no pattern is matched. Waits, and is cancellable, exactly
        like :meth:`publish`; a cancelled batch is delivered up to the record being waited
        on. Raises RuntimeError once the bus is closed; if the bus is closed while this waits,
        the rest of the batch goes nowhere.
        """
        if self._closed:
            raise RuntimeError("bus is closed")
        # Cleared in place on (un)subscribe, never replaced, so the local alias stays valid.
        routes = self._routes
        for record in records:
            key = (type(record), record.exchange, record.symbol)
            subs = routes.get(key)
            if subs is None:
                subs = self._resolve(key)
            for sub in subs:
                if not sub._offer(record):
                    await sub._put_wait(record)

    def try_publish_many(self, records: Sequence[Record]) -> bool:
        """Publish a batch without waiting, all or nothing: True when every record went to
        every matching subscription (exactly as :meth:`publish_many` would have delivered
        it); False, having delivered nothing, when some ``block`` subscription might not have
        room for the whole batch (then await :meth:`publish_many`).

        The check is conservative and O(block subscriptions) per batch, not per record: every
        ``block`` subscription, matching or not, must have room for ``len(records)`` more
        records and no publisher waiting. Lets a synchronous caller (the actor's transport
        callback) publish without a task hop. Raises RuntimeError once the bus is closed.
        """
        if self._closed:
            raise RuntimeError("bus is closed")
        n = len(records)
        for sub in self._blocking:
            if sub._open and (sub._putters or len(sub._queue) + n > sub.maxsize):
                return False
        everything = self._everything
        if everything is not None:
            # Every subscription takes every record (the usual case: consumers and sinks
            # that filter nothing): whole batches, no routing per record.
            for sub in everything:
                sub._offer_batch(records)
            return True
        # Some subscription filters (an App always has one: the monitor takes only Status
        # records). Route each run of consecutive records that share a route key as one
        # batch: a connection's batch is usually one symbol's records, so this costs one
        # lookup and one whole-run offer per matching subscription instead of one of each
        # per record, and each subscription still gets its records in publish order.
        routes = self._routes
        for key, run in itertools.groupby(records, _route_key):
            subs = routes.get(key)
            if subs is None:
                subs = self._resolve(key)
            if subs:
                same_key = list(run)
                for sub in subs:
                    sub._offer_batch(same_key)
        return True

    def close(self) -> None:
        """No more records: later publish/subscribe calls raise RuntimeError. Every
        subscription ends once its consumer has drained its queue; publishers already waiting
        on a full ``block`` subscriber still complete as the consumer makes room. Idempotent;
        never blocks."""
        if self._closed:
            return
        self._closed = True
        subs, self._subs = self._subs, []
        self._routes.clear()
        self._blocking = ()
        self._everything = ()
        for sub in subs:
            sub._end_of_stream()

    def _resolve(self, key: _RouteKey) -> tuple[Subscription, ...]:
        cls, exchange, symbol = key
        tag = type_name(cls)
        subs = tuple(sub for sub in self._subs if sub.matches(tag, exchange, symbol))
        if len(self._routes) >= _MAX_ROUTES:
            self._routes.clear()
        self._routes[key] = subs
        return subs

    def _detach(self, sub: Subscription) -> None:
        with suppress(ValueError):
            self._subs.remove(sub)
            self._routes.clear()
            self._note_blocking()

    def _note_blocking(self) -> None:
        """Refresh what try_publish_many precomputes; called whenever the set changes."""
        self._blocking = tuple(s for s in self._subs if s.policy is Policy.BLOCK)
        subs = tuple(self._subs)
        self._everything = subs if all(s.takes_everything for s in subs) else None

    def _notify_cutoff(self, sub: Subscription) -> None:
        if self._on_cutoff is None:
            return
        try:
            self._on_cutoff(sub)
        except Exception:
            _log.exception("on_cutoff callback failed", subscriber=sub.name)


def _type_tags(
    types: type[Record] | str | Iterable[type[Record] | str] | None,
) -> frozenset[str] | None:
    """Normalize a ``types`` filter to a set of type tags (None: every type)."""
    if types is None:
        return None
    items: Iterable[type[Record] | str] = (types,) if isinstance(types, str | type) else types
    tags: set[str] = set()
    for item in items:
        if isinstance(item, str):
            if item not in RECORD_TYPES:
                raise ValueError(
                    f"unknown record type {item!r} (known: {', '.join(sorted(RECORD_TYPES))})"
                )
            tags.add(item)
        else:
            tags.add(type_name(item))
    if not tags:
        raise ValueError("types is empty: the subscription would match nothing")
    return frozenset(tags)
