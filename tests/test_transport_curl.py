"""What only CurlTransport (``kind: curl_cffi``, curl_cffi 0.16's ``AsyncWebSocket``) does,
against a real aiohttp WebSocket server on 127.0.0.1 (tests/transport_peer.py).

The Transport contract it shares with LibcurlTransport is tested, for both, in
tests/test_transport_curl_contract.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from transport_peer import WsServer, opts, running

from streamkit.transport.curl import CurlTransport, parse_retry_after
from streamkit.transport.options import RetryOptions


@pytest.fixture
async def server() -> AsyncIterator[WsServer]:
    async with running(WsServer()) as srv:
        yield srv


async def test_options_reach_the_curl_websocket(server: WsServer) -> None:
    t = CurlTransport(
        server.url("/echo"),
        opts(
            recv_queue_size=7,
            send_queue_size=9,
            max_send_batch_size=3,
            coalesce_frames=True,
            recv_time_slice=0.02,
            send_time_slice=0.03,
            max_message_size=2048,
            drain_on_error=True,
            block_on_full_recv_queue=False,
            retry=RetryOptions(enabled=True, delay=0.5, count=4),
        ),
    )
    await t.connect()
    try:
        ws = t._ws
        assert ws is not None
        assert ws._receive_queue.maxsize == 7
        assert ws._send_queue.maxsize == 9
        assert ws._max_send_batch_size == 3
        assert ws._coalesce_frames is True
        assert ws._recv_time_slice == 0.02
        assert ws._send_time_slice == 0.03
        assert ws._max_message_size == 2048
        assert ws.drain_on_error is True
        assert ws._block_on_recv_queue_full is False
        assert (ws.ws_retry.retry, ws.ws_retry.delay, ws.ws_retry.count) == (True, 0.5, 4)
    finally:
        await t.close()


# --- helpers ------------------------------------------------------------------------------------


def test_parse_retry_after() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    for bad in (None, "", "soon", "nan", "inf"):
        assert parse_retry_after(bad) is None
