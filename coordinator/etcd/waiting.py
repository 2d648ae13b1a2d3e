"""Block until the value at a key satisfies a condition (what `?wait=SECONDS` of the API waits on)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from coordinator.etcd.store import Compacted, Store


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

    with contextlib.suppress(TimeoutError, Compacted):  # compacted, or etcd restored: the last read answers
        await asyncio.wait_for(watch(), timeout)
        return True
    entry = await store.get(key)
    return done(entry.value if entry else None)
