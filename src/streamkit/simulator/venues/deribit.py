"""Deribit API v2 JSON-RPC over WebSocket (``/ws/api/v2``), replaying ``data/deribit.jsonl``.

* ``public/subscribe`` ``{"jsonrpc":"2.0","id":0,"method":"public/subscribe","params":
  {"channels":["book.X.100ms"]}}`` -> ``{"jsonrpc":"2.0","id":0,"result":[<channels actually
  subscribed>],"usIn":..,"usOut":..,"usDiff":..,"testnet":false}`` (unknown channels are left
  out of ``result``); ``public/unsubscribe`` likewise. Notifications
  ``{"jsonrpc":"2.0","method":"subscription","params":{"channel":..,"data":..}}`` carry the
  channel name as subscribed (``raw``, ``100ms`` or ``agg2``: the capture's ``.raw`` frames
  are relabelled, their data untouched).
* ``public/set_heartbeat`` ``{"interval":N}`` (N >= 10) -> ``"result":"ok"``; then every N
  seconds ``{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}}``; if the
  previous test_request was not answered with ``public/test`` the connection is closed.
  ``public/test`` -> ``{"result":{"version":..}}``; ``public/disable_heartbeat`` -> ``"ok"``.
* Errors: JSON-RPC ``{"jsonrpc":"2.0","id":..,"error":{"message":..,"code":..}}``.
* Captured: ``book.BTC-24SEP21-8000-P`` (snapshot + 30 changes; looping shifts
  ``change_id``/``prev_change_id`` so the chain holds and ids keep increasing), ``ticker`` for
  six options, ``trades`` and ``quote`` frames. No checksum, no shutdown message.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Final

from streamkit.simulator.venues.base import (
    Relabel,
    ReplaySource,
    Session,
    VenueAdapter,
    book_kinds,
    group_rows,
    load_rows,
)

MIN_HEARTBEAT_INTERVAL: Final = 10
VERSION: Final = "1.2.26"
INTERVALS: Final = frozenset({"raw", "100ms", "agg2"})


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def _channel_key(channel: str) -> tuple[str, str] | None:
    """``book.X.100ms`` -> (``book.X``, ``100ms``); ``quote.X`` -> (``quote.X``, ``""``)."""
    parts = channel.split(".")
    if len(parts) == 2 and parts[0] == "quote":
        return channel, ""
    if len(parts) == 3 and parts[0] in ("book", "trades", "ticker") and parts[2] in INTERVALS:
        return f"{parts[0]}.{parts[1]}", parts[2]
    return None


class DeribitAdapter(VenueAdapter):
    exchange = "deribit"
    ws_path = "/ws/api/v2"

    def __init__(self, *, time_scale: float = 1.0) -> None:
        super().__init__(time_scale=time_scale)
        rows = load_rows("deribit")
        self._captured_channel: dict[str, str] = {}
        for group in group_rows(rows).values():
            channel = json.loads(group[0]["raw"])["params"]["channel"]
            self._add(
                channel,
                [r["raw"] for r in group],
                book_kinds(group),
                [("change_id", "prev_change_id")],
            )
        singles: dict[str, list[str]] = {}
        for row in rows:
            if row.get("group") or row["kind"] not in ("trade", "ticker", "bbo"):
                continue
            channel = json.loads(row["raw"])["params"]["channel"]
            singles.setdefault(channel, []).append(row["raw"])
        for channel, frames in singles.items():
            self._add(channel, frames, None, [("trade_seq",)])
        self.instruments = {key.split(".")[1] for key in self.sources}

    def _add(
        self,
        channel: str,
        frames: list[str],
        kinds: Any,
        id_groups: list[tuple[str, ...]],
    ) -> None:
        parsed = _channel_key(channel)
        if parsed is None or parsed[0] in self.sources:
            return  # one captured interval per channel is enough
        key = parsed[0]
        self._captured_channel[key] = channel
        self.add_source(ReplaySource(key, key.split(".")[1], frames, kinds, id_groups))

    def on_open(self, session: Session) -> None:
        session.state["heartbeat"] = None  # interval in seconds, once set
        session.state["answered"] = True

    def on_text(self, session: Session, text: str) -> None:
        us_in = time.time_ns() // 1000
        try:
            request = json.loads(text)
            method = request["method"]
            params = request.get("params", {})
            if not isinstance(params, dict):
                raise TypeError(params)
        except (ValueError, KeyError, TypeError):
            self._reply(session, None, us_in, error={"message": "Invalid Request", "code": -32600})
            return
        req_id = request.get("id")
        if method in ("public/subscribe", "public/unsubscribe"):
            channels = params.get("channels")
            if not isinstance(channels, list):
                self._invalid(session, req_id, us_in, "channels", "must be a list")
                return
            done = [c for c in channels if self._toggle(session, method, str(c))]
            self._reply(session, req_id, us_in, result=done)
        elif method == "public/set_heartbeat":
            interval = params.get("interval")
            if not isinstance(interval, int | float) or interval < MIN_HEARTBEAT_INTERVAL:
                self._invalid(session, req_id, us_in, "interval", "must be at least 10")
                return
            session.state["heartbeat"] = float(interval)
            session.state["answered"] = True
            self._reply(session, req_id, us_in, result="ok")
        elif method == "public/disable_heartbeat":
            session.state["heartbeat"] = None
            self._reply(session, req_id, us_in, result="ok")
        elif method == "public/test":
            session.state["answered"] = True
            self._reply(session, req_id, us_in, result={"version": VERSION}, control=True)
        else:
            self._reply(
                session, req_id, us_in, error={"message": "Method not found", "code": -32601}
            )

    def _toggle(self, session: Session, method: str, channel: str) -> bool:
        parsed = _channel_key(channel)
        if parsed is None or parsed[0].split(".")[1] not in self.instruments:
            return False
        key = parsed[0]
        if method == "public/unsubscribe":
            return session.unsubscribe(key)
        captured = self._captured_channel.get(key)
        relabel = None
        if captured is not None and captured != channel:
            relabel = Relabel(f'"channel":"{captured}"', f'"channel":"{channel}"')
        session.subscribe(key, relabel)
        return True

    def _invalid(self, session: Session, req_id: Any, us_in: int, param: str, reason: str) -> None:
        error = {
            "message": "Invalid params",
            "data": {"reason": reason, "param": param},
            "code": -32602,
        }
        self._reply(session, req_id, us_in, error=error)

    def _reply(
        self,
        session: Session,
        req_id: Any,
        us_in: int,
        *,
        result: Any = None,
        error: dict[str, Any] | None = None,
        control: bool = False,
    ) -> None:
        us_out = time.time_ns() // 1000
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": req_id}
        if error is not None:
            reply["error"] = error
        else:
            reply["result"] = result
        reply.update(usIn=us_in, usOut=us_out, usDiff=us_out - us_in, testnet=False)
        if control:
            session.send_control(_compact(reply))
        else:
            session.send(_compact(reply))

    async def keepalive(self, session: Session) -> None:
        test_request = '{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}}'
        while True:
            interval = session.state.get("heartbeat")
            if interval is None:
                await asyncio.sleep(self.scaled(1.0))
                continue
            await asyncio.sleep(self.scaled(interval))
            if session.state.get("heartbeat") is None:
                continue
            if not session.state["answered"]:
                session.close(1000, "test_request not answered")
                return
            session.state["answered"] = False
            session.send_control(test_request)
