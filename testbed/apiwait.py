"""Waiting on the coordinator's API in tests and benchmarks: poll until a view says what is expected, or
expect a refusal with its status and code."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from coordinator.client import ApiClientError


async def until(fetch: Callable[[], Awaitable[Any]], check: Callable[[Any], object], timeout: float = 120) -> Any:
    """`fetch()` again every 0.2 s until `check` holds for what it answers; that answer."""
    end = time.monotonic() + timeout
    while True:
        value = await fetch()
        if check(value):
            return value
        assert time.monotonic() < end, f"never as expected: {value}"
        await asyncio.sleep(0.2)


async def refused(call: Awaitable[Any], status: int, code: str) -> ApiClientError:
    """The error `call` must fail with (its status and code); AssertionError when it does not."""
    try:
        await call
    except ApiClientError as e:
        assert (e.status, e.code) == (status, code), e.message
        return e
    raise AssertionError(f"not refused: expected {status} {code}")
