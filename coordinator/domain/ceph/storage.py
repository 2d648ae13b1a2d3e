"""Ceph backup storage and primary storage (ZStack 0.9 "Ceph Integration"): add, show, list, delete.

Adding one first has the mons' missing cephagents deployed and waits for them (monhosts.py), then asks the
cephagent of every mon for its cluster (all must report one fsid), checks the
named pools, creates the unnamed ones, and only then records the storage: a failed add leaves no
record and creates no pool. A primary storage also publishes its cluster's cephx key to every KVM
host (`cephsecret/<fsid>`, see docs/ceph.md): the key of a VM user whose caps are `profile rbd` on the
primary storages' pools and `profile rbd-read-only` on the backup storages' (which VMs clone from) of
that cluster, never more; each add extends them. The record is written only while no storage was added
since the rule and the caps were decided on the storages read (on any replica); else they are decided again.
Shown storages come with what their agents answer now.
"""

from __future__ import annotations

import asyncio
import time
import uuid as uuidlib

from agentkit.errors import Conflict
from agentkit.model import CephSecretSpec, stream_key_ceph_secret
from cephagent.errors import CephAgentError
from cephagent.monurl import FIELD
from coordinator.domain.ceph.agents import Agents, agent_error
from coordinator.domain.ceph.errors import AlreadyExists, ClusterMismatch, InUse, PoolNotFound
from coordinator.domain.ceph.monhosts import HostKeys, ensure_agents
from coordinator.domain.ceph.mons import MonUrls, cluster_of, parse_mons
from coordinator.domain.ceph.records import (
    KIND_NAMES,
    Kind,
    MonRecord,
    StorageRecord,
    VolumeRecord,
    cluster_secret_uuid,
    load_storage,
    load_storages,
)
from coordinator.domain.ceph.views import StorageView, describe
from coordinator.domain.images.records import held_by
from coordinator.etcd import keys
from coordinator.etcd.cas import retry_cas
from coordinator.etcd.store import Store, Txn
from coordinator.settings import CoordinatorSettings

RESERVE_TTL = 300  # seconds an add may take before its name reservation lapses
Pools = dict[str, tuple[str, str | None]]  # role -> (the request field naming its pool, that pool or None)


def _check_cluster_rule(storages: list[StorageRecord], rec: StorageRecord) -> None:
    """Ceph backup storage works only with Ceph primary storage of the same cluster (per zone)."""
    other: Kind = "ps" if rec.kind == "bs" else "bs"
    peers = [p for p in storages if p.kind == other and p.zone == rec.zone]
    if peers and all(p.fsid != rec.fsid for p in peers):
        names = ", ".join(f"{p.name} (cluster {p.fsid})" for p in peers)
        raise ClusterMismatch(f"Ceph backup storage works only with Ceph primary storage in the same Ceph cluster: "
                              f"these mons report cluster {rec.fsid}, but zone {rec.zone} has {KIND_NAMES[other]} "
                              f"{names}", field=FIELD)


def _pool_names(uuid: str, kind: Kind, named: Pools) -> dict[str, str]:
    """Role -> pool: the named ones, and the names the unnamed ones are created with."""
    return {role: name or f"hs-{kind}-{uuid}" + ("" if kind == "bs" else f"-{role.lower()}")
            for role, (_, name) in named.items()}


async def _ensure_pools(agents: Agents, host: str, named: Pools, names: dict[str, str]) -> dict[str, str]:
    """The seeds' pool rule: every named pool must exist (checked first), the unnamed ones are created."""
    client = agents.client(host)
    for param, name in named.values():
        if name is None:
            continue
        try:
            await client.ensure_pool(name, must_exist=True)
        except CephAgentError as e:
            if e.code == "pool_not_found":
                raise PoolNotFound(param=param, pool=name, field=param) from None
            raise agent_error(e, param) from None
    for role, (param, name) in named.items():
        if name is None:
            try:
                await client.ensure_pool(names[role], must_exist=False)
            except CephAgentError as e:
                raise agent_error(e, param) from None
    return names


