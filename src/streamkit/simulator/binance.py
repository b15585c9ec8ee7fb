"""Binance spot's WebSocket market-stream protocol, as far as the simulator speaks it.

Pure functions and constants, no I/O: stream names, the live control messages
(``SUBSCRIBE`` / ``UNSUBSCRIBE`` / ``LIST_SUBSCRIPTIONS`` / ``SET_PROPERTY`` / ``GET_PROPERTY``),
their replies and errors, and the REST error bodies.

Wire formats (sources: Binance spot ``web-socket-streams.md``, the documented error table
copied into ``data/binance_spot.jsonl``, and replies recorded from the live venue):

* success: ``{"result":null,"id":1}`` (``result`` is the list for ``LIST_SUBSCRIPTIONS`` and
  the value for ``GET_PROPERTY``);
* failure: the documented error object wrapped with the request id, exactly as the live
  server sends it: ``{"error":{"code":2,"msg":"Invalid request: ..."},"id":1}``; ``id`` is
  ``null`` when the request had no usable id (e.g. invalid JSON).
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

import msgspec

#: Binance spot limits (web-socket-streams.md, "WebSocket Limits").
MAX_STREAMS_PER_CONNECTION: Final = 1024
MAX_INCOMING_MESSAGES_PER_SECOND: Final = 5
DEFAULT_PING_INTERVAL: Final = 20.0
DEFAULT_PONG_TIMEOUT: Final = 60.0
DEFAULT_MAX_LIFETIME: Final = 24 * 3600.0

#: Close codes. The pong one was recorded from the live venue (1008 "Pong timeout"); Binance
#: also answers a flood of control messages with 1008. The lifetime and shutdown codes are
#: not documented, so the simulator uses the generic "going away".
CLOSE_POLICY_VIOLATION: Final = 1008
CLOSE_GOING_AWAY: Final = 1001
PONG_TIMEOUT_REASON: Final = "Pong timeout"
RATE_LIMIT_REASON: Final = "Too many requests"
LIFETIME_REASON: Final = "Connection lifetime expired"

#: The REST depth endpoint's limits (``GET /api/v3/depth``).
REST_DEPTH_DEFAULT_LIMIT: Final = 100
REST_DEPTH_MAX_LIMIT: Final = 5000

RequestId: TypeAlias = int | str | None
"""A control message id: a signed 64-bit integer, an alphanumeric string (UUIDs allowed) of at
most 36 characters, or null."""


class Channel(enum.StrEnum):
    """A kind of market stream; the value is the suffix after ``<symbol>@``."""

    DEPTH = "depth"
    BOOK_TICKER = "bookTicker"
    AGG_TRADE = "aggTrade"
    TRADE = "trade"
    KLINE_1M = "kline_1m"


#: Stream-name suffix -> channel. ``@depth`` and ``@depth@100ms`` are the same diff stream in the
#: simulator (Binance pushes them every 1000 ms and 100 ms; here both follow ``rate``).
STREAM_SUFFIXES: Final[dict[str, Channel]] = {
    "depth": Channel.DEPTH,
    "depth@100ms": Channel.DEPTH,
    "bookTicker": Channel.BOOK_TICKER,
    "aggTrade": Channel.AGG_TRADE,
    "trade": Channel.TRADE,
    "kline_1m": Channel.KLINE_1M,
}

SERVER_SHUTDOWN_STREAM: Final = "!serverShutdown"

# Binance acknowledges any syntactically plausible name, including unknown symbols, uppercase
# names and unknown channels (they simply stay silent); only names with other characters,
# e.g. a space, are refused with "invalid stream".
_STREAM_NAME = re.compile(r"[A-Za-z0-9@_!.\-]{1,200}")
_STRING_ID = re.compile(r"[A-Za-z0-9\-]{1,36}")
_INT64 = range(-(2**63), 2**63)

Method: TypeAlias = Literal[
    "SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY"
]
_METHODS: Final[tuple[Method, ...]] = (
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "LIST_SUBSCRIPTIONS",
    "SET_PROPERTY",
    "GET_PROPERTY",
)


def stream_names(symbol: str, channel: Channel) -> tuple[str, ...]:
    """Every stream name under which ``symbol``'s ``channel`` events are published."""
    base = symbol.lower()
    return tuple(f"{base}@{suffix}" for suffix, ch in STREAM_SUFFIXES.items() if ch is channel)


def parse_stream_name(name: str) -> tuple[str, Channel] | None:
    """``"nknusdt@depth@100ms"`` -> ``("NKNUSDT", Channel.DEPTH)``; None for a name that no
    simulated stream publishes under (uppercase, unknown channel, ...)."""
    symbol, sep, suffix = name.partition("@")
    if not sep or not symbol or symbol != symbol.lower():
        return None
    channel = STREAM_SUFFIXES.get(suffix)
    return None if channel is None else (symbol.upper(), channel)


def is_valid_stream_name(name: object) -> bool:
    """Whether Binance would acknowledge ``name`` (see ``_STREAM_NAME``)."""
    return isinstance(name, str) and _STREAM_NAME.fullmatch(name) is not None


