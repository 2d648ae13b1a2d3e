"""The record of the newest etcd backup: written by `hs-ctl backup`, read by `/metrics` (backup age).

It lives in etcd so that every replica can tell how old the newest backup is, wherever it was taken.
A restore brings back the record of its own time, which is as old as the data it restored.
"""

from __future__ import annotations

from pydantic import BaseModel

from coordinator.etcd import keys
from coordinator.etcd.store import Store


class BackupRecord(BaseModel):
    at: float  # unix time the snapshot was complete
    file: str
    sha256: str
    bytes: int
    node: str  # the machine that holds the file


async def record(store: Store, backup: BackupRecord) -> None:
    await store.put(keys.BACKUP, backup.model_dump())


async def last(store: Store) -> BackupRecord | None:
    entry = await store.get(keys.BACKUP)
    if entry is None or not isinstance(entry.value, dict):
        return None
    return BackupRecord.model_validate(entry.value)
