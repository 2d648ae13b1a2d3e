"""The loop that keeps a replica's cache of an etcd prefix (client-go's reflector): list, then watch.

After a compacted start or a store failure it lists again before it watches: etcd may have come back
restored from a backup, and a watch resumed from the cache's revision would wait for revisions the cache
has seen and miss what the restored data holds. While etcd is away it retries with a capped backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from coordinator.etcd.store import Change, Compacted, Store, StoreUnavailable

log = logging.getLogger(__name__)
RETRY, MAX_RETRY = 0.2, 5.0  # seconds: the first pause after a store failure, and the longest


async def list_and_watch(store: Store, prefix: str, what: str, relist: Callable[[], Awaitable[None]],
                         position: Callable[[], tuple[int, str]], apply: Callable[[list[Change]], None]) -> None:
    """For ever: `relist()` the cache, then `apply` each batch the watch of `prefix` hands out after the
    cache's `position()` (its revision, on its timeline: the watch ends on data restored to another);
    `what` names the cache in the log."""
    delay, listed = RETRY, False
    while True:
        try:
            if not listed:
                await relist()
                listed = True
            revision, timeline = position()
            async for batch in store.watch(prefix, revision + 1, timeline):
                delay = RETRY
                apply(batch)
        except Compacted as e:
            log.info("%s watch restarts from a listing: %s", what, e)
            listed = False
        except StoreUnavailable as e:
            log.warning("%s watch interrupted at revision %d; listing again: %s", what, position()[0], e)
            listed = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY)
