"""Build the transport a feed's ``transport.kind`` asks for.

``make_transport`` has the ``(url, options) -> Transport`` shape the actor calls once per
connection attempt. ``kind: memory`` connects to a :class:`~streamkit.transport.memory.
MemoryExchange` that test or replay code registered for exactly that URL beforehand::

    exchange = MemoryExchange()
    register_memory_exchange("wss://stream.example/ws", exchange)
    try:
        ...  # run an app whose feed uses that url with transport.kind: memory
    finally:
        unregister_memory_exchange("wss://stream.example/ws")

Tests that construct actors directly can skip the registry and pass
``exchange.transport_factory`` as the actor's transport factory.
"""

from __future__ import annotations

from streamkit.errors import ConfigError
from streamkit.transport.base import Transport
from streamkit.transport.curl import CurlTransport
from streamkit.transport.libcurl import LibcurlTransport
from streamkit.transport.memory import MemoryExchange
from streamkit.transport.options import TransportOptions

__all__ = ["make_transport", "register_memory_exchange", "unregister_memory_exchange"]

_memory_exchanges: dict[str, MemoryExchange] = {}


def register_memory_exchange(url: str, exchange: MemoryExchange) -> None:
    """Route ``kind: memory`` transports for ``url`` (compared exactly) to ``exchange``.
    Registering a URL again replaces the previous exchange."""
    _memory_exchanges[url] = exchange


def unregister_memory_exchange(url: str) -> None:
    """Forget the exchange registered for ``url`` (no error if there is none)."""
    _memory_exchanges.pop(url, None)


def make_transport(url: str, options: TransportOptions) -> Transport:
    """A new, unconnected transport to ``url`` of kind ``options.kind``.

    Raises:
        ConfigError: ``kind`` is ``memory`` and no exchange is registered for ``url``
            (reconnecting cannot fix that, so it is not a ``TransportError``).
    """
    if options.kind == "curl":
        return LibcurlTransport(url, options)
    if options.kind == "curl_cffi":
        return CurlTransport(url, options)
    if options.kind == "memory":
        exchange = _memory_exchanges.get(url)
        if exchange is None:
            raise ConfigError(
                [
                    (
                        "transport.kind",
                        f"'memory' transport for {url!r} but no MemoryExchange is registered "
                        "for that URL (streamkit.transport.factory.register_memory_exchange); "
                        "the memory transport exists for tests and replay only",
                    )
                ]
            )
        return exchange.transport_factory(url, options)
    raise ConfigError([("transport.kind", f"unknown transport kind {options.kind!r}")])
