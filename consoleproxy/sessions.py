"""The console connections a proxy has open: counted for /health, closed (1001) when the proxy stops."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from aiohttp import WSCloseCode, web


class Sessions:
    def __init__(self) -> None:
        self._open: set[web.WebSocketResponse] = set()
        self.total = 0

    @contextlib.contextmanager
    def track(self, ws: web.WebSocketResponse) -> Iterator[None]:
        """Count `ws` as an open console while the block runs."""
        self._open.add(ws)
        self.total += 1
        try:
            yield
        finally:
            self._open.discard(ws)

    @property
    def open(self) -> int:
        return len(self._open)

    async def close_all(self) -> None:
        """Close every browser side (its relay then closes the tunnel) and wait until all are closed."""
        await asyncio.gather(*(ws.close(code=WSCloseCode.GOING_AWAY, message=b"console proxy stopping")
                               for ws in list(self._open)))
