"""LocalStorage and SharedMountPoint primary storage: add (attached to every KVM host, or to the hosts
named), show with what each host reports (usable or why not, capacity, the hosts sharing it) and what
is reserved, delete once no volume is left on it.
"""

from __future__ import annotations

import time
import uuid as uuidlib
from typing import Any

from pydantic import BaseModel, Field, field_validator

from agentkit.errors import InUse, Invalid
from agentkit.model import storage_path
from coordinator.domain import hosts
from coordinator.domain.errors import Exists
from coordinator.domain.fields import NAME
from coordinator.domain.filestorage import capacity
from coordinator.domain.filestorage.records import (
    FileStorageRecord,
    FileVolumeRecord,
    StorageType,
    load_storage,
    load_storages,
)
from coordinator.etcd import keys
from coordinator.etcd.cas import retry_cas
from coordinator.etcd.store import Store, Txn

# Hosts one storage names: its add's one transaction holds a stream item and a guard on the record of each, beside
# the storage's record and its two compares, within etcd's 128 operations (and as many compares).
MAX_HOSTS = 126


class FileStorageAdd(BaseModel):
    name: str = Field(pattern=NAME)
    type: StorageType
    url: str = Field(description="LocalStorage: the directory on every host; SharedMountPoint: the absolute "
                     "path where the shared filesystem is mounted on every host")
    zone: str = "default"
    host_uuids: list[str] = Field([], max_length=MAX_HOSTS, description="hosts (uuids or names) to attach it to; "
                                  "empty: every KVM host, present and future")

    @field_validator("url")
    @classmethod
    def _path(cls, url: str) -> str:
        return storage_path(url)  # the rule of the agents' PrimaryStorageSpec


class HostReport(BaseModel):
    state: str | None = None
    error: str | None = None
    capacity: dict[str, int] | None = None
    reserved: int = 0
    peers: list[str] = []


class FileStorageView(FileStorageRecord):
    reserved: int = Field(description="virtual bytes its volumes reserved (every host together)")
    hosts: dict[str, HostReport] = Field(description="by host uuid: what its agent reports of the storage")


async def _kvm_hosts(store: Store, refs: list[str]) -> list[str]:
    """The uuids of the KVM hosts `refs` (uuids or names) names, each once."""
    uuids = []
    for ref in refs:
        host = await hosts.find(store, ref)
        if host.kind != "kvm":
            raise Invalid(f"{host.title} is not a KVM host", field="host_uuids")
        uuids.append(host.uuid)
    return sorted(set(uuids))


async def add(store: Store, body: FileStorageAdd) -> FileStorageRecord:
    """Names are unique, and so is a SharedMountPoint's path: the storage is written only if no storage was added
    since they were read (on any replica), and only while the hosts it names are there (a host's delete takes
    the items of its stream: one deleted meanwhile would be left its storage item), else they are read again."""
    uuid, now = uuidlib.uuid4().hex, time.time()
    key = keys.file_storage(uuid)

    async def attempt(_: int) -> FileStorageRecord | None:
        rec = FileStorageRecord(uuid=uuid, name=body.name, type=body.type, url=body.url, zone=body.zone,
                                host_uuids=await _kvm_hosts(store, body.host_uuids), created_at=now)
        entries, read_at = await store.list(keys.FILE_STORAGES)
        for other in (FileStorageRecord.model_validate(e.value) for e in entries):
            if other.name == body.name:
                raise Exists(f"a primary storage named {body.name} exists", field="name")
            if other.url == body.url and (other.type == "SharedMountPoint" or body.type == "SharedMountPoint"):
                raise Exists(f"primary storage {other.name} already has path {body.url}", field="url")
        txn = Txn().absent(key).none_created_since(keys.FILE_STORAGES, read_at).put(key, rec.model_dump())
        for host in rec.host_uuids:
            txn.exists(keys.host(host))
        for stream_key in rec.stream_keys():
            txn.put(stream_key, rec.spec().model_dump(mode="json"))
        return rec if await store.commit(txn) is not None else None
    return await retry_cas(attempt, f"primary storage {body.name}")


async def view(store: Store, rec: FileStorageRecord) -> FileStorageView:
    reported = await capacity.reports(store, rec.uuid)
    entries, _ = await store.list(keys.reserved(rec.uuid, ""))
    reserved = {e.key.rsplit("/", 1)[1]: capacity.reserved_of(e.value) for e in entries}
    out: dict[str, HostReport] = {}
    for host, body in sorted(reported.items()):
        fields: dict[str, Any] = {k: body.get(k) for k in ("state", "error", "capacity")}
        out[host] = HostReport(**fields, peers=body.get("peers") or [], reserved=reserved.get(rec.scope(host), 0))
    return FileStorageView(**rec.model_dump(), reserved=sum(reserved.values()), hosts=out)


async def show(store: Store, ref: str) -> FileStorageView:
    return await view(store, (await load_storage(store, ref))[0])


async def views(store: Store) -> list[FileStorageView]:
    return [await view(store, rec) for rec in await load_storages(store)]


async def delete(store: Store, ref: str) -> FileStorageRecord:
    """Forget a storage no volume is on any more (its directory and cached images stay on the hosts), and every
    host's report on it (one a host sends after this is not stored: observed.py). A volume made meanwhile (on
    any replica) fails the delete, and the retry refuses it naming the volume."""
    async def attempt(_: int) -> FileStorageRecord | None:
        rec, entry = await load_storage(store, ref)
        volumes, rev = await store.list(keys.FILE_VOLUMES)
        left = sorted(v.name for e in volumes
                      if (v := FileVolumeRecord.model_validate(e.value)).primary_storage_uuid == rec.uuid)
        if left:
            raise InUse(f"primary storage {rec.name} still holds {len(left)} volume(s): {', '.join(left[:5])}; "
                        "delete them first")
        txn = Txn().unchanged(entry.key, entry.mod_revision).none_created_since(keys.FILE_VOLUMES, rev)
        txn.delete(entry.key)
        for key in rec.stream_keys():
            txn.delete(key)
        txn.delete(keys.reserved(rec.uuid, ""), prefix=True)
        txn.delete(keys.observed("storage", f"{rec.uuid}."), prefix=True)
        return rec if await store.commit(txn) is not None else None
    return await retry_cas(attempt, f"primary storage {ref}")
