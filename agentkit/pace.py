"""The pace a download must keep: a socket's read timeout sees a byte now and then as alive, so a source that
trickles (one byte just under every timeout) would hold its download or import slot for ever."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def slowed(position: Callable[[], int], window: float, least: int) -> None:
    """Return once less than `least` bytes came in a `window` of seconds; `position` counts the bytes so far."""
    while True:
        before = position()
        await asyncio.sleep(window)
        if position() - before < least:
            return
