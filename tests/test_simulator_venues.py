"""The venue simulators, exercised over a real WebSocket with a plain aiohttp client.

Expected frames come from the packaged captures, read here independently of the simulator;
expected protocol replies from docs/exchange-protocols.md.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

import aiohttp
import pytest

from streamkit.simulator import Fault, FaultError, VenueSimulator, make_simulator

RECV_TIMEOUT = 5.0


def rows(name: str) -> list[dict[str, Any]]:
    text = (resources.files("streamkit.simulator") / "data" / f"{name}.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def group(name: str, group_id: str) -> list[str]:
    return [r["raw"] for r in rows(name) if r.get("group") == group_id]


@asynccontextmanager
async def venue(exchange: str, **options: Any) -> AsyncIterator[VenueSimulator]:
    options.setdefault("rate", 1000)
    sim = make_simulator(exchange, **options)
    assert isinstance(sim, VenueSimulator)
    async with sim:
        yield sim


@asynccontextmanager
async def client(url: str) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with aiohttp.ClientSession() as http, http.ws_connect(url, autoping=True) as ws:
        yield ws


async def recv(ws: aiohttp.ClientWebSocketResponse) -> str:
    msg = await ws.receive(timeout=RECV_TIMEOUT)
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    return str(msg.data)


async def recv_until(
    ws: aiohttp.ClientWebSocketResponse, predicate: Callable[[str], bool], limit: int = 5000
) -> str:
    for _ in range(limit):
        text = await recv(ws)
        if predicate(text):
            return text
    raise AssertionError("frame never arrived")


async def take(
    ws: aiohttp.ClientWebSocketResponse, n: int, keep: Callable[[str], bool] = lambda _: True
) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        text = await recv(ws)
        if keep(text):
            out.append(text)
    return out


def without_checksum(frame: str) -> dict[str, Any]:
    data = json.loads(frame)
    for item in data.get("data", []):
        item.pop("checksum", None)
    return data


def checksum_of(frame: str) -> int:
    return int(json.loads(frame)["data"][0]["checksum"])


def anomalies(received: list[str], captured: list[str], start: int = 1) -> list[str]:
    """Walk ``received`` along ``captured`` (looped) and name every deviation:
    ``bad_checksum`` (same levels, other checksum), ``gap`` (one frame skipped) and
    ``duplicate`` (the previous frame again). ``received[0]`` is expected to be
    ``captured[start]``."""
    found: list[str] = []
    j = start
    n = len(captured)
    for frame in received:
        expected, previous = captured[j % n], captured[(j - 1) % n]
        if frame == expected:
            j += 1
        elif frame == previous:
            found.append("duplicate")
        elif frame == captured[(j + 1) % n]:
            found.append("gap")
            j += 2
        else:
            assert without_checksum(frame) == without_checksum(expected), frame[:200]
            assert checksum_of(frame) != checksum_of(expected)
            found.append("bad_checksum")
            j += 1
    return found


# ------------------------------------------------------------------------------------- OKX

OKX_BOOK = group("okx", "okx-books-BTC-USDT")


async def test_okx_subscribe_replay_ping_and_errors() -> None:
    async with venue("okx") as sim, client(sim.ws_url) as ws:
        assert sim.ws_url.endswith("/ws/v5/public")
        arg = {"channel": "books", "instId": "BTC-USDT"}
        await ws.send_str(json.dumps({"op": "subscribe", "args": [arg]}))
        ack = json.loads(await recv(ws))
        assert ack["event"] == "subscribe" and ack["arg"] == arg and ack["connId"]
        # The whole captured group, byte-exact and in order, then the loop restarts with
        # the snapshot (which resets a client's book; checksums stay valid).
        frames = await take(ws, len(OKX_BOOK) + 2, lambda t: t != "pong")
        assert frames[: len(OKX_BOOK)] == OKX_BOOK
        assert frames[len(OKX_BOOK) :] == OKX_BOOK[:2]
        await ws.send_str("ping")
        assert await recv_until(ws, lambda t: not t.startswith("{")) == "pong"
        await ws.send_str(
            json.dumps({"op": "subscribe", "args": [{"channel": "books", "instId": "NOPE-USDT"}]})
        )
        error = json.loads(await recv_until(ws, lambda t: '"event":"error"' in t))
        assert error["code"] == "60018" and "NOPE-USDT doesn't exist" in error["msg"]


async def test_okx_book_faults_are_visible_on_the_wire() -> None:
    async with venue("okx", rate=200) as sim, client(sim.ws_url) as ws:
        await ws.send_str(
            json.dumps({"op": "subscribe", "args": [{"channel": "books", "instId": "BTC-USDT"}]})
        )
        await recv(ws)  # ack
        assert await recv(ws) == OKX_BOOK[0]
        # Pending book faults apply, one each, to the next updates of the symbol.
        for kind in ("bad_checksum", "gap", "duplicate"):
            assert sim.inject(Fault(kind, symbol="BTC-USDT")) == 1  # type: ignore[arg-type]
        sim.inject(Fault("gap", symbol="UNI-USD-SWAP"))  # another symbol: no effect here
        received = await take(ws, 60)
        assert anomalies(received, OKX_BOOK) == ["bad_checksum", "gap", "duplicate"]
        assert sim.stats.faults_injected == {"bad_checksum": 1, "gap": 2, "duplicate": 1}


async def test_okx_shutdown_notice_and_idle_close() -> None:
    async with venue("okx", time_scale=0.01) as sim, client(sim.ws_url) as ws:
        sim.inject(Fault("shutdown"))
        notice = json.loads(await recv(ws))
        assert notice["event"] == "notice" and notice["code"] == "64008"
    # No subscription and no ping: the venue cuts the connection after 30 s (here 0.3 s).
    async with venue("okx", time_scale=0.01) as sim, client(sim.ws_url) as ws:
        msg = await ws.receive(timeout=RECV_TIMEOUT)
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 4004


# ----------------------------------------------------------------------------------- Kraken

KRAKEN_ETH = group("kraken", "kraken-v2-book10-ETH/USD")
KRAKEN_BTC = group("kraken", "kraken-v2-book10-BTC/USD-pks")


async def test_kraken_v2_subscribe_replay_heartbeat_ping() -> None:
    async with venue("kraken", time_scale=0.02, replay_once=True) as sim, client(sim.ws_url) as ws:
        assert sim.ws_url.endswith("/v2")
        status = json.loads(await recv(ws))
        assert status["channel"] == "status" and status["data"][0]["system"] == "online"
        request = {
            "method": "subscribe",
            "params": {"channel": "book", "symbol": ["ETH/USD"], "depth": 10},
            "req_id": 7,
        }
        await ws.send_str(json.dumps(request))
        ack = json.loads(await recv(ws))
        assert ack["method"] == "subscribe" and ack["success"] is True and ack["req_id"] == 7
        assert ack["result"] == {
            "channel": "book",
            "depth": 10,
            "snapshot": True,
            "symbol": "ETH/USD",
        }
        assert await take(ws, 2) == KRAKEN_ETH
        # Nothing else to send: heartbeats flow (1 s, scaled to 20 ms).
        assert await recv(ws) == '{"channel":"heartbeat"}'
        await ws.send_str('{"method":"ping","req_id":101}')
        pong = json.loads(await recv_until(ws, lambda t: "pong" in t))
        assert pong["method"] == "pong" and pong["req_id"] == 101
        await ws.send_str(
            json.dumps({**request, "params": {"channel": "book", "symbol": ["XBT/USD"]}})
        )
        error = json.loads(await recv_until(ws, lambda t: "error" in t))
        assert error["error"] == "Currency pair not supported XBT/USD"
        assert error["success"] is False


async def test_kraken_bad_checksum_keeps_levels() -> None:
    async with venue("kraken", rate=200) as sim, client(sim.ws_url) as ws:
        await recv(ws)  # status
        request = {"method": "subscribe", "params": {"channel": "book", "symbol": ["BTC/USD"]}}
        await ws.send_str(json.dumps(request))
        await recv(ws)  # ack
        assert await recv(ws) == KRAKEN_BTC[0]
        sim.inject(Fault("bad_checksum", symbol="BTC/USD"))
        received = await take(ws, 40)
        assert anomalies(received, KRAKEN_BTC) == ["bad_checksum"]
        corrupted = next(f for f in received if f not in KRAKEN_BTC)
        assert 0 <= checksum_of(corrupted) < 2**32  # still an unsigned 32-bit value


# ------------------------------------------------------------------------------------ Bybit

BYBIT_BOOK = group("bybit", "bybit-v5-ob50-BTCUSDT")


async def test_bybit_linear_and_spot_acks_pong_and_u_continuity() -> None:
    async with venue("bybit") as sim:
        async with client(sim.ws_url) as ws:
            assert sim.ws_url.endswith("/v5/public/linear")
            await ws.send_str('{"req_id":"a1","op":"subscribe","args":["orderbook.50.BTCUSDT"]}')
            ack = json.loads(await recv(ws))
            assert ack == {
                "success": True,
                "ret_msg": "",
                "conn_id": ack["conn_id"],
                "req_id": "a1",
                "op": "subscribe",
            }
            frames = [json.loads(f) for f in await take(ws, 8)]
            assert [json.dumps(f, separators=(",", ":")) for f in frames[:2]] == [
                json.dumps(json.loads(f), separators=(",", ":")) for f in BYBIT_BOOK
            ]
            us = [f["data"]["u"] for f in frames]
            types = [f["type"] for f in frames]
            # One snapshot per subscription, then the delta repeats with the u chain unbroken.
            assert types == ["snapshot"] + ["delta"] * 7
            assert all(us[i + 1] == us[i] + 1 for i in range(7))
            await ws.send_str('{"req_id":"p","op":"ping"}')
            pong = json.loads(await recv_until(ws, lambda t: '"op":"ping"' in t))
            assert pong["ret_msg"] == "pong" and pong["req_id"] == "p"
            await ws.send_str('{"op":"subscribe","args":["publicTrade.NOTASYMBOL"]}')
            error = json.loads(await recv_until(ws, lambda t: '"success":false' in t))
            assert error["ret_msg"] == "error:handler not found,topic:publicTrade.NOTASYMBOL"
        async with client(sim.ws_url_for("/v5/public/spot")) as ws:
            await ws.send_str('{"op":"subscribe","args":["publicTrade.BTCUSDT"]}')
            ack = json.loads(await recv(ws))
            assert ack["success"] is True and ack["ret_msg"] == "subscribe"
            trade = json.loads(await recv(ws))
            assert trade["topic"] == "publicTrade.BTCUSDT"
            await ws.send_str('{"op":"ping"}')
            pong = json.loads(await recv_until(ws, lambda t: '"op":"ping"' in t))
            assert "req_id" not in pong
        with pytest.raises(FaultError):
            sim.inject(Fault("bad_checksum"))


# --------------------------------------------------------------------------------- Coinbase

COINBASE_BOOK = group("coinbase", "coinbase-exchange-level2-NU-GBP")


async def test_coinbase_subscriptions_level2_matches_heartbeat() -> None:
    async with venue("coinbase", time_scale=0.05) as sim, client(sim.ws_url) as ws:
        await ws.send_str(
            json.dumps(
                {
                    "type": "subscribe",
                    "product_ids": ["NU-GBP"],
                    "channels": ["level2", "heartbeat"],
                }
            )
        )
        ack = json.loads(await recv(ws))
        assert ack == {
            "type": "subscriptions",
            "channels": [
                {"name": "level2", "product_ids": ["NU-GBP"]},
                {"name": "heartbeat", "product_ids": ["NU-GBP"]},
            ],
        }
        book = await take(ws, 20, lambda t: '"heartbeat"' not in t)
        assert book == COINBASE_BOOK[:20]
        heartbeat = json.loads(await recv_until(ws, lambda t: '"type":"heartbeat"' in t))
        assert heartbeat["product_id"] == "NU-GBP"
        await ws.send_str(
            json.dumps({"type": "subscribe", "product_ids": ["SKL-GBP"], "channels": ["matches"]})
        )
        ack = json.loads(await recv_until(ws, lambda t: '"subscriptions"' in t))
        assert [c["name"] for c in ack["channels"]] == ["level2", "heartbeat", "matches"]
        match = json.loads(await recv_until(ws, lambda t: '"SKL-GBP"' in t))
        assert match["type"] == "last_match"
        await ws.send_str(
            json.dumps({"type": "subscribe", "product_ids": ["FOO-BAR"], "channels": ["ticker"]})
        )
        error = json.loads(await recv_until(ws, lambda t: '"error"' in t))
        assert error["message"] == "Failed to subscribe"


async def test_coinbase_closes_without_subscribe_within_5s() -> None:
    async with venue("coinbase", time_scale=0.02) as sim, client(sim.ws_url) as ws:
        msg = await ws.receive(timeout=RECV_TIMEOUT)
        assert msg.type is aiohttp.WSMsgType.CLOSE


# ----------------------------------------------------------------------------------- BitMEX

BITMEX_BOOK = group("bitmex", "bitmex-orderBookL2-TRXUSDT")


async def test_bitmex_welcome_acks_partial_then_deltas_and_ping() -> None:
    async with venue("bitmex") as sim, client(sim.ws_url) as ws:
        welcome = json.loads(await recv(ws))
        assert welcome["info"] == "Welcome to the BitMEX Realtime API."
        request = {"op": "subscribe", "args": ["orderBookL2:TRXUSDT"]}
        await ws.send_str(json.dumps(request))
        ack = json.loads(await recv(ws))
        assert ack == {"success": True, "subscribe": "orderBookL2:TRXUSDT", "request": request}
        frames = await take(ws, len(BITMEX_BOOK) + 1)
        assert frames == [*BITMEX_BOOK, BITMEX_BOOK[0]]  # loops with a fresh partial
        await ws.send_str("ping")
        assert await recv_until(ws, lambda t: t == "pong") == "pong"
        await ws.send_str('{"op":"subscribe","args":["tradeBin5dm"]}')
        error = json.loads(await recv_until(ws, lambda t: '"status":400' in t))
        assert error["error"] == "Unknown table: tradeBin5dm"


# ---------------------------------------------------------------------------------- Deribit

DERIBIT_BOOK = group("deribit", "deribit-book-BTC-24SEP21-8000-P")


def rpc(method: str, params: dict[str, Any], req_id: int) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": req_id, "method": method, "params": params})


async def test_deribit_subscribe_chain_across_loops_and_gap() -> None:
    channel = "book.BTC-24SEP21-8000-P.100ms"
    async with venue("deribit") as sim, client(sim.ws_url) as ws:
        await ws.send_str(rpc("public/subscribe", {"channels": [channel, "book.NOPE.100ms"]}, 3))
        ack = json.loads(await recv(ws))
        assert ack["id"] == 3 and ack["result"] == [channel] and "usIn" in ack
        frames = [json.loads(f) for f in await take(ws, 3 * len(DERIBIT_BOOK))]
        assert all(f["params"]["channel"] == channel for f in frames)
        first = [f["params"]["data"] for f in frames[: len(DERIBIT_BOOK)]]
        assert first == [json.loads(r)["params"]["data"] for r in DERIBIT_BOOK]
        previous = None
        for frame in frames:
            data = frame["params"]["data"]
            if data["type"] == "snapshot":
                assert previous is None or data["change_id"] > previous
            else:
                assert data["prev_change_id"] == previous
            previous = data["change_id"]
        # A gap is one change_id missing from the looped sequence, wherever it lands.
        ids = [json.loads(r)["params"]["data"]["change_id"] for r in DERIBIT_BOOK]
        span = ids[-1] - ids[0] + 1

        def position(data: dict[str, Any]) -> int:
            loop, offset = divmod(data["change_id"] - ids[0], span)
            return loop * len(ids) + ids.index(ids[0] + offset)

        sim.inject(Fault("gap"))
        later = [json.loads(f)["params"]["data"] for f in await take(ws, 100)]
        positions = [position(d) for d in later]
        skipped = sum(b - a - 1 for a, b in itertools.pairwise(positions))
        assert skipped == 1


async def test_deribit_heartbeat_test_request() -> None:
    async with venue("deribit", time_scale=0.01) as sim, client(sim.ws_url) as ws:
        await ws.send_str(rpc("public/set_heartbeat", {"interval": 5}, 1))
        assert json.loads(await recv(ws))["error"]["code"] == -32602  # interval >= 10
        await ws.send_str(rpc("public/set_heartbeat", {"interval": 10}, 2))
        assert json.loads(await recv(ws))["result"] == "ok"
        for n in range(2):  # answered test_requests keep the connection open
            request = json.loads(await recv(ws))
            assert request == {
                "jsonrpc": "2.0",
                "method": "heartbeat",
                "params": {"type": "test_request"},
            }
            await ws.send_str(rpc("public/test", {}, 10 + n))
            assert "version" in json.loads(await recv(ws))["result"]
        await recv(ws)  # a test_request left unanswered: the server closes
        msg = await ws.receive(timeout=RECV_TIMEOUT)
        assert msg.type is aiohttp.WSMsgType.CLOSE


# ------------------------------------------------------------------------ Binance USD-M


async def test_binance_usdm_rest_snapshot_and_pu_chain_across_loops() -> None:
    diffs = group("binance_usdm", "binance-usdm-depth-SUSHIUSDT")
    n_diffs = sum(1 for d in diffs if "depthUpdate" in d)
    async with venue("binance_futures", rate=2000) as sim, client(sim.ws_url) as ws:
        await ws.send_str('{"method":"SUBSCRIBE","params":["sushiusdt@depth@100ms"],"id":1}')
        assert json.loads(await recv(ws)) == {"result": None, "id": 1}
        async with aiohttp.ClientSession() as http:
            url = f"{sim.rest_url}/fapi/v1/depth?symbol=SUSHIUSDT&limit=1000"
            async with http.get(url) as response:
                snapshot = await response.json()
        last = snapshot["lastUpdateId"]
        bids = {p: q for p, q in snapshot["bids"]}
        asks = {p: q for p, q in snapshot["asks"]}
        synced, prev_u, applied = False, None, 0
        while applied < 2 * n_diffs:  # through at least one loop boundary
            frame = json.loads(await recv(ws))
            assert frame["stream"] == "sushiusdt@depth@100ms"
            event = frame["data"]
            if prev_u is not None:
                assert event["pu"] == prev_u, "broken pu chain"
            prev_u = event["u"]
            if event["u"] < last:
                continue
            if not synced:
                assert event["U"] <= last <= event["u"]
                synced = True
            for side, levels in ((bids, event["b"]), (asks, event["a"])):
                for price, qty in levels:
                    if float(qty) == 0:
                        side.pop(price, None)
                    else:
                        side[price] = qty
            applied += 1
        assert max(map(float, bids)) < min(map(float, asks)), "crossed book"
        sim.inject(Fault("duplicate"))  # diffs already queued go out first
        frames = [json.loads(await recv(ws))["data"] for _ in range(400)]
        twins = [i for i in range(len(frames) - 2) if frames[i] == frames[i + 1]]
        assert len(twins) == 1
        assert frames[twins[0] + 2]["pu"] == frames[twins[0]]["u"]
