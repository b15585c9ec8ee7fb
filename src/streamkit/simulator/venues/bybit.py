"""Bybit v5 public WebSocket, spot (``/v5/public/spot``) and linear (``/v5/public/linear``).

* Subscribe ``{"req_id":"x","op":"subscribe","args":["orderbook.50.BTCUSDT"]}`` -> one ack
  for the request: linear ``{"success":true,"ret_msg":"","conn_id":"..","req_id":"x",
  "op":"subscribe"}``, spot the same with ``"ret_msg":"subscribe"``. An unknown topic ->
  ``{"success":false,"ret_msg":"error:handler not found,topic:<t>",...}``. Spot refuses more
  than 10 args per request.
* Heartbeat: ``{"op":"ping"}`` -> linear ``{"success":true,"ret_msg":"pong","conn_id":..,
  "req_id":..,"op":"ping"}``; spot omits ``req_id``. Without ping or data for 10 minutes the
  server closes the connection.
* Captured: ``orderbook.50.BTCUSDT`` (a real linear snapshot ``u=10132540`` and its next delta).
  As on Bybit, a subscription gets the snapshot once; then the delta repeats forever with
  ``u`` and ``seq`` moving on by one each time (its sizes are absolute, so the book stays
  what the first delta made it, and a withheld delta breaks the ``u`` chain as live),
  ``publicTrade.BTCUSDT`` and ``tickers.BTCUSDT``. No spot book was captured: the spot path
  replays the same BTCUSDT frames. Other depths/topics for BTCUSDT are acknowledged, silent.
  Bybit has no shutdown message and no checksum.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any, Final

from streamkit.simulator.venues.base import (
    ReplaySource,
    Session,
    VenueAdapter,
    book_kinds,
    group_rows,
    load_rows,
)

IDLE_TIMEOUT: Final = 600.0
SPOT_MAX_ARGS: Final = 10
SPOT_PATH: Final = "/v5/public/spot"
LINEAR_PATH: Final = "/v5/public/linear"
_TOPIC: Final = re.compile(
    r"(orderbook\.(1|50|200|1000)|publicTrade|tickers|kline\.\w+|liquidation|allLiquidation)"
    r"\.([A-Z0-9]+)"
)


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


class BybitAdapter(VenueAdapter):
    exchange = "bybit"
    ws_path = LINEAR_PATH
    ws_paths = (SPOT_PATH, LINEAR_PATH)

    def __init__(self, *, time_scale: float = 1.0) -> None:
        super().__init__(time_scale=time_scale)
        rows = load_rows("bybit")
        for group in group_rows(rows).values():
            topic = json.loads(group[0]["raw"])["topic"]
            self.add_source(
                ReplaySource(
                    topic,
                    group[0]["symbol"],
                    [r["raw"] for r in group],
                    book_kinds(group),
                    id_groups=[("u",), ("seq",)],
                    loop_from=1,  # one snapshot per subscription, as Bybit sends it
                )
            )
        singles: dict[str, list[str]] = {}
        for row in rows:
            if row.get("group") or row["kind"] not in ("trade", "ticker"):
                continue
            topic = json.loads(row["raw"])["topic"]
            singles.setdefault(topic, []).append(row["raw"])
        for topic, frames in singles.items():
            self.add_source(ReplaySource(topic, topic.rpartition(".")[2], frames))
        self.symbols = {s.symbol for s in self.sources.values() if s.symbol.endswith("USDT")}

    def on_open(self, session: Session) -> None:
        session.state["conn_id"] = str(uuid.uuid4())

    def _spot(self, session: Session) -> bool:
        return session.path == SPOT_PATH

    def on_text(self, session: Session, text: str) -> None:
        try:
            request = json.loads(text)
            op = request["op"]
        except (ValueError, KeyError, TypeError):
            self._reply(session, False, "error:request not in json format", "", "unknown")
            return
        req_id = request.get("req_id", "")
        if op == "ping":
            pong: dict[str, Any] = {
                "success": True,
                "ret_msg": "pong",
                "conn_id": session.state["conn_id"],
            }
            if not self._spot(session):
                pong["req_id"] = req_id
            pong["op"] = "ping"
            session.send_control(_compact(pong))
            return
        args = request.get("args")
        if op not in ("subscribe", "unsubscribe") or not isinstance(args, list):
            self._reply(session, False, f"error:unsupported op {op}", req_id, str(op))
            return
        if self._spot(session) and len(args) > SPOT_MAX_ARGS:
            self._reply(session, False, f"error:args size >{SPOT_MAX_ARGS}", req_id, op)
            return
        for topic in args:
            match = _TOPIC.fullmatch(str(topic))
            if match is None or match.group(3) not in self.symbols:
                self._reply(session, False, f"error:handler not found,topic:{topic}", req_id, op)
                return
        ok_msg = op if self._spot(session) else ""
        self._reply(session, True, ok_msg, req_id, op)
        for topic in args:
            if op == "subscribe":
                session.subscribe(topic)
            else:
                session.unsubscribe(topic)

    def _reply(self, session: Session, success: bool, msg: str, req_id: Any, op: str) -> None:
        session.send(
            _compact(
                {
                    "success": success,
                    "ret_msg": msg,
                    "conn_id": session.state.get("conn_id", ""),
                    "req_id": req_id,
                    "op": op,
                }
            )
        )

    async def keepalive(self, session: Session) -> None:
        timeout = self.scaled(IDLE_TIMEOUT)
        while True:
            idle = min(session.seconds_since_inbound(), session.seconds_since_outbound())
            if idle >= timeout:
                session.close(1000, "idle timeout")
                return
            await asyncio.sleep(max(timeout - idle, 0.001))
