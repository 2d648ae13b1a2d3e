"""One host stream's pending lines, bounded.

The cache offers lines without ever waiting for a stream; the stream's writer takes them all at once.
A consumer that falls more than `limit` bytes behind (lines offered and not yet taken) is cut off: its
lines are dropped and its stream ends. Its agent still holds the last revision it applied, so it
reconnects and resumes from there with one diff, which is never larger than its view.
"""

from __future__ import annotations

import asyncio


class Subscription:
    def __init__(self, host: str, limit: int):
        self.host = host
        self.limit = limit
        self.cut = False
        self._lines: list[bytes] = []
        self._size = 0
        self._waiter: asyncio.Future[None] | None = None

    @property
    def pending(self) -> int:
        return self._size

    def offer(self, data: bytes) -> bool:
        """Queue `data`; False when this cuts the subscription off (one line always fits an empty queue)."""
        if self.cut:
            return True
        if self._lines and self._size + len(data) > self.limit:
            self.cut_off()
            return False
        self._lines.append(data)
        self._size += len(data)
        self._wake()
        return True

    def cut_off(self) -> None:
        """End the stream now; what was pending is dropped (the agent resumes from its revision)."""
        self.cut = True
        self._lines.clear()
        self._size = 0
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None:
            _settle(self._waiter)

    async def next(self, idle: float) -> bytes | None:
        """Every pending line, joined; b"" when none came for `idle` seconds; None once cut off."""
        if not self._lines and not self.cut:
            loop = asyncio.get_running_loop()
            self._waiter = waiter = loop.create_future()
            timer = loop.call_later(idle, _settle, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        if self.cut:
            return None
        data = b"".join(self._lines)
        self._lines.clear()
        self._size = 0
        return data


def _settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
