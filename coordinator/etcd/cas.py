"""Compare-and-swap retries: the one policy every read-modify-write transaction of the coordinator uses.

An attempt reads what it needs, builds a transaction whose compares guard those reads, and commits. A
failed compare means another writer won: read again and retry, after a short jittered pause so that
contending replicas spread out. After `ATTEMPTS` the caller gets a `Contended` error (409, retryable).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from agentkit.errors import Conflict

T = TypeVar("T")
ATTEMPTS = 10
_PAUSE = 0.002  # first pause; doubled per failed attempt, capped at _MAX_PAUSE, jittered
_MAX_PAUSE = 0.1


class Contended(Conflict):
    msg_fmt = "{what} keeps changing concurrently, retry"


async def retry_cas(attempt: Callable[[int], Awaitable[T | None]], what: str, attempts: int = ATTEMPTS) -> T:
    """`attempt(n)` (n = 0, 1, ...) returns its result once its transaction committed, None when a
    compare failed. Domain errors it raises pass through unchanged."""
    for n in range(attempts):
        result = await attempt(n)
        if result is not None:
            return result
        if n + 1 < attempts:
            await asyncio.sleep(min(_PAUSE * 2**n, _MAX_PAUSE) * random.uniform(0.5, 1.0))
    raise Contended(what=what)
