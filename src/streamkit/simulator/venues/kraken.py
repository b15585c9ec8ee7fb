"""Kraken spot WebSocket v2 (``/v2``), replaying the v2 book groups of ``data/kraken.jsonl``.

* On connect: a ``status`` channel message (``system: online``), as the venue documents.
* Subscribe ``{"method":"subscribe","params":{"channel":"book","symbol":["BTC/USD"],
  "depth":10},"req_id":1}`` -> one ack per symbol ``{"method":"subscribe","result":{"channel":
  "book","depth":10,"snapshot":true,"symbol":"BTC/USD"},"success":true,"time_in":..,
  "time_out":..}`` (plus ``req_id`` when given). Unknown pair -> ``{"error":"Currency pair not
  supported XBT/USD","method":"subscribe","success":false,"symbol":"XBT/USD",...}``.
* ``{"method":"ping","req_id":N}`` -> ``{"method":"pong","req_id":N,"time_in":..,"time_out":..}``.
* Heartbeat: ``{"channel":"heartbeat"}`` once a second while a subscribed connection has no
  other traffic.
* Captured: ``book`` depth 10 for BTC/USD (510 checksummed frames) and ETH/USD (2). Other
  depths are refused (a simulator limit: a deeper book cannot be replayed from a depth-10
  capture). The v2 capture has no trades or tickers: ``trade``/``ticker`` are acknowledged
  and silent. ``shutdown``: a ``status`` message with ``system: maintenance``.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from typing import Any, Final

from streamkit.simulator.venues.base import (
    ReplaySource,
    Session,
    VenueAdapter,
    book_kinds,
    group_rows,
    load_rows,
    next_request_id,
    shift_checksum,
)

HEARTBEAT_INTERVAL: Final = 1.0
CAPTURED_DEPTH: Final = 10
CHANNELS: Final = frozenset({"book", "trade", "ticker", "ohlc", "instrument"})


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def _iso_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _status(system: str) -> str:
    return _compact(
        {
            "channel": "status",
            "type": "update",
            "data": [
                {
                    "version": "2.0.10",
                    "system": system,
                    "api_version": "v2",
                    "connection_id": next_request_id(),
                }
            ],
        }
    )


class KrakenAdapter(VenueAdapter):
    exchange = "kraken"
    ws_path = "/v2"
    has_checksum = True

    def __init__(self, *, time_scale: float = 1.0) -> None:
        super().__init__(time_scale=time_scale)
        for group in group_rows(load_rows("kraken"), api_prefix="spot-ws-v2").values():
            symbol = group[0]["symbol"]
            self.add_source(
                ReplaySource(f"book:{symbol}", symbol, [r["raw"] for r in group], book_kinds(group))
            )
        self.symbols = {source.symbol for source in self.sources.values()}

    def on_open(self, session: Session) -> None:
        session.send(_status("online"))

    def on_text(self, session: Session, text: str) -> None:
        time_in = _iso_now()
        try:
            request = json.loads(text)
            method = request["method"]
        except (ValueError, KeyError, TypeError):
            session.send(
                _compact(
                    {
                        "error": "Malformed request",
                        "success": False,
                        "time_in": time_in,
                        "time_out": _iso_now(),
                    }
                )
            )
            return
        req_id = request.get("req_id")
        if method == "ping":
            pong: dict[str, Any] = {"method": "pong"}
            if req_id is not None:
                pong["req_id"] = req_id
            pong.update(time_in=time_in, time_out=_iso_now())
            session.send_control(_compact(pong))
            return
        if method not in ("subscribe", "unsubscribe"):
            self._error(session, method, f"Method not found: {method}", req_id, time_in)
            return
        params = request.get("params")
        channel = params.get("channel") if isinstance(params, dict) else None
        symbols = params.get("symbol") if isinstance(params, dict) else None
        if channel not in CHANNELS or not isinstance(symbols, list):
            self._error(session, method, "Channel not supported", req_id, time_in)
            return
        depth = params.get("depth", CAPTURED_DEPTH)
        if channel == "book" and depth != CAPTURED_DEPTH:
            self._error(session, method, f"Depth {depth} not captured (only 10)", req_id, time_in)
            return
        for symbol in symbols:
            self._handle_symbol(session, method, channel, str(symbol), req_id, time_in)

    def _handle_symbol(
        self, session: Session, method: str, channel: str, symbol: str, req_id: Any, time_in: str
    ) -> None:
        if symbol not in self.symbols:
            reply: dict[str, Any] = {
                "error": f"Currency pair not supported {symbol}",
                "method": method,
                "success": False,
                "symbol": symbol,
            }
        else:
            result: dict[str, Any] = {"channel": channel}
            if channel == "book":
                result.update(depth=CAPTURED_DEPTH, snapshot=True)
            result["symbol"] = symbol
            reply = {"method": method, "result": result, "success": True}
        if req_id is not None:
            reply["req_id"] = req_id
        reply.update(time_in=time_in, time_out=_iso_now())
        key = f"{channel}:{symbol}"
        if reply["success"] and method == "subscribe":
            session.send(_compact(reply))
            session.subscribe(key)
        else:
            if reply["success"]:
                session.unsubscribe(key)
            session.send(_compact(reply))

    def _error(self, session: Session, method: str, error: str, req_id: Any, time_in: str) -> None:
        reply: dict[str, Any] = {"error": error, "method": method, "success": False}
        if req_id is not None:
            reply["req_id"] = req_id
        reply.update(time_in=time_in, time_out=_iso_now())
        session.send(_compact(reply))

    async def keepalive(self, session: Session) -> None:
        interval = self.scaled(HEARTBEAT_INTERVAL)
        while True:
            await asyncio.sleep(interval / 4)
            if session.subscriptions and session.seconds_since_outbound() >= interval:
                session.send_control('{"channel":"heartbeat"}')

    def corrupt_checksum(self, frame: str) -> str | None:
        return shift_checksum(frame, signed=False)

    def shutdown_frame(self) -> str | None:
        return _status("maintenance")
