"""Waiting in tests for what the system reports: fetch until a check holds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def until(fetch: Callable[[], Awaitable[T]], check: Callable[[T], object], timeout: float = 60,
                interval: float = 0.3) -> T:
    """The first value `fetch` gives that passes `check`; AssertionError (showing the last) after `timeout`."""
    end = time.monotonic() + timeout
    while not check(value := await fetch()):
        assert time.monotonic() < end, f"never as expected: {value}"
        await asyncio.sleep(interval)
    return value
