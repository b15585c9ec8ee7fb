"""Type stub of the optional C accelerator (src/streamkit/transport/_speedups.c)."""

from typing import Any, Final

FRAME_STRUCT_SIZE: Final[int]
FLAGS_OFFSET: Final[int]
BYTESLEFT_OFFSET: Final[int]

class Reader:
    """``curl_ws_recv`` loop appending whole data messages as ``frame_type(data, binary)``.

    All pointers are integer addresses; the caller keeps the buffers and the handle alive
    while the reader is used."""

    def __init__(
        self,
        recv: int,
        handle: int,
        buffer: int,
        size: int,
        nread: int,
        meta: int,
        frame_type: type[tuple[Any, ...]],
        target: object,
        max_size: int,
    ) -> None: ...
    def drain(self, max_count: int, /) -> tuple[int, int]:
        """Returns ``(status, appended)``: status > 0 is curl_ws_recv's return code, 0 means
        a frame Python must handle waits in the buffer, -1 means ``max_count`` messages were
        appended."""
    def close(self) -> None:
        """Forget the handle: ``drain`` raises from now on."""
