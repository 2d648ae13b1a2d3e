"""A host's view of the desired state, as the stream hands it to its agent.

The view is the union of `/hs/d/all/` and `/hs/d/host/<host>/`, keyed by stream key. It is handed out
as a `snapshot` (every item at one revision), then as `changes`, one per etcd revision that touched
the view (`puts` and `deletes` together, so agents apply whole transactions). A compacted revision
yields a fresh snapshot.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from coordinator.etcd import keys
from coordinator.etcd.store import Change, Compacted, Store

Doc = dict[str, Any]


async def snapshot(store: Store, host: str) -> Doc:
    prefixes = [keys.DESIRED_ALL, keys.desired_host(host)]
    snap, rev = await store.snapshot(prefixes)
    items = {keys.stream_key_of(host, e.key): e.value for p in prefixes for e in snap[p]}
    return {"type": "snapshot", "rev": rev, "items": items}


def changes(host: str, batch: list[Change]) -> Doc | None:
    """The `changes` document of one revision's events, None when none of them is in the host's view."""
    puts: dict[str, object] = {}
    deletes: list[str] = []
    for ch in batch:
        sk = keys.stream_key_of(host, ch.key)
        if sk is None:
            continue
        if ch.value is None:
            puts.pop(sk, None)
            deletes.append(sk)
        else:
            puts[sk] = ch.value
    if not puts and not deletes:
        return None
    return {"type": "changes", "rev": batch[0].revision, "puts": puts, "deletes": deletes}


async def follow(store: Store, host: str, since: int) -> AsyncIterator[tuple[int, Doc | None]]:
    """(revision, document) for ever: a snapshot unless `since` (> 0) can be resumed, then the changes;
    the document is None for a revision that did not touch the view (the agent is still told it)."""
    resume = since > 0
    while True:
        if not resume:
            doc = await snapshot(store, host)
            since = doc["rev"]
            yield since, doc
        resume = False
        try:
            async for batch in store.watch(keys.DESIRED, since + 1):
                since = batch[0].revision
                yield since, changes(host, batch)
        except Compacted:
            continue
