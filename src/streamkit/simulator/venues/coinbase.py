"""Coinbase Exchange WebSocket feed (``/``), replaying the Exchange frames of
``data/coinbase.jsonl``.

* Subscribe ``{"type":"subscribe","product_ids":[..],"channels":["level2",{"name":"ticker",
  "product_ids":[..]}]}`` -> ``{"type":"subscriptions","channels":[{"name":..,"product_ids":
  [..]},..]}`` listing **all** current subscriptions. Errors: ``{"type":"error","message":
  "Failed to subscribe","reason":".."}``. No subscribe within 5 s of connecting -> the server
  closes the connection (1008; the close code is a simulator choice).
* ``heartbeat`` channel: per product, once a second, ``{"type":"heartbeat","last_trade_id":..,
  "product_id":..,"sequence":..,"time":..}`` carrying the last ``sequence`` this connection was
  sent for the product and the id of the last trade it was sent (``match`` / ``last_match``
  frames only: a ``ticker`` repeats an older trade's id, and its loops must not look like new
  trades). Before any match was sent, ``last_trade_id`` is the product's last trade before the
  replay: the first captured match's id - 1, or the captured ticker's ``trade_id``.
  Heartbeats are queued in order with data (so a ``stall`` holds them back too).
* Captured: ``level2`` (and ``level2_batch``, same frames) for NU-GBP: snapshot + 76
  ``l2update``; ``matches`` (``last_match`` then ``match``) and ``ticker`` for several
  products; looping shifts ``sequence``/``trade_id`` so they keep increasing (a product's
  captured trade ids are consecutive, so its matches continue without a hole across loops).
  No checksum, no shutdown message.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from streamkit.simulator.venues.base import (
    ReplaySource,
    Session,
    VenueAdapter,
    book_kinds,
    group_rows,
    load_rows,
)

SUBSCRIBE_DEADLINE: Final = 5.0
HEARTBEAT_INTERVAL: Final = 1.0
_EXCHANGE_API: Final = "exchange-feed"
_CHANNELS: Final = frozenset({"level2", "level2_batch", "matches", "ticker", "heartbeat", "full"})
_BOOK_CHANNELS: Final = {"level2": "level2", "level2_batch": "level2"}
_SEQUENCE: Final = re.compile(r'"sequence":(\d+)')
_TRADE_ID: Final = re.compile(r'"trade_id":(\d+)')
_MATCH: Final = re.compile(r'"type":"(?:last_)?match"')


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def _iso_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class CoinbaseAdapter(VenueAdapter):
    exchange = "coinbase"
    ws_path = "/"
    observes_data = True

    def __init__(self, *, time_scale: float = 1.0) -> None:
        super().__init__(time_scale=time_scale)
        rows = [r for r in load_rows("coinbase") if str(r.get("api", "")).startswith(_EXCHANGE_API)]
        for group in group_rows(rows).values():
            product = group[0]["symbol"]
            self.add_source(
                ReplaySource(
                    f"level2:{product}", product, [r["raw"] for r in group], book_kinds(group)
                )
            )
        singles: dict[str, list[str]] = {}
        self.products: set[str] = set()
        for row in rows:
            if row.get("symbol"):
                self.products.add(row["symbol"])
            if row.get("group") or row["kind"] not in ("trade", "ticker"):
                continue
            channel = "matches" if row["kind"] == "trade" else "ticker"
            singles.setdefault(f"{channel}:{row['symbol']}", []).append(row["raw"])
        for key, frames in singles.items():
            self.add_source(
                ReplaySource(
                    key, key.partition(":")[2], frames, id_groups=[("sequence",), ("trade_id",)]
                )
            )
        self.initial_trade_id = _initial_trade_ids(rows)
        # Products named in the captured subscribe requests exist too (silent ones).
        for row in rows:
            if row["kind"] == "subscribe_request" and '"product_ids"' in row["raw"]:
                self.products.update(json.loads(row["raw"]).get("product_ids", []))

    def on_open(self, session: Session) -> None:
        session.state["channels"] = {}  # channel -> product ids (insertion-ordered dict)
        session.state["last"] = {}  # product -> (sequence, trade_id)

    def on_text(self, session: Session, text: str) -> None:
        try:
            request = json.loads(text)
            kind = request["type"]
        except (ValueError, KeyError, TypeError):
            self._error(session, "Malformed JSON")
            return
        if kind not in ("subscribe", "unsubscribe"):
            self._error(session, f"Unknown message type {kind!r}")
            return
        wanted = self._requested(request)
        if isinstance(wanted, str):
            self._error(session, wanted)
            return
        channels: dict[str, dict[str, None]] = session.state["channels"]
        for name, products in wanted:
            current = channels.setdefault(name, {})
            for product in products:
                key = f"{_BOOK_CHANNELS.get(name, name)}:{product}"
                if kind == "subscribe":
                    current[product] = None
                else:
                    current.pop(product, None)
                if name != "heartbeat":
                    self._track(session, key, subscribe=kind == "subscribe")
            if not current:
                del channels[name]
        session.state["subscribed"] = True
        ack = {
            "type": "subscriptions",
            "channels": [{"name": n, "product_ids": list(p)} for n, p in channels.items()],
        }
        # The ack must precede the new data: it is queued now, data from the next pace tick.
        session.send(_compact(ack))

    def _track(self, session: Session, key: str, *, subscribe: bool) -> None:
        # level2 and level2_batch share one replay: subscribe once, keep while either is on.
        if subscribe:
            session.subscribe(key)
        elif not any(
            key == f"{_BOOK_CHANNELS.get(n, n)}:{p}"
            for n, ps in session.state["channels"].items()
            for p in ps
        ):
            session.unsubscribe(key)

    def _requested(self, request: dict[str, Any]) -> list[tuple[str, list[str]]] | str:
        """``[(channel, products)]`` or the reason of the error."""
        top = request.get("product_ids", [])
        wanted: list[tuple[str, list[str]]] = []
        for channel in request.get("channels", []):
            name: Any
            if isinstance(channel, str):
                name, products = channel, top
            elif isinstance(channel, dict):
                name, products = channel.get("name"), channel.get("product_ids", top)
            else:
                return "Malformed channel"
            if name not in _CHANNELS:
                return f"{name} is not a valid channel"
            if not products:
                return f"You need to specify at least one product ID for channel {name}"
            for product in products:
                if product not in self.products:
                    return f"{product} is not a valid product"
            wanted.append((str(name), [str(p) for p in products]))
        if not wanted:
            return "No channels provided"
        return wanted

    def _error(self, session: Session, reason: str) -> None:
        session.send(
            _compact({"type": "error", "message": "Failed to subscribe", "reason": reason})
        )

    async def keepalive(self, session: Session) -> None:
        deadline = self.scaled(SUBSCRIBE_DEADLINE)
        interval = self.scaled(HEARTBEAT_INTERVAL)
        await asyncio.sleep(min(deadline, interval))
        waited = min(deadline, interval)
        while True:
            if not session.state.get("subscribed") and waited >= deadline:
                session.close(1008, "No subscribe message within 5 seconds")
                return
            for product in session.state["channels"].get("heartbeat", {}):
                sequence, trade_id = session.state["last"].get(
                    product, (0, self.initial_trade_id.get(product, 0))
                )
                # In order with data, as on the venue: sent ahead of queued frames, it would
                # announce trades the client has not been sent yet (a false gap).
                session.send(
                    _compact(
                        {
                            "type": "heartbeat",
                            "last_trade_id": trade_id,
                            "product_id": product,
                            "sequence": sequence,
                            "time": _iso_now(),
                        }
                    )
                )
            await asyncio.sleep(interval)
            waited += interval

    def on_data(self, session: Session, product: str, frame: str) -> None:
        """Remember the newest ``sequence`` and matched ``trade_id`` sent for ``product``."""
        seq = _SEQUENCE.search(frame)
        trade = _TRADE_ID.search(frame) if _MATCH.search(frame) else None
        old_seq, old_trade = session.state["last"].get(
            product, (0, self.initial_trade_id.get(product, 0))
        )
        session.state["last"][product] = (
            max(old_seq, int(seq.group(1))) if seq else old_seq,
            max(old_trade, int(trade.group(1))) if trade else old_trade,
        )


def _initial_trade_ids(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Product -> the id of its last trade before the replay starts (see the module doc)."""
    first_match: dict[str, int] = {}
    ticker: dict[str, int] = {}
    for row in rows:
        product = row.get("symbol")
        if not product or row.get("group") or row["kind"] not in ("trade", "ticker"):
            continue
        trade_id = json.loads(row["raw"]).get("trade_id")
        if isinstance(trade_id, int):
            found = first_match if row["kind"] == "trade" else ticker
            found.setdefault(product, trade_id - 1 if found is first_match else trade_id)
    return ticker | first_match
