"""How records travel through brokers (NATS, Redis): encodings, headers, subject/key templates.

A record on a broker is its msgspec encoding (msgpack by default, or the DESIGN.md JSON
object) plus three pieces of metadata, sent as NATS headers or Redis stream fields:

- ``Streamkit-Type``: the record's type tag (``trade``), so a consumer decodes straight into
  the right Struct without trying the whole union;
- ``Streamkit-Schema``: :data:`~streamkit.model.SCHEMA_VERSION` of the producer;
- ``Streamkit-Encoding``: ``msgpack`` or ``json``.

Both encodings carry the ``type`` tag inside the payload too, so a payload alone is
self-describing. Prices stay exact: Decimals are encoded as strings in both.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Final, Literal, TypeAlias

import msgspec

from streamkit.config import RetryOptions
from streamkit.model import RECORD_TYPES, SCHEMA_VERSION, AnyRecord, Record, type_name

Encoding: TypeAlias = Literal["msgpack", "json"]

HEADER_TYPE: Final = "Streamkit-Type"
HEADER_SCHEMA: Final = "Streamkit-Schema"
HEADER_ENCODING: Final = "Streamkit-Encoding"
SCHEMA: Final = str(SCHEMA_VERSION)

NULL_TOKEN: Final = "_"
"""What a null symbol (connection-wide status records) becomes in a subject or key."""

_SUBJECT_UNSAFE = str.maketrans({".": "_", "*": "_", ">": "_", " ": "_", "\t": "_"})

_json_encoder = msgspec.json.Encoder(decimal_format="string")
_msgpack_encoder = msgspec.msgpack.Encoder(decimal_format="string")

_json_decoders: dict[str, msgspec.json.Decoder[AnyRecord]] = {
    tag: msgspec.json.Decoder(cls) for tag, cls in RECORD_TYPES.items()
}
_msgpack_decoders: dict[str, msgspec.msgpack.Decoder[AnyRecord]] = {
    tag: msgspec.msgpack.Decoder(cls) for tag, cls in RECORD_TYPES.items()
}
_json_any: msgspec.json.Decoder[AnyRecord] = msgspec.json.Decoder(AnyRecord)
_msgpack_any: msgspec.msgpack.Decoder[AnyRecord] = msgspec.msgpack.Decoder(AnyRecord)


def encoder(encoding: Encoding) -> Callable[[Record], bytes]:
    """The function that serializes a record in ``encoding``."""
    return _msgpack_encoder.encode if encoding == "msgpack" else _json_encoder.encode


def decode(data: bytes, type_tag: str | None, encoding: str | None) -> AnyRecord:
    """Parse a payload back into its Struct. ``type_tag`` (from the header) selects the
    decoder directly; None (or an unknown tag) falls back to the tagged union. ``encoding``
    None means msgpack. Raises ``msgspec.DecodeError``/``ValidationError`` on bad data."""
    if encoding == "json":
        json_dec = _json_decoders.get(type_tag or "", _json_any)
        return json_dec.decode(data)
    msgpack_dec = _msgpack_decoders.get(type_tag or "", _msgpack_any)
    return msgpack_dec.decode(data)


class KeyTemplate:
    """Renders ``md.{type}.{exchange}.{symbol}``-style templates for records, cached per
    (type, exchange, symbol) so the hot path is one dict lookup.

    ``subject_safe`` replaces the characters NATS gives meaning to (``.``, ``*``, ``>``,
    whitespace) inside values by ``_``, so a value can never add a subject token or a
    wildcard. A null symbol renders as ``_``.
    """

    def __init__(self, template: str, *, subject_safe: bool) -> None:
        self.template = template
        self.subject_safe = subject_safe
        self._cache: dict[tuple[type[Record], str, str | None], str] = {}
        self.render_values("trade", "x", "y")  # fail now on an unknown placeholder

    def render_values(self, type_tag: str, exchange: str, symbol: str | None) -> str:
        values = {"type": type_tag, "exchange": exchange, "symbol": symbol or NULL_TOKEN}
        if self.subject_safe:
            values = {k: v.translate(_SUBJECT_UNSAFE) for k, v in values.items()}
        try:
            return self.template.format_map(values)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"bad template {self.template!r}: use only {{type}}, {{exchange}}, {{symbol}}"
            ) from exc

    def render(self, record: Record) -> str:
        key = (type(record), record.exchange, record.symbol)
        rendered = self._cache.get(key)
        if rendered is None:
            if len(self._cache) > 65_536:  # bounded: only a feed inventing symbols gets here
                self._cache.clear()
            rendered = self.render_values(type_name(type(record)), record.exchange, record.symbol)
            self._cache[key] = rendered
        return rendered


_rng = random.Random()


def retry_delay(options: RetryOptions, attempt: int) -> float:
    """Delay before retry number ``attempt`` (0-based): the capped exponential ceiling with
    "equal jitter" (half fixed, half random), so retries never hammer a recovering broker
    and never wait longer than ``options.max``."""
    ceiling = min(options.max, options.initial * options.multiplier**attempt)
    return float(ceiling / 2 + _rng.uniform(0.0, ceiling / 2))
