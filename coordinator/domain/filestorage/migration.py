"""Moving LocalStorage volumes between hosts (seed 1.0 `LocalStorageMigrateVolume`), and the VM with them.

The seed's rules, each a 409 naming why: a root volume only while its VM is stopped (the VM then moves
with it), a data volume only while detached (or with its VM, in a VM's cold migration), a volume of
shared storage never (every attached host reaches it). The volume's whole chain moves (snapshots too).

Desired state, level-triggered: `start` records the migration on the volume, reserves its bytes on the
target and streams the volume to the target with `migrate_from`, while the source keeps its item
unchanged. The target fills its image cache, pulls the files from the source's agent (a short-lived
ticket from `ticket`, checked by the source), verifies them, and reports `migration` Verified; whichever
agent is killed meanwhile resumes from what the files hold. `complete` (on that report) makes the target
the volume's host and tombstones the source's item: the source removes its copy only then. When the
last volume of a VM that moves with them is there, the VM's desired object moves too. Both the start and
the VM's move are guarded on the target's host record (coordinator/domain/placement.py `guarded`): a host
deleted meanwhile, on any replica, receives nothing, and the retry refuses as for a host that is not there.
"""

from __future__ import annotations

import time
import uuid as uuidlib
from collections.abc import Sequence

from pydantic import BaseModel

from agentkit.addr import http_url
from agentkit.errors import Forbidden, InUse, NotFound
from agentkit.model import VmSpec
from agentkit.volumetickets import LIFETIME, issue
from coordinator.domain import hosts, vmrecords
from coordinator.domain import placement as vm_placement
from coordinator.domain.errors import InvalidState
from coordinator.domain.filestorage import capacity, placement
from coordinator.domain.filestorage.records import (
    FileMigration,
    FileVolumeRecord,
    load_storage,
    load_volume,
    vm_volumes,
    write,
)
from coordinator.domain.filestorage.vmdisks import follow
from coordinator.domain.filestorage.volumes import observed_of
from coordinator.domain.hosts import Host
from coordinator.etcd.cas import retry_cas
from coordinator.etcd.store import Entry, Store, Txn
from coordinator.settings import CoordinatorSettings


class VolumeTicket(BaseModel):
    url: str
    ticket: str
    expires_at: int
    migration_id: str


async def _check_vm_stopped(store: Store, spec: VmSpec, why: str) -> None:
    obs = await observed_of(store, "vm", spec.uuid)
    state = (obs or {}).get("state")
    if spec.state != "Stopped" or state not in (None, "Stopped", "Crashed", "Destroyed"):
        raise InvalidState(f"VM {spec.name} is {state if spec.state == 'Stopped' else spec.state}: {why}; stop it "
                           "first (live migration needs SharedMountPoint or Ceph storage)", field="host_uuid")


async def _check_volume(store: Store, rec: FileVolumeRecord, target: Host, vm: str | None) -> bool:
    """May `rec` move to `target` (with VM `vm`, or alone)? False when it is there already or on its way."""
    ps, _ = await load_storage(store, rec.primary_storage_uuid)
    if ps.type != "LocalStorage":
        raise InvalidState(f"volume {rec.name} is on {ps.type} {ps.name}: every host attached to it reaches its "
                           "files, there is nothing to migrate (migrate its VM)", field="volume_uuid")
    if rec.migration is not None:
        if rec.migration.target == target.uuid:
            return False
        raise InvalidState(f"volume {rec.name} is migrating to {await hosts.title_of(store, rec.migration.target)} "
                           "already", field="volume_uuid")
    if rec.host_uuid == target.uuid:
        return False
    await placement.usable(store, ps, target)
    if vm is None and rec.type == "Data" and rec.vm_uuid is not None:
        raise InUse(f"volume {rec.name} is attached to {await vmrecords.title_of(store, rec.vm_uuid)}: a data "
                    "volume migrates only while detached; detach it first (or migrate the VM, its volumes move with "
                    "it)", field="volume_uuid")
    obs = await observed_of(store, "volume", rec.uuid) or {}
    if obs.get("host") != rec.host_uuid:
        raise InvalidState(f"volume {rec.name} has not been reported by its "
                           f"{await hosts.title_of(store, rec.host_uuid)} yet (made or moved there a moment ago): it "
                           "migrates once Ready there", field="volume_uuid")
    if obs.get("state") != "Ready":
        raise InvalidState(f"volume {rec.name} is {obs.get('state')} on {await hosts.title_of(store, rec.host_uuid)}: "
                           "it migrates once Ready", field="volume_uuid")
    return True


