"""Live migration of a running VM between hosts that reach the same storage (SharedMountPoint, Ceph).

`start` checks what the storage can do (a 409 says why not: a volume on LocalStorage, a raw disk or an ISO only the
source has) and records the intent in one transaction: the source's copy of the VM gets `migrate_to`, the target gets
a copy with `incoming` (its agent defines, starts or removes nothing of it meanwhile, and stages its EIPs but answers
for none). The target reports the VM `prepared` once what it needs before it runs there is in place (its bridges,
anti-spoofing on its taps, its EIPs staged); `note` marks the move so, and only then does the source's libvirtd send
the running domain peer-to-peer to the target's: the guest never arrives to taps that drop its traffic (a target that
never prepares, its agent down, leaves the VM running on the source, and `cancel` calls such a move off at once; one
called off after that ends once the source reports it `kept`; so does any move of a VM that stopped on its source
before it was sent: its guest powered off, it was destroyed or crashed, and the VM stays there, stopped, as after any
out-of-band stop). The source reports the VM `migrated` once it stopped
running there (paused for the last copy of its memory) and its VIPs are withdrawn; the target reports it `arrived`
once it runs there. With both, `note` makes the target the VM's host: the target's copy becomes the VM (its shared
volumes' items follow, its staged EIPs are answered and announced from there), the source's goes. The new host never
answers for the VM before the old one stopped. Both hosts' agents must run this coordinator's version (a 409
otherwise): an older target never reports `prepared`, and an agent of a release before reading past unknown fields
took a spec that has it for an invalid one (treated as absent: its domain destroyed). A migration libvirt refuses is
retried by the source with backoff; the VM keeps running there (and answers for its EIPs again).
"""

from __future__ import annotations

import uuid as uuidlib
from typing import Literal

from agentkit import __version__
from agentkit.errors import Conflict, NotFound
from agentkit.model import FileDisk, LiveMigration, VmSpec, VolumeDisk, stream_key_vm
from coordinator.domain import hostmemory, hosts, vmrecords
from coordinator.domain import placement as vm_placement
from coordinator.domain.errors import InvalidState, NotRunning
from coordinator.domain.filestorage import placement, vmdisks
from coordinator.domain.filestorage.records import load_storage, load_volume
from coordinator.etcd import keys
from coordinator.etcd.store import Entry, Store, Txn


async def _check_storage(store: Store, spec: VmSpec, target: hosts.Host) -> None:
    """InvalidState naming the first disk the target cannot reach as the source does."""
    why = "live migration needs storage both hosts reach (SharedMountPoint or Ceph); stop the VM and migrate it cold"
    for vol in spec.volumes:
        if isinstance(vol.disk, VolumeDisk):
            rec, _ = await load_volume(store, vol.uuid)
            ps, _ = await load_storage(store, rec.primary_storage_uuid)
            if ps.type != "SharedMountPoint":
                raise InvalidState(f"volume {rec.name} of VM {spec.name} is on {ps.type} {ps.name}: {why}",
                                   field="host_uuid")
            await placement.usable(store, ps, target)
        elif isinstance(vol.disk, FileDisk) and vol.disk.storage_uuid is None:
            raise InvalidState(f"disk {vol.disk.path} of VM {spec.name} is a file of the source host: {why}",
                               field="host_uuid")
    iso = spec.cdrom
    if iso is not None and (iso.path is not None or iso.storage_uuid is not None):
        cache = None if iso.storage_uuid is None else (await load_storage(store, iso.storage_uuid))[0]
        if cache is None or cache.type != "SharedMountPoint":
            raise InvalidState(f"the ISO in VM {spec.name}'s cdrom is on the source host only: eject it first",
                               field="host_uuid")


