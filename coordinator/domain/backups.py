"""The record of the newest etcd backup: written by `hs-ctl backup`, read by `/metrics` (backup age).

It lives in etcd so that every replica can tell how old the newest backup is, wherever it was taken.
A restore brings back the record of its own time, which is as old as the data it restored.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, NamedTuple

from coordinator.etcd import keys

if TYPE_CHECKING:  # hs-ctl backup writes the record with etcdctl, without importing the store's gRPC
    from coordinator.etcd.store import Store


class BackupRecord(NamedTuple):
    """A NamedTuple, not a pydantic model or a dataclass: `hs-ctl backup` writes it and starts without
    importing either."""

    at: float  # unix time the snapshot was complete
    file: str
    sha256: str
    bytes: int
    node: str  # the machine that holds the file


def encoded(backup: BackupRecord) -> str:
    """The record as etcd holds it under `keys.BACKUP`: JSON, as the store writes every value."""
    return json.dumps(backup._asdict())


async def last(store: Store) -> BackupRecord | None:
    """The newest record; None when there is none, or it is not one (written by something else)."""
    entry = await store.get(keys.BACKUP)
    if entry is None or not isinstance(entry.value, dict):
        return None
    try:
        found = BackupRecord(**entry.value)
    except TypeError:
        return None
    return found if isinstance(found.at, int | float) else None
