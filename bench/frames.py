"""The benchmark's wire messages: Binance combined-stream frames built once, before timing.

Every data frame carries its sequence number and the server's write time, so every client can
check that each message arrived, in order, with the right value, and measure latency:

- trades are ``<sym>@aggTrade`` events: ``a`` (agg id) is the sequence number, price and size
  are a pure function of it (:func:`trade_price`, :func:`trade_qty`);
- depth updates are ``<sym>@depth@100ms`` events with 20 bid + 20 ask levels (about 1.4 KB):
  each covers two update ids, ``U = 2*seq + 1``, ``u = 2*seq + 2`` (a valid Binance chain
  on top of the server's empty snapshot with ``lastUpdateId`` 1: Binance wants a snapshot no
  older than the first buffered ``U``, then drops diffs with ``u`` <= it), the best bid a
  function of the sequence (:func:`depth_best_bid`);
- the write time is ``CLOCK_MONOTONIC`` in µs plus :data:`TS_BASE` (so it always has 13
  digits and can be patched in place), in ``T`` for trades and ``E`` for depth updates. The
  streamkit pipeline turns these into ``Trade.ts``/``Book.ts`` = field * 1e6 ns, so a
  consumer gets the write time back as ``ts // 1_000_000 - TS_BASE`` µs. (This is a bench
  convention: real exchange times are epoch milliseconds. :data:`TS_BASE` keeps the field
  the size of one, about 1.7e12, so that a client that converts it to epoch nanoseconds
  works with machine-sized integers as it would on a real feed: a 16-digit field made
  that product a big integer, a cost no real stream has.)
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

TS_BASE: Final = 1_700_000_000_000  # an epoch-ms magnitude (2023-11): see the docstring
TS_PLACEHOLDER: Final = str(TS_BASE).encode()  # 13 digits, patched at write time
TS_WIDTH: Final = len(TS_PLACEHOLDER)
DEPTH_LEVELS: Final = 20


def ws_header(n: int, opcode: int = 0x1) -> bytes:
    """Header of one unmasked, final server-to-client frame with an ``n``-byte payload."""
    first = 0x80 | opcode
    if n < 126:
        return bytes((first, n))
    if n < 65536:
        return bytes((first, 126)) + n.to_bytes(2, "big")
    return bytes((first, 127)) + n.to_bytes(8, "big")


def trade_price(seq: int) -> str:
    return f"{20000 + seq % 5000}.{seq % 100:02d}"


def trade_qty(seq: int) -> str:
    return f"0.{(seq * 7919) % 100000000:08d}"


def trade_payload(stream: str, symbol: str, seq: int) -> bytes:
    ts = TS_PLACEHOLDER.decode()
    return (
        f'{{"stream":"{stream}","data":{{"e":"aggTrade","E":{ts},"s":"{symbol}","a":{seq},'
        f'"p":"{trade_price(seq)}","q":"{trade_qty(seq)}","f":{seq},"l":{seq},"T":{ts},'
        f'"m":{"true" if seq % 2 else "false"},"M":true}}}}'
    ).encode()


def depth_seq(last_update_id: int) -> int:
    """The sequence number of the depth update whose ``u`` is ``last_update_id``."""
    return (last_update_id - 2) // 2


def depth_best_bid(seq: int) -> Decimal:
    return Decimal(f"{10000 + (seq % 50) * 0.01:.2f}")


def depth_payload(stream: str, symbol: str, seq: int) -> bytes:
    base_bid = 1_000_000 + seq % 50  # in cents: never crosses the asks below
    base_ask = 1_000_100 + seq % 50
    bids = ",".join(
        f'["{(base_bid - k) / 100:.8f}","{1 + (seq + k) % 97}.{(seq * 31 + k) % 10**8:08d}"]'
        for k in range(DEPTH_LEVELS)
    )
    asks = ",".join(
        f'["{(base_ask + k) / 100:.8f}","{1 + (seq + k) % 89}.{(seq * 17 + k) % 10**8:08d}"]'
        for k in range(DEPTH_LEVELS)
    )
    ts = TS_PLACEHOLDER.decode()
    return (
        f'{{"stream":"{stream}","data":{{"e":"depthUpdate","E":{ts},"s":"{symbol}",'
        f'"U":{2 * seq + 1},"u":{2 * seq + 2},"b":[{bids}],"a":[{asks}]}}}}'
    ).encode()


def build_frame(kind: str, stream: str, symbol: str, seq: int) -> tuple[bytes, int]:
    """One whole frame and the offset of its timestamp field to patch at write time."""
    payload = (trade_payload if kind == "trade" else depth_payload)(stream, symbol, seq)
    frame = ws_header(len(payload)) + payload
    field = b'"T":' if kind == "trade" else b'"E":'
    return frame, frame.rindex(field) + len(field)


def stream_for(kind: str, symbol_index: int) -> tuple[str, str, str]:
    """(normalized symbol, exchange symbol, stream name) of the ``symbol_index``-th symbol."""
    base = f"S{symbol_index}"
    exchange_symbol = f"{base}USDT"
    suffix = "@aggTrade" if kind == "trade" else "@depth@100ms"
    return f"{base}-USDT", exchange_symbol, exchange_symbol.lower() + suffix
