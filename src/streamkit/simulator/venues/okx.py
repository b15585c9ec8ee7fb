"""OKX v5 public WebSocket (``/ws/v5/public``), replaying ``data/okx.jsonl``.

* Subscribe ``{"op":"subscribe","args":[{"channel":"books","instId":"BTC-USDT"}]}`` -> one ack
  per arg ``{"event":"subscribe","arg":{...},"connId":".."}`` (``connId`` as current servers
  send it; the 2022 capture predates it). Unknown instrument or channel ->
  ``{"event":"error","msg":"Wrong URL or channel:..","code":"60018","connId":".."}``; a
  malformed request -> code ``60012``; the socket stays open either way.
* Text ``ping`` -> text ``pong``. No frame either way for 30 s -> the server closes (4004,
  code and reason from general knowledge of the venue, not verified in the fixtures).
* Captured channels: ``books`` (3 checksummed groups, looped snapshot-first), ``trades``,
  ``tickers``, ``bbo-tbt`` (a doc example). Other public channels are acknowledged and
  silent. ``shutdown``: the ``notice`` 64008 OKX sends before a service upgrade.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Final

from streamkit.simulator.venues.base import (
    ReplaySource,
    Session,
    VenueAdapter,
    book_kinds,
    connection_id_hex,
    group_rows,
    load_rows,
    shift_checksum,
)

IDLE_TIMEOUT: Final = 30.0
CHANNELS: Final = frozenset(
    {
        "books",
        "books5",
        "bbo-tbt",
        "books-l2-tbt",
        "books50-l2-tbt",
        "tickers",
        "trades",
        "funding-rate",
        "open-interest",
        "mark-price",
        "liquidation-orders",
    }
)


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


class OkxAdapter(VenueAdapter):
    exchange = "okx"
    ws_path = "/ws/v5/public"
    has_checksum = True

    def __init__(self, *, time_scale: float = 1.0) -> None:
        super().__init__(time_scale=time_scale)
        rows = load_rows("okx")
        self.instruments: set[str] = set()
        for group in group_rows(rows).values():
            symbol = group[0]["symbol"]
            self.add_source(
                ReplaySource(
                    f"books:{symbol}",
                    symbol,
                    [r["raw"] for r in group],
                    book_kinds(group),
                )
            )
        singles: dict[str, list[str]] = {}
        for row in rows:
            raw = row["raw"]
            if row.get("group") or not raw.startswith('{"arg"'):
                continue
            arg = json.loads(raw)["arg"]
            singles.setdefault(f"{arg['channel']}:{arg['instId']}", []).append(raw)
        for key, frames in singles.items():
            self.add_source(ReplaySource(key, key.partition(":")[2], frames))
        self.instruments = {source.symbol for source in self.sources.values()}

    def on_open(self, session: Session) -> None:
        session.state["conn_id"] = connection_id_hex()

    def on_text(self, session: Session, text: str) -> None:
        if text == "ping":
            session.send_control("pong")
            return
        conn_id = session.state["conn_id"]
        try:
            request = json.loads(text)
            op, args = request["op"], request["args"]
            if op not in ("subscribe", "unsubscribe") or not isinstance(args, list):
                raise ValueError(op)
        except (ValueError, KeyError, TypeError):
            session.send(
                _compact(
                    {
                        "event": "error",
                        "msg": f"Invalid request: {text}",
                        "code": "60012",
                        "connId": conn_id,
                    }
                )
            )
            return
        for arg in args:
            self._handle_arg(session, op, arg, conn_id)

    def _handle_arg(self, session: Session, op: str, arg: Any, conn_id: str) -> None:
        channel = arg.get("channel") if isinstance(arg, dict) else None
        inst = arg.get("instId") if isinstance(arg, dict) else None
        if channel not in CHANNELS or inst not in self.instruments:
            msg = (
                f"Wrong URL or channel:{channel},instId:{inst} doesn't exist. Please use the "
                "correct URL, channel and parameters referring to API document."
            )
            session.send(
                _compact({"event": "error", "msg": msg, "code": "60018", "connId": conn_id})
            )
            return
        ack = _compact(
            {"event": op, "arg": {"channel": channel, "instId": inst}, "connId": conn_id}
        )
        key = f"{channel}:{inst}"
        if op == "subscribe":
            session.send(ack)  # the ack is queued before the first data frame
            session.subscribe(key)
        else:
            session.unsubscribe(key)
            session.send(ack)

    async def keepalive(self, session: Session) -> None:
        timeout = self.scaled(IDLE_TIMEOUT)
        while True:
            idle = min(session.seconds_since_inbound(), session.seconds_since_outbound())
            if idle >= timeout:
                session.close(4004, "No data received in 30s.")
                return
            await asyncio.sleep(max(timeout - idle, 0.001))

    def corrupt_checksum(self, frame: str) -> str | None:
        return shift_checksum(frame, signed=True)

    def shutdown_frame(self) -> str | None:
        return _compact(
            {
                "event": "notice",
                "code": "64008",
                "msg": "The connection will soon be closed for a service upgrade. "
                "Please reconnect.",
            }
        )
