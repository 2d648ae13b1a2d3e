"""What etcd holds for Ceph: backup and primary storage with their mons, and volumes; lookups (images:
coordinator/domain/images/records.py).

Records are written in snake_case; records written by earlier versions in camelCase still load
(`naming.SeedNamed`). Secrets are kept Fernet-encrypted (coordinator/domain/credentials.py): the SSH
password of a monUrl never leaves the coordinator in clear.
"""

from __future__ import annotations

import uuid as uuidlib
from typing import Literal, TypeVar

from pydantic import BaseModel, Field

from agentkit.addr import host_literal, host_port
from agentkit.errors import NotFound
from agentkit.model import RbdDisk
from cephagent.monurl import MonUrl
from coordinator.domain import credentials
from coordinator.domain.ceph.errors import UnknownReference
from coordinator.domain.ceph.naming import SeedNamed
from coordinator.etcd import keys
from coordinator.etcd.store import Entry, Store
from coordinator.settings import CoordinatorSettings

Kind = Literal["bs", "ps"]
KIND_NAMES: dict[Kind, str] = {"bs": "Ceph backup storage", "ps": "Ceph primary storage"}
R = TypeVar("R", bound=BaseModel)
# libvirt secrets of one cluster share a uuid, so every primary storage of that cluster names the same one
SECRET_NAMESPACE = uuidlib.UUID("6c1b2f0e-5d0a-4f59-9a49-3a1c0e7f2b11")


def cluster_secret_uuid(fsid: str) -> str:
    return str(uuidlib.uuid5(SECRET_NAMESPACE, fsid))


class MonRecord(SeedNamed):
    """One mon server of a storage; `ssh_password` is a Fernet token, never returned by the API."""

    host: str
    mon_port: int
    ssh_port: int
    ssh_username: str
    ssh_password: str

    @property
    def literal(self) -> str:
        return host_literal(self.host)

    @property
    def addr(self) -> str:
        """`host:mon_port`, the form of RbdDisk.monitors and of `mon_hostnames` entries."""
        return host_port(self.host, self.mon_port)

    @property
    def redacted(self) -> str:
        return f"{self.ssh_username}:***@{self.literal}:{self.ssh_port}/?monPort={self.mon_port}"

    def matches(self, ref: str) -> bool:
        """Is this the mon named by a `mon_hostnames` entry: its host (any port) or its `host:mon_port`?"""
        return ref in (self.host, self.literal, self.addr)

    @classmethod
    def of(cls, url: MonUrl, settings: CoordinatorSettings) -> MonRecord:
        secret = credentials.encrypt(settings.secret_key, url.ssh_password)
        return cls(host=url.host, mon_port=url.mon_port, ssh_port=url.ssh_port, ssh_username=url.ssh_username,
                   ssh_password=secret)


class StorageRecord(SeedNamed):
    """A storage; `pools` maps a role (image, imageCache, rootVolume, dataVolume) to a Ceph pool."""

    uuid: str
    name: str
    kind: Kind
    zone: str
    fsid: str
    mons: list[MonRecord]
    pools: dict[str, str]
    ceph_user: str | None = None
    secret_uuid: str | None = None
    created_at: float

    @property
    def title(self) -> str:
        """How messages name it: `Ceph backup storage bs1`."""
        return f"{KIND_NAMES[self.kind]} {self.name}"

    @property
    def monitors(self) -> list[str]:
        return [m.addr for m in self.mons]

    @property
    def hosts(self) -> list[str]:
        """The mon hosts, each once: one cephagent serves every mon of its host."""
        return list(dict.fromkeys(m.host for m in self.mons))


class SnapshotRecord(SeedNamed):
    name: str
    protected: bool = False
    created_at: float


class VolumeRecord(SeedNamed):
    uuid: str
    name: str
    primary_storage_uuid: str
    type: Literal["Root", "Data"]
    image_uuid: str | None = None
    flattened: bool = False
    pool: str
    rbd_image: str
    size: int
    fsid: str
    status: Literal["Creating", "Ready"]
    snapshots: list[SnapshotRecord] = Field(default_factory=list)
    created_at: float
    deleting: str | None = None  # the delete under way (its id): VMs are refused the volume (volumes.py `delete`)

    @property
    def spec(self) -> str:
        """`pool/image`, how Ceph names the volume's RBD image (and its clones' parents)."""
        return f"{self.pool}/{self.rbd_image}"

    def rbd_disk(self, ps: StorageRecord) -> RbdDisk:
        """The RbdDisk a VM attaches this volume with."""
        return RbdDisk(pool=self.pool, image=self.rbd_image, monitors=ps.monitors, user=ps.ceph_user or "admin",
                       secret_uuid=ps.secret_uuid or cluster_secret_uuid(ps.fsid), fsid=ps.fsid)


def missing(what: str, ref: str, field: str | None) -> NotFound | UnknownReference:
    """404 for a reference in the path, 400 naming `field` for one given in a request body."""
    return UnknownReference(what=what, ident=ref, field=field) if field else NotFound(what=what, ident=ref)


async def load_storage(store: Store, kind: Kind, ref: str, field: str | None = None
                       ) -> tuple[StorageRecord, Entry]:
    """A storage by uuid or name (a name still reserved by an add in progress does not count)."""
    entry = await store.get(keys.ceph_storage(kind, ref))
    if entry is None:
        named = await store.get(keys.ceph_storage_name(kind, ref))
        if named is not None and not named.lease and isinstance(named.value, str):
            entry = await store.get(keys.ceph_storage(kind, named.value))
    if entry is None:
        raise missing(KIND_NAMES[kind], ref, field)
    return StorageRecord.model_validate(entry.value), entry


async def load_storages(store: Store, kind: Kind) -> list[StorageRecord]:
    return await _load_all(store, keys.ceph_storages(kind), StorageRecord)


async def load_volume(store: Store, uuid: str, field: str | None = None) -> tuple[VolumeRecord, Entry]:
    return await _load(store, keys.volume(uuid), VolumeRecord, "volume", uuid, field)


async def load_volumes(store: Store) -> list[VolumeRecord]:
    return await _load_all(store, keys.VOLUMES, VolumeRecord)


async def _load(store: Store, key: str, model: type[R], what: str, ref: str, field: str | None) -> tuple[R, Entry]:
    entry = await store.get(key)
    if entry is None:
        raise missing(what, ref, field)
    return model.model_validate(entry.value), entry


async def _load_all(store: Store, prefix: str, model: type[R]) -> list[R]:
    entries, _ = await store.list(prefix)
    return [model.model_validate(e.value) for e in entries]
