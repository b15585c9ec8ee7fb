"""REST requests (order-book snapshots) over libcurl, like the WebSocket connections."""

from __future__ import annotations

from curl_cffi.requests import AsyncSession

from streamkit.transport.options import TransportOptions


class HttpClient:
    """A shared libcurl session for the REST calls feeds ask for. ``fetch`` never raises:
    a failed request is ``(0, b"<reason>")`` so the feed protocol decides what to do."""

    def __init__(self, timeout: float = 10.0, options: TransportOptions | None = None) -> None:
        opts = options or TransportOptions()
        verify: bool | str = opts.ca_file if (opts.verify and opts.ca_file) else opts.verify
        self._session: AsyncSession = AsyncSession(  # type: ignore[type-arg]
            timeout=timeout,
            verify=verify,  # type: ignore[arg-type]  # curl_cffi also takes a CA bundle path
            proxy=opts.proxy,
            impersonate=opts.impersonate,
        )

    async def fetch(self, url: str) -> tuple[int, bytes]:
        try:
            response = await self._session.get(url)
        except Exception as exc:
            return 0, f"{type(exc).__name__}: {exc}".encode()
        return int(response.status_code), bytes(response.content)

    async def close(self) -> None:
        await self._session.close()