async def _begin(store: Store, txn: Txn, moves: Sequence[tuple[FileVolumeRecord, Entry]], host: Host,
                 vm: str | None) -> bool:
    """Record the migrations of `moves` to `host` and reserve their bytes there, in `txn` (guarded on the
    host's record: vm_placement.guarded); False: something changed meanwhile."""
    need = 0
    for rec, entry in moves:
        rec.migration = FileMigration(id=uuidlib.uuid4().hex, target=host.uuid, vm_uuid=vm, started_at=time.time())
        write(txn, rec, entry)
        need += rec.size
    ps, _ = await load_storage(store, moves[0][0].primary_storage_uuid)
    scope = await placement.fit(store, ps, host, need, await capacity.ratio(store))
    scope.reserve(txn, need)
    return await store.commit(txn) is not None


async def migrate_volume(store: Store, uuid: str, host_ref: str, heartbeat_timeout: float) -> FileVolumeRecord:
    """Start moving a volume to another host (a root volume takes its stopped VM along)."""
    # volumes hold no memory (a root volume moves with its VM stopped; its start asks for memory there)
    target = await vm_placement.place(store, host_ref, heartbeat_timeout, 0)

    async def attempt(_n: int) -> bool | None:
        rec, entry = await load_volume(store, uuid)
        vm = None
        if rec.type == "Root" and rec.vm_uuid is not None:
            _, spec, _ = await vmrecords.load(store, rec.vm_uuid)
            await _check_vm_stopped(store, spec, f"root volume {rec.name} migrates only while its VM is stopped")
            others = [r for r, _ in await _local_volumes(store, spec) if r.uuid != rec.uuid and r.host_uuid != target]
            if others:
                raise InvalidState(f"VM {spec.name} has LocalStorage data volumes on "
                                   f"{await hosts.title_of(store, rec.host_uuid)} "
                                   f"({', '.join(r.name for r in others)}): migrate the VM, its volumes move with "
                                   "it", field="volume_uuid")
            vm = spec.uuid
        txn = Txn()
        host = await vm_placement.guarded(store, txn, target)
        if not await _check_volume(store, rec, host, vm):
            return True
        return True if await _begin(store, txn, [(rec, entry)], host, vm) else None
    await retry_cas(attempt, f"volume {uuid}")
    await settle(store, uuid)
    return (await load_volume(store, uuid))[0]


async def settle(store: Store, uuid: str) -> None:
    """Complete a migration its target reported verified (the same request again completes one whose
    report came while no replica could act on it)."""
    rec, _ = await load_volume(store, uuid)
    obs = await observed_of(store, "migration", uuid) or {}
    if rec.migration and obs.get("id") == rec.migration.id and obs.get("state") == "Verified":
        await complete(store, rec.migration.target, uuid, rec.migration.id)


async def _local_volumes(store: Store, spec: VmSpec) -> list[tuple[FileVolumeRecord, Entry]]:
    out = []
    for _, rec, entry in await vm_volumes(store, spec):
        ps, _ = await load_storage(store, rec.primary_storage_uuid)
        if ps.type == "LocalStorage":
            out.append((rec, entry))
    return out