async def start(store: Store, uuid: str, host_ref: str, heartbeat_timeout: float, uri: str) -> tuple[str, VmSpec]:
    """Begin moving a running VM live to `host_ref`; `uri` is the libvirt URI template (`{address}`)."""
    host, spec, _ = await vmrecords.load(store, uuid)
    target = await hosts.load(store, await vm_placement.place(store, host_ref, heartbeat_timeout,
                                                              hostmemory.needs(spec)))
    if spec.migrate_to is not None:
        if spec.migrate_to.abort:
            raise InvalidState(f"VM {spec.name}'s move to {await hosts.title_of(store, spec.migrate_to.host)} is "
                               "being called off: ask again once it is", field="host_uuid")
        if spec.migrate_to.host == target.uuid:
            return host, spec
        raise await _moving(store, spec.name, spec.migrate_to.host)
    if target.uuid == host:
        raise InvalidState(f"VM {spec.name} runs on host {target.name} already", field="host_uuid")
    await _running(store, spec)
    await _check_storage(store, spec, target)
    for h in (await hosts.load(store, host), target):
        if h.agent_version not in (None, "", __version__):
            raise InvalidState(f"the agent of {h.title} is version {h.agent_version}, this coordinator "
                               f"{__version__}: VM {spec.name} moves live once it is upgraded", field="host_uuid")
    move = LiveMigration(id=uuidlib.uuid4().hex, host=target.uuid, uri=uri.format(address=target.address),
                         address=target.address)

    async def mutate(s: VmSpec, txn: Txn) -> None:
        if s.migrate_to is not None:  # a move begun since it was read (on any replica): its target's copy stays
            raise await _moving(store, s.name, s.migrate_to.host)
        if await vmrecords.locate(store, uuid) == target.uuid:  # migrated cold there since (on any replica)
            raise InvalidState(f"VM {s.name} runs on host {target.name} already", field="host_uuid")
        obs = await _running(store, s)  # not stopped since it was read (on any replica): it would never be sent
        txn.unchanged(obs.key, obs.mod_revision)
        await hostmemory.take(store, txn, await vm_placement.guarded(store, txn, target.uuid), hostmemory.needs(s))
        s.migrate_to = move
        incoming = s.model_copy(update={"migrate_to": None, "incoming": move.id})
        txn.put(keys.desired_for(target.uuid, stream_key_vm(uuid)), incoming.model_dump(mode="json"))
    return await vmrecords.update(store, uuid, mutate)


async def _running(store: Store, spec: VmSpec) -> Entry:
    """NotRunning unless the VM is desired and observed Running; its observed record (to guard the move on)."""
    obs = await store.get(keys.observed("vm", spec.uuid))
    state = obs.value.get("state") if obs is not None and isinstance(obs.value, dict) else None
    if obs is None or spec.state != "Running" or state != "Running":
        raise NotRunning(f"VM {spec.name} is {state or spec.state}: only a running VM migrates live (a stopped one "
                         "migrates cold)", field="live")
    return obs


async def _moving(store: Store, name: str, target: str) -> InvalidState:
    """The refusal of a move of VM `name` while it moves live to host `target`."""
    return InvalidState(f"VM {name} is moving live to {await hosts.title_of(store, target)} already", field="host_uuid")


async def cancel(store: Store, uuid: str) -> tuple[str, VmSpec]:
    """Call off a live migration. One its target has not prepared for (its agent down or failing) ends now:
    the VM stays on its source, the target's copy and the memory it held there go. Once the target prepared,
    the source may be sending the VM: the move is marked `abort`, the source sends no more (and aborts a send
    under way), and it ends when the source reports the VM `kept` (runs there, no send under way); a send
    that completed first ends it on the target as any move does. Refused once the VM arrived there.
    (`released` does not refuse it: a try that failed after the source paused the VM left it running there.)"""
    async def mutate(s: VmSpec, txn: Txn) -> None:
        move = s.migrate_to
        if move is None:
            raise InvalidState(f"VM {s.name} is not moving live", field="uuid")
        if move.arrived:
            raise InvalidState(f"VM {s.name} runs on {await hosts.title_of(store, move.host)} already: the move "
                               "ends there", field="uuid")
        if move.ready:
            move.abort = True
        else:
            _call_off(s, txn)
    host, spec, _ = await vmrecords.load(store, uuid)
    if spec.migrate_to is not None and spec.migrate_to.abort and not spec.migrate_to.arrived:
        return host, spec  # asked again: nothing more to tell the source
    return await vmrecords.update(store, uuid, mutate)