def _vm_pools(storages: list[StorageRecord], rec: StorageRecord, names: dict[str, str]
              ) -> tuple[list[str], list[str]] | None:
    """The pools of `rec`'s cluster its VM user may use (read-write, read-only) once `rec` is added with
    pools `names`; None while the cluster has no primary storage (no VM uses it)."""
    same = [p for p in storages if p.fsid == rec.fsid and p.uuid != rec.uuid]
    same.append(rec.model_copy(update={"pools": names}))
    if not any(p.kind == "ps" for p in same):
        return None
    rw = {n for p in same if p.kind == "ps" for n in p.pools.values()}
    ro = {n for p in same if p.kind == "bs" for n in p.pools.values()} - rw
    return sorted(rw), sorted(ro)


async def _publish_secret(agents: Agents, host: str, rec: StorageRecord, txn: Txn, pools: tuple[list[str], list[str]]
                          ) -> None:
    """The cluster's VM user with caps on `pools` only; a primary storage also publishes its key for every KVM
    host (in the transaction that records it)."""
    try:
        secret = await agents.client(host).secret(*pools)
    except CephAgentError as e:
        raise agent_error(e) from None
    if rec.kind != "ps":
        return
    rec.ceph_user, rec.secret_uuid = secret.user, cluster_secret_uuid(rec.fsid)
    item = CephSecretSpec(uuid=rec.secret_uuid, user=secret.user, key=secret.key, fsid=rec.fsid)
    txn.put(keys.desired_all(stream_key_ceph_secret(rec.fsid)), item.model_dump())


def _exists(kind: Kind, name: str) -> AlreadyExists:
    return AlreadyExists(f"{KIND_NAMES[kind]} {name} already exists", field="name")


async def add(store: Store, settings: CoordinatorSettings, kind: Kind, name: str, zone: str, urls: MonUrls,
              named: Pools, *, host_keys: HostKeys | None = None, wait: float = 0) -> StorageView:
    """The mons' cephagents (deployed where missing, waited for up to `wait` seconds), then probe, check, create
    pools, record; the name is reserved under a lease meanwhile."""
    mons = parse_mons(urls)
    name_key = keys.ceph_storage_name(kind, name)
    if await store.get(name_key) is not None:  # before any agent is deployed for it
        raise _exists(kind, name)
    await ensure_agents(store, settings, mons, host_keys, wait)
    uuid = uuidlib.uuid4().hex
    async with Agents(settings, store=store) as agents:
        lease = await store.grant(RESERVE_TTL)  # revoking it drops the reservation unless the record was put
        try:
            rev = await store.commit(Txn().absent(name_key).put(name_key, uuid, lease))
            if rev is None:
                raise _exists(kind, name)
            fsid, answers = await cluster_of(agents, mons)
            rec = StorageRecord(uuid=uuid, name=name, kind=kind, zone=zone, fsid=fsid, pools={},
                                mons=[MonRecord.of(m, settings) for m in mons], created_at=time.time())
            await retry_cas(lambda _: _record(store, agents, rec, named, rev), "Ceph storage")
        finally:
            await store.revoke(lease)
    return describe(rec, dict(answers))


