"""BitMEX realtime WebSocket (``/realtime``), replaying the live capture in ``data/bitmex.jsonl``.

* On connect: the captured welcome ``{"info":"Welcome to the BitMEX Realtime API.",...}``.
* Subscribe ``{"op":"subscribe","args":["orderBookL2:XBTUSD","trade:XBTUSD"]}`` (or one string)
  -> one ack per topic ``{"success":true,"subscribe":"orderBookL2:XBTUSD","request":{..the
  request..}}``; unknown table -> ``{"status":400,"error":"Unknown table: x","meta":{},
  "request":{..}}``; unknown symbol -> status 400 ``"Unknown or expired symbol"`` (wording
  from general knowledge, not verified in the fixtures). A bare table (``"trade"``) means all
  captured symbols.
* Text ``ping`` -> text ``pong``. No server heartbeat, no shutdown message, no checksum.
* Captured: ``orderBookL2`` for SOLUSDT and TRXUSDT (partial + inserts/updates/deletes by id;
  looping re-sends the partial, which resets a client's table), ``trade`` and ``quote``
  (partial, then inserts) for the symbols of the live capture.
"""

from __future__ import annotations

import json
from typing import Any, Final

from streamkit.simulator.venues.base import (
    ReplaySource,
    Session,
    VenueAdapter,
    book_kinds,
    group_rows,
    load_rows,
)

TABLES: Final = frozenset(
    {
        "orderBookL2",
        "orderBookL2_25",
        "orderBook10",
        "trade",
        "quote",
        "instrument",
        "funding",
        "liquidation",
        "tradeBin1m",
    }
)
_LIVE_URL: Final = "wss://www.bitmex.com/realtime"


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


class BitmexAdapter(VenueAdapter):
    exchange = "bitmex"
    ws_path = "/realtime"

    def __init__(self, *, time_scale: float = 1.0) -> None:
        super().__init__(time_scale=time_scale)
        rows = load_rows("bitmex")
        self.welcome = next(r["raw"] for r in rows if r["kind"] == "info")
        for group in group_rows(rows).values():
            symbol = group[0]["symbol"]
            self.add_source(
                ReplaySource(
                    f"orderBookL2:{symbol}", symbol, [r["raw"] for r in group], book_kinds(group)
                )
            )
        singles: dict[str, list[str]] = {}
        for row in rows:
            if (
                row.get("group")
                or row.get("url") != _LIVE_URL
                or row["kind"]
                not in (
                    "trade",
                    "bbo",
                )
            ):
                continue
            table = "trade" if row["kind"] == "trade" else "quote"
            singles.setdefault(f"{table}:{row['symbol']}", []).append(row["raw"])
        for key, frames in singles.items():
            self.add_source(ReplaySource(key, key.partition(":")[2], frames))
        self.symbols = {source.symbol for source in self.sources.values()}
        # Symbols the live capture subscribed to exist too (some stayed silent).
        for row in rows:
            if row["kind"] == "subscribe_request":
                for arg in json.loads(row["raw"])["args"]:
                    self.symbols.add(arg.partition(":")[2])

    def on_open(self, session: Session) -> None:
        session.send(self.welcome)

    def on_text(self, session: Session, text: str) -> None:
        if text == "ping":
            session.send_control("pong")
            return
        try:
            request = json.loads(text)
            op, args = request["op"], request.get("args", [])
        except (ValueError, KeyError, TypeError):
            session.send(
                _compact(
                    {
                        "status": 400,
                        "error": "Unable to parse request.",
                        "meta": {},
                        "request": text,
                    }
                )
            )
            return
        if op not in ("subscribe", "unsubscribe"):
            self._error(session, f"Unknown op: {op}", request)
            return
        topics = [args] if isinstance(args, str) else args
        for topic in topics:
            table, _, symbol = str(topic).partition(":")
            if table not in TABLES:
                self._error(session, f"Unknown table: {table}", request)
                continue
            if symbol and symbol not in self.symbols:
                self._error(session, f"Unknown or expired symbol: {symbol}", request)
                continue
            symbols = (
                [symbol]
                if symbol
                else sorted(
                    s.symbol for s in self.sources.values() if s.key.startswith(f"{table}:")
                )
            )
            ack = _compact({"success": True, op: topic, "request": request})
            if op == "subscribe":
                session.send(ack)
                for name in symbols:
                    session.subscribe(f"{table}:{name}")
            else:
                for name in symbols:
                    session.unsubscribe(f"{table}:{name}")
                session.send(ack)

    def _error(self, session: Session, error: str, request: Any) -> None:
        session.send(_compact({"status": 400, "error": error, "meta": {}, "request": request}))