def _call_off(s: VmSpec, txn: Txn) -> None:
    """The move ends with the VM on its source: the target's copy goes."""
    assert s.migrate_to is not None
    txn.delete(keys.desired_for(s.migrate_to.host, stream_key_vm(s.uuid)))
    s.migrate_to = None


async def note(store: Store, host: str, uuid: str, migration_id: str,
               fact: Literal["prepared", "released", "arrived", "kept"], state: str = "Running",
               drifted: int | None = None) -> None:
    """A host's word on a live migration: the target `prepared` for the VM (the source may send it now), the
    source `released` it (it stopped running there and its EIPs are withdrawn), or it `arrived` (it runs on
    the target). With the last two the target becomes its host, so the new host answers for it only once the
    old one stopped. The source `kept` it: a move called off sends no more and the VM runs there, or the VM
    stopped there before it was sent (`state`: its guest powered off, it was destroyed or crashed; libvirt
    said it did not leave); either ends the move there, unless the VM arrived meanwhile. A stop reported as
    drift (`drifted`: the generation it drifted from) is adopted with it."""
    try:
        source, spec, _ = await vmrecords.load(store, uuid)
    except (NotFound, Conflict):
        return
    move = spec.migrate_to
    if move is None or move.id != migration_id or host != (source if fact in ("released", "kept") else move.host):
        return
    if fact == "kept":
        stopped = state in ("Stopped", "Crashed")
        if (move.abort or stopped) and not move.arrived:
            await _kept(store, uuid, move, drifted if stopped else None)
        return
    if not getattr(move, fact):
        async def mark(s: VmSpec, txn: Txn) -> None:
            if s.migrate_to is None or s.migrate_to.id != migration_id:
                raise Conflict(f"VM {uuid}: live migration {migration_id} is over")
            setattr(s.migrate_to, fact, True)
        try:
            move = (await vmrecords.update(store, uuid, mark))[1].migrate_to
        except Conflict:
            return
    if move is not None and move.released and move.arrived:
        await _complete(store, uuid, move)


async def _kept(store: Store, uuid: str, move: LiveMigration, drifted: int | None) -> None:
    """The move ends with the VM on its source, running (called off) or stopped; a stop reported as drift from
    generation `drifted` becomes its desired state as vmrecords.adopt makes it, unless the VM changed since (the
    source reports the stop again against the newer spec: a newer intent is not overwritten)."""
    async def mutate(s: VmSpec, txn: Txn) -> None:
        now = s.migrate_to
        if now is None or now.id != move.id or now.arrived:
            raise Conflict(f"VM {uuid}: live migration {move.id} is over or arrived")
        if drifted is not None:
            if s.generation != drifted:
                raise Conflict(f"VM {uuid} changed since its source reported it stopped")
            s.state = "Stopped"
        _call_off(s, txn)
    try:
        await vmrecords.update(store, uuid, mutate)
    except Conflict:
        return


async def _complete(store: Store, uuid: str, move: LiveMigration) -> None:
    """The target is the VM's host now: its copy becomes the VM (shared volumes follow), the source's goes."""
    async def mutate(s: VmSpec, txn: Txn) -> None:
        if s.migrate_to is None or s.migrate_to.id != move.id:
            raise Conflict(f"VM {uuid}: live migration {move.id} is over")
        s.migrate_to = None
        await vmdisks.follow(store, txn, s, move.host)
    try:
        await vmrecords.update(store, uuid, mutate, new_host=move.host)
    except Conflict:
        return