async def _record(store: Store, agents: Agents, rec: StorageRecord, named: Pools, reserved: int) -> bool | None:
    """One try at recording `rec` (its name reserved at revision `reserved`) as the storages read now allow:
    the cluster rule, the VM user's caps, the pools. It holds while no storage was added since (on any
    replica): one of another cluster in the zone breaks the rule, one of this cluster needs the caps too."""
    found, read_at = await store.snapshot([keys.ceph_storages("ps"), keys.ceph_storages("bs")])
    storages = [StorageRecord.model_validate(e.value) for entries in found.values() for e in entries]
    _check_cluster_rule(storages, rec)
    name_key = keys.ceph_storage_name(rec.kind, rec.name)
    txn = Txn().unchanged(name_key, reserved).put(name_key, rec.uuid).absent(keys.ceph_storage(rec.kind, rec.uuid))
    txn.none_created_since(keys.ceph_storages("ps"), read_at).none_created_since(keys.ceph_storages("bs"), read_at)
    names = _pool_names(rec.uuid, rec.kind, named)
    if (pools := _vm_pools(storages, rec, names)) is not None:
        await _publish_secret(agents, rec.mons[0].host, rec, txn, pools)
    rec.pools = await _ensure_pools(agents, rec.mons[0].host, named, names)
    if await store.commit(txn.put(keys.ceph_storage(rec.kind, rec.uuid), rec.model_dump())) is not None:
        return True
    held = await store.get(name_key)
    if held is None or held.mod_revision != reserved:
        raise Conflict(f"adding {rec.title} took longer than {RESERVE_TTL}s; retry", field="name")
    return None


async def show(store: Store, settings: CoordinatorSettings, kind: Kind, ref: str, live: bool) -> StorageView:
    """A storage by uuid or name, with what its agents answer when `live`."""
    rec, _ = await load_storage(store, kind, ref)
    if not live:
        return describe(rec, None)
    async with Agents(settings, store=store) as agents:
        return describe(rec, await agents.survey(rec))


async def list_all(store: Store, settings: CoordinatorSettings, kind: Kind, live: bool) -> list[StorageView]:
    """Every storage of a kind, with what their agents answer (all asked at once) when `live`."""
    recs = await load_storages(store, kind)
    if not live or not recs:
        return [describe(r, None) for r in recs]
    async with Agents(settings, store=store) as agents:
        surveys = await asyncio.gather(*(agents.survey(r) for r in recs))
    return [describe(r, s) for r, s in zip(recs, surveys, strict=True)]


async def _users(store: Store, rec: StorageRecord) -> tuple[list[str], int, str]:
    """Names of the images (of a backup storage) or volumes (of a primary storage) that live in it; and the
    revision they were read at and the prefix they were listed from, to guard its delete on."""
    if rec.kind == "bs":
        return *await held_by(store, rec.uuid), keys.IMAGES
    entries, read_at = await store.list(keys.VOLUMES)
    volumes = (VolumeRecord.model_validate(e.value) for e in entries)
    return [v.name for v in volumes if v.primary_storage_uuid == rec.uuid], read_at, keys.VOLUMES


async def delete(store: Store, kind: Kind, ref: str) -> None:
    """Forget a storage (its pools and their data stay in Ceph); refused while images or volumes use it.
    The cluster's cephx key is withdrawn from the KVM hosts with the last primary storage of the cluster. An
    image or volume made after they were read, or a primary storage added (on any replica), fails the delete,
    which reads them again."""
    async def attempt(_: int) -> bool | None:
        rec, entry = await load_storage(store, kind, ref)
        names, read_at, users = await _users(store, rec)
        if names:
            what = "images" if kind == "bs" else "volumes"
            raise InUse(f"{rec.title} still holds {len(names)} {what}: {', '.join(names[:10])}; delete them first")
        txn = Txn().unchanged(entry.key, entry.mod_revision).none_created_since(users, read_at).delete(entry.key)
        txn.delete(keys.ceph_storage_name(kind, rec.name))
        if kind == "ps":
            entries, peers_at = await store.list(keys.ceph_storages("ps"))
            peers = [StorageRecord.model_validate(e.value) for e in entries]
            if not any(p.fsid == rec.fsid and p.uuid != rec.uuid for p in peers):
                txn.none_created_since(keys.ceph_storages("ps"), peers_at)
                txn.delete(keys.desired_all(stream_key_ceph_secret(rec.fsid)))
        return True if await store.commit(txn) is not None else None

    await retry_cas(attempt, KIND_NAMES[kind])