@dataclass(frozen=True, slots=True)
class ControlRequest:
    """A well-formed control message. ``params`` is validated per method (see
    :func:`parse_control`): stream names for (UN)SUBSCRIBE, ``[]`` for LIST_SUBSCRIPTIONS,
    ``["combined", bool]`` / ``["combined"]`` for SET_PROPERTY / GET_PROPERTY."""

    method: Method
    params: tuple[object, ...]
    id: RequestId


@dataclass(frozen=True, slots=True)
class ControlError:
    """A control message Binance refuses; ``encode()`` is the frame sent back."""

    code: int
    msg: str
    id: RequestId = None

    def encode(self) -> bytes:
        return msgspec.json.encode({"error": {"code": self.code, "msg": self.msg}, "id": self.id})


def encode_result(result: object, request_id: RequestId) -> bytes:
    """A success reply: ``{"result":<result>,"id":<id>}`` (compact, key order as Binance)."""
    return msgspec.json.encode({"result": result, "id": request_id})


def too_many_subscriptions(request_id: RequestId) -> ControlError:
    """The reply to a SUBSCRIBE that would exceed :data:`MAX_STREAMS_PER_CONNECTION`
    (recorded from the live venue; not in the documented table)."""
    return ControlError(4, "Too many subscriptions", request_id)


def _end_position(text: str) -> str:
    """serde_json's "at line L column C" for the end of ``text`` (where it notices a missing
    field)."""
    lines = text.split("\n")
    return f"at line {len(lines)} column {len(lines[-1])}"


def _invalid(detail: str, request_id: RequestId = None) -> ControlError:
    return ControlError(2, f"Invalid request: {detail}", request_id)


def _parse_id(raw: object) -> tuple[bool, RequestId]:
    if raw is None:
        return True, None
    if isinstance(raw, bool):  # bool is an int subclass; Binance rejects it
        return False, None
    if isinstance(raw, int):
        return raw in _INT64, raw
    if isinstance(raw, str):
        return _STRING_ID.fullmatch(raw) is not None, raw
    return False, None


def parse_control(text: str) -> ControlRequest | ControlError:
    """Validate one incoming text frame as a control message, in Binance's order of checks.

    Returns the request, or the error to send back (the connection stays open either way).
    """
    try:
        message = json.loads(text)
    except json.JSONDecodeError as exc:
        return ControlError(
            3, f"Invalid JSON: expected value at line {exc.lineno} column {exc.colno}"
        )
    if not isinstance(message, dict):
        return _invalid("expected a JSON object")
    valid_id, request_id = _parse_id(message.get("id"))
    if not valid_id:
        return _invalid("request ID must be an unsigned integer")
    if "method" not in message:
        return _invalid(f"missing field `method` {_end_position(text)}", request_id)
    method = message["method"]
    if method not in _METHODS:
        expected = ", ".join(f"`{m}`" for m in _METHODS)
        return _invalid(f"unknown variant `{method}`, expected one of {expected}", request_id)
    params = message.get("params", [])
    if not isinstance(params, list):
        return _invalid("invalid type: expected a sequence", request_id)
    return _check_params(method, tuple(params), request_id)


def _check_params(
    method: Method, params: tuple[object, ...], request_id: RequestId
) -> ControlRequest | ControlError:
    if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
        if not all(is_valid_stream_name(p) for p in params):
            return _invalid("invalid stream", request_id)
    elif method == "LIST_SUBSCRIPTIONS":
        if params:
            return _invalid("too many parameters", request_id)
    else:
        allowed = 2 if method == "SET_PROPERTY" else 1
        if len(params) > allowed:
            return _invalid("too many parameters", request_id)
        if not params or not isinstance(params[0], str):
            return _invalid("property name must be a string", request_id)
        if params[0] != "combined":
            return ControlError(0, "Unknown property", request_id)
        if method == "SET_PROPERTY" and (len(params) < 2 or not isinstance(params[1], bool)):
            return ControlError(1, "Invalid value type: expected Boolean", request_id)
    return ControlRequest(method, params, request_id)


def server_shutdown_payload(event_time_ms: int) -> str:
    """The raw ``serverShutdown`` event (documented layout)."""
    return f'{{"e":"serverShutdown","E":{event_time_ms}}}'


def wrap_combined(stream: str, payload: bytes) -> bytes:
    """Combined-stream envelope ``{"stream":<name>,"data":<payload>}``, byte-compatible with
    the captured frames (no spaces)."""
    return b'{"stream":"' + stream.encode() + b'","data":' + payload + b"}"


def rest_error(code: int, msg: str) -> bytes:
    """A REST error body, e.g. ``{"code":-1121,"msg":"Invalid symbol."}``."""
    return msgspec.json.encode({"code": code, "msg": msg})


def parse_depth_limit(raw: str | None) -> int | None:
    """``limit`` query parameter of ``/api/v3/depth``: default 100, larger than 5000 is
    truncated to 5000 (as documented); None when it is not a positive integer."""
    if raw is None:
        return REST_DEPTH_DEFAULT_LIMIT
    if not raw.isdigit() or int(raw) == 0:
        return None
    return min(int(raw), REST_DEPTH_MAX_LIMIT)


def split_streams(raw: str) -> Sequence[str]:
    """``"a/b/c"`` (URL form) -> ``["a", "b", "c"]``; empty segments are ignored."""
    return [s for s in raw.split("/") if s]
