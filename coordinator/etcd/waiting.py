"""`?wait=SECONDS`: block until the observed state satisfies a condition, or answer what is pending."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from pydantic import BaseModel, Field

from coordinator.etcd.store import Store

MAX_WAIT = 600.0


class WaitQuery(BaseModel):
    wait: float = Field(0, ge=0, le=MAX_WAIT, description="seconds to wait for the observed result")


async def wait_observed(store: Store, key: str, done: Callable[[object | None], bool], timeout: float) -> bool:
    """True once the value at `key` satisfies `done` (checked first, then on every change)."""
    if timeout <= 0:
        return False
    entry = await store.get(key)
    if done(entry.value if entry else None):
        return True
    _, rev = await store.list(key)

    async def watch() -> None:
        async for batch in store.watch(key, rev + 1):
            for ch in batch:
                if ch.key == key and done(ch.value):
                    return

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(watch(), timeout)
        return True
    entry = await store.get(key)
    return done(entry.value if entry else None)


def pending(status_done: int, body: dict, done: bool, what: str) -> tuple[int, dict]:
    """200/201 with the result when done, else 202 naming what is still pending."""
    if done:
        return status_done, body
    return 202, {**body, "pending": what}
