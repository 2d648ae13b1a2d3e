"""Waiting on the coordinator's API in tests and benchmarks: poll until a view says what is expected, or
expect a refusal with its status and code."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from coordinator.client import ApiClientError

T = TypeVar("T")


async def until(fetch: Callable[[], Awaitable[T]], check: Callable[[T], object], timeout: float = 120,
                interval: float = 0.2) -> T:
    """`fetch()` again every `interval` until `check` holds for what it answers; that answer (AssertionError
    showing the last one after `timeout`)."""
    end = time.monotonic() + timeout
    while not check(value := await fetch()):
        assert time.monotonic() < end, f"never as expected: {value}"
        await asyncio.sleep(interval)
    return value


async def refused(call: Awaitable[Any], status: int, code: str) -> ApiClientError:
    """The error `call` must fail with (its status and code); AssertionError when it does not."""
    try:
        await call
    except ApiClientError as e:
        assert (e.status, e.code) == (status, code), e.message
        return e
    raise AssertionError(f"not refused: expected {status} {code}")
