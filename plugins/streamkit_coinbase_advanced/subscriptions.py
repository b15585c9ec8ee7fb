"""Subscribe/unsubscribe messages and matching Coinbase's answers to them.

Advanced Trade takes ONE channel per message: ``{"type":"subscribe","product_ids":[...],
"channel":"level2"}`` (unsubscribe has the same shape). Every request is answered by one
``subscriptions`` message listing ALL the connection's current subscriptions, or by an
``{"type":"error","message":...}`` frame, which names no request. :class:`AnswerQueue`
pairs answers with requests.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

HEARTBEATS = "heartbeats"


def message(kind: str, channel: str, products: Iterable[str]) -> bytes:
    """A subscribe/unsubscribe message for one channel (no ``jwt``: public channels)."""
    body = {"type": kind, "product_ids": list(products), "channel": channel}
    return json.dumps(body, separators=(",", ":")).encode()


def aliases(product: str) -> tuple[str, ...]:
    """The names Coinbase may use for a product in answers and data. USD and USDC books
    were merged in 2023: a ``BTC-USDC`` subscription can be answered and served as
    ``BTC-USD`` (ccxt resolves its USDC subscriptions from USD frames for this reason)."""
    if product.endswith("-USDC"):
        return (product, product[:-1])
    return (product,)


@dataclass(frozen=True, slots=True)
class Awaited:
    """A request whose answer has not arrived. ``key`` is the actor's ledger key (None for
    the protocol's own requests: heartbeats, resync unsubscribe/subscribe); ``symbol`` names
    the product a resync request is for, to address errors."""

    key: str | None
    kind: Literal["subscribe", "unsubscribe"]
    channel: str
    products: frozenset[str]
    symbol: str | None = None

    def missing(self, listed: Mapping[str, list[str]]) -> list[str]:
        """``channel:product`` pairs this subscribe asked for that ``listed`` lacks."""
        if self.channel == HEARTBEATS:
            return [] if HEARTBEATS in listed else [HEARTBEATS]
        have = set(listed.get(self.channel, ()))
        return sorted(
            f"{self.channel}:{p}"
            for p in self.products
            if not any(name in have for name in aliases(p))
        )

    def satisfied_by(self, listed: Mapping[str, list[str]]) -> bool:
        """Does this list of all current subscriptions show the request carried out?"""
        if self.kind == "subscribe":
            return not self.missing(listed)
        have = set(listed.get(self.channel, ()))
        return not any(name in have for p in self.products for name in aliases(p))


class AnswerQueue:
    """The requests still waiting for an answer, in the order they were sent.

    A ``subscriptions`` answer settles every waiting request it shows carried out (requests
    never overlap, so an answer cannot settle a later request early); an answer that shows
    none of them carried out belongs to the oldest one, which failed. Matching by content
    rather than strictly by position keeps the pairing right even when answers do not come
    in the order this plugin expects (the captured session subscribed ``level2`` before
    ``heartbeats``). An error frame names no request: it is the oldest one's.
    """

    def __init__(self) -> None:
        self._awaited: deque[Awaited] = deque()

    def expect(self, awaited: Awaited) -> None:
        self._awaited.append(awaited)

    def settle(self, listed: Mapping[str, list[str]]) -> tuple[list[Awaited], Awaited | None]:
        """``(requests carried out, failed request)``; the failed one is None unless no
        request is carried out (and None too when nothing was waiting)."""
        done = [a for a in self._awaited if a.satisfied_by(listed)]
        if done:
            self._awaited = deque(a for a in self._awaited if a not in done)
            return done, None
        return [], self.pop()

    def pop(self) -> Awaited | None:
        """The oldest waiting request (None: an answer nobody asked for)."""
        return self._awaited.popleft() if self._awaited else None

    def keyed_pending(self) -> bool:
        """Are any of the actor's (initial) subscribe requests still unanswered?"""
        return any(a.key is not None for a in self._awaited)

    def __len__(self) -> int:
        return len(self._awaited)