async def migrate_vm(store: Store, uuid: str, target: str) -> bool:
    """A VM's cold migration to `target` when it has LocalStorage volumes elsewhere: they move (the VM must
    be stopped) and the VM follows once they are all there. False when it has none to move."""
    moving = False

    async def attempt(_n: int) -> bool | None:
        nonlocal moving
        _, spec, _ = await vmrecords.load(store, uuid)
        local = [(r, e) for r, e in await _local_volumes(store, spec) if r.host_uuid != target or r.migration]
        moving = bool(local)
        if not local:
            return True
        await _check_vm_stopped(store, spec, "its LocalStorage volumes move only while it is stopped")
        txn = Txn()
        host = await vm_placement.guarded(store, txn, target)
        moves = [(r, e) for r, e in local if await _check_volume(store, r, host, spec.uuid)]
        return True if not moves or await _begin(store, txn, moves, host, spec.uuid) else None
    await retry_cas(attempt, f"VM {uuid}")
    if moving:
        for rec, _ in await _local_volumes(store, (await vmrecords.load(store, uuid))[1]):
            await settle(store, rec.uuid)
        await follow_vm(store, uuid)
    return moving


async def complete(store: Store, host: str, uuid: str, migration_id: str) -> None:
    """The target `host` verified its copy: it becomes the volume's host, the source removes its copy, and
    the VM moving with it follows once all its volumes are there. A stale report changes nothing; the same
    report again (its first answer lost) only makes the VM follow, in case that step failed."""
    vm: str | None = None

    async def attempt(_n: int) -> bool | None:
        nonlocal vm
        try:
            rec, entry = await load_volume(store, uuid)
        except NotFound:
            return True
        m = rec.migration
        if m is None and rec.host_uuid == host:
            vm = rec.vm_uuid
            return True
        if m is None or m.id != migration_id or m.target != host:
            return True
        ps, _ = await load_storage(store, rec.primary_storage_uuid)
        source = await capacity.scope(store, ps, rec.host_uuid, rec.host_uuid, sized=False)
        txn = Txn().put(rec.stream_key, rec.spec(deleted=True).model_dump(mode="json"))
        source.reserve(txn, -rec.size)
        rec.host_uuid, rec.migration, vm = host, None, m.vm_uuid
        write(txn, rec, entry)
        return True if await store.commit(txn) is not None else None
    await retry_cas(attempt, f"volume {uuid}")
    if vm is not None:
        await follow_vm(store, vm)


async def follow_vm(store: Store, uuid: str) -> None:
    """Move the VM to the host of its LocalStorage volumes once none is migrating and all are on one host."""
    try:
        host, spec, _ = await vmrecords.load(store, uuid)
    except NotFound:
        return
    local = [r for r, _ in await _local_volumes(store, spec)]
    places = {r.host_uuid for r in local}
    if any(r.migration for r in local) or len(places) != 1 or host in places:
        return
    target = places.pop()

    async def volumes_follow(s: VmSpec, txn: Txn) -> None:
        await vm_placement.guarded(store, txn, target)
        await follow(store, txn, s, target)
    await vmrecords.update(store, uuid, volumes_follow, new_host=target)


async def ticket(store: Store, settings: CoordinatorSettings, uuid: str, caller: str) -> VolumeTicket:
    """Where and with what a migration's target reads the volume's files from the source's agent."""
    rec, _ = await load_volume(store, uuid)
    if rec.migration is None or caller != f"host:{rec.migration.target}":
        raise Forbidden(f"volume {rec.name} is not migrating to the caller", field="uuid")
    source = await hosts.load(store, rec.host_uuid)
    expires = int(time.time()) + LIFETIME
    scheme = "http" if settings.tls.plain_http else "https"  # the agents serve TLS unless the cloud runs without
    return VolumeTicket(url=http_url(scheme, source.address, settings.kvmagent_port,
                                     f"/v1/migration/volumes/{uuid}"),
                        ticket=issue(bytes.fromhex(source.token_sha256), uuid, expires), expires_at=expires,
                        migration_id=rec.migration.id)
