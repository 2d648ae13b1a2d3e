"""VMs: create (placement, addresses, DNS records, system tags, all in one transaction), destroy,
power actions, ISO, boot order, modes, volumes, cold migration, the console address, and the views
that join desired and observed state. Each call records intent; `wait_*` wait for the observed result.
"""

from __future__ import annotations

import time
import uuid as uuidlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator

from agentkit.errors import Invalid, NotFound, TooLarge
from agentkit.model import (
    BootDevice,
    CacheMode,
    ConsoleMode,
    CpuMode,
    FileDisk,
    IsoSpec,
    KernelBoot,
    L3Spec,
    Mac,
    NicSpec,
    RbdDisk,
    Service,
    VmSpec,
    VolumeDisk,
    VolumeSpec,
    stream_key_l3,
    stream_key_vm,
)
from agentkit.paths import FilePath
from coordinator.domain import hostmemory, hosts, ipam, macs, placement, tags, vmnics, vmrecords
from coordinator.domain.ceph import volumes as ceph_volumes
from coordinator.domain.errors import InvalidState, IpExhausted, IpInUse, NotRunning
from coordinator.domain.fields import Name, Ref
from coordinator.domain.filestorage import migration, vmdisks
from coordinator.domain.vmfiles import Files
from coordinator.etcd import keys
from coordinator.etcd.cas import retry_cas
from coordinator.etcd.hints import Hints
from coordinator.etcd.store import Store, Txn
from coordinator.etcd.waiting import wait_observed

MAX_DATA_VOLUMES = 16
Disk = Annotated[FileDisk | RbdDisk, Field(discriminator="kind")]
Action = Literal["start", "stop", "reboot", "pause", "resume"]
MAX_TXN_OPS = 128  # etcd's default --max-txn-ops: the most operations (and compares) one transaction may hold
PowerState = Literal["Running", "Stopped", "Paused"]
UNKNOWN = "Unknown"  # the observed state shown while a VM's host is Disconnected
REQUEST_KEYS = uuidlib.UUID("5e0c4c7e-7d38-4e0f-9c55-1f0c2b7a9d11")  # namespace of VM uuids made from request keys
ACTIONS: dict[Action, PowerState] = {"start": "Running", "stop": "Stopped", "pause": "Paused", "resume": "Running",
                                     "reboot": "Running"}


class VmCreate(BaseModel):
    name: Name
    cpu: int = Field(1, ge=1, le=256)
    memory_mb: int = Field(256, ge=32, le=4 << 20)
    l3_network_uuids: list[Ref] = Field([], max_length=16)
    default_l3_uuid: Ref | None = None
    fixed_ips: dict[Ref, Annotated[str, Field(max_length=15)]] = Field({}, description="L3 uuid -> requested IP")
    fixed_macs: dict[Ref, Mac] = Field({}, description="L3 uuid -> requested MAC (default: random fa:16:3e:…)")
    host_uuid: Ref | None = Field(None, description="explicit placement (uuid or name)")
    state: Literal["Running", "Stopped"] = "Running"
    root_volume: Disk | None = Field(None, description="an existing disk (a Ceph volume's, or a raw qcow2 path: "
                                     "the expert option, confined to its storage's directory)")
    data_volumes: list[Disk] = Field([], max_length=MAX_DATA_VOLUMES)
    primary_storage_uuid: Ref | None = Field(None, description="LocalStorage or SharedMountPoint for the volumes "
                                             "made from image_uuid, data_disks and iso_uuid (default: the only one)")
    root_size: int | None = Field(None, gt=0, le=1 << 50, description="bytes of the root volume made from "
                                  "image_uuid (at least the image's size) or for an ISO install (default 10 GiB)")
    data_disks: list[Annotated[int, Field(gt=0, le=1 << 50)]] = Field(
        [], max_length=MAX_DATA_VOLUMES, description="sizes in bytes of blank data volumes to make")
    iso_uuid: Ref | None = Field(None, description="boot from this ISO image: CdRom first, HardDisk after install")
    iso_path: FilePath | None = Field(None, description="the same from a raw path on the host (expert option)")
    kernel: KernelBoot | None = None
    boot_order: list[BootDevice] | None = None
    cpu_mode: CpuMode | None = None
    cache_mode: CacheMode | None = None
    console_mode: ConsoleMode | None = None
    image_uuid: Ref | None = Field(None, description="a root volume made from this image (without root_volume)")
    system_tags: list[str] = Field([], max_length=tags.MAX_TAGS)

    @model_validator(mode="after")
    def _default_l3(self) -> VmCreate:
        if len(set(self.l3_network_uuids)) != len(self.l3_network_uuids):
            raise ValueError("l3_network_uuids: an L3 network may appear once")
        if self.l3_network_uuids and self.default_l3_uuid is None:
            self.default_l3_uuid = self.l3_network_uuids[0]
        if self.default_l3_uuid and self.default_l3_uuid not in self.l3_network_uuids:
            raise ValueError("default_l3_uuid: must be one of l3_network_uuids")
        for name, given in (("fixed_ips", self.fixed_ips), ("fixed_macs", self.fixed_macs)):
            for l3 in given:
                if l3 not in self.l3_network_uuids:
                    raise ValueError(f"{name}: {l3} is not in l3_network_uuids")
        if self.iso_uuid and self.iso_path:
            raise ValueError("iso_uuid: give an ISO image or a raw iso_path, not both")
        if any(size <= 0 for size in self.data_disks):
            raise ValueError("data_disks: sizes are positive byte counts")
        return self

    def files(self) -> Files:
        """The files it names, by request field."""
        disks = {"root_volume": self.root_volume} if self.root_volume else {}
        return Files({**disks, **{f"data_volumes.{i}": d for i, d in enumerate(self.data_volumes)}},
                     self.iso_path, self.kernel)

    def holds(self) -> int:
        """MiB of its host's memory it takes once created (none if created Stopped: its start asks again)."""
        return hostmemory.held(self.state, self.memory_mb)

    def storage(self) -> vmdisks.Wanted:
        """What it asks of file-based primary storage."""
        raw = self.root_volume if isinstance(self.root_volume, FileDisk) else None
        return vmdisks.Wanted(self.name, self.primary_storage_uuid, None if self.root_volume else self.image_uuid,
                              self.root_size, list(self.data_disks), self.iso_uuid, raw)


@dataclass(frozen=True)
class VmView:
    """A VM's desired state joined with what its host observed (the VM, and its NICs' DHCP leases)."""

    host: str
    spec: VmSpec
    observed: dict[str, Any] | None = None
    leases: dict[str, Any] = field(default_factory=dict)


def _record(value: object) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


async def _l3s(store: Store, hints: Hints, body: VmCreate, txn: Txn, fresh: bool) -> dict[str, L3Spec]:
    """Each requested L3, guarded in `txn` (a first try uses the cached ones)."""
    out = {}
    for l3_uuid in body.l3_network_uuids:
        entry = await hints.get(store, keys.desired_all(stream_key_l3(l3_uuid)), fresh)
        if entry is None:
            hints.forget_l3(l3_uuid)
            raise Invalid(f"L3 network {l3_uuid} does not exist", field="l3_network_uuids")
        hints.guard(txn, entry)
        out[l3_uuid] = L3Spec.model_validate(entry.value)
    return out


@dataclass
class _Attempt:
    """What one try of a (batch) creation has chosen so far, shared by its VMs."""

    txn: Txn
    fresh: bool
    macs: dict[str, set[str]] = field(default_factory=dict)  # L2 -> MACs this transaction claims


async def _nics(store: Store, body: VmCreate, name: str, vm_uuid: str, l3s: dict[str, L3Spec], at: _Attempt,
                hints: Hints, picked: dict[tuple[str, str], str]) -> list[NicSpec]:
    """The VM's NICs, their addresses, MACs (and DNS records) claimed in the attempt's transaction. An address
    the last attempt picked for this VM and L3 (`picked`) is kept unless it is known taken; a new one comes by
    next fit from this replica's cursor (from a random place after a lost race), past the addresses known
    taken and the ones picked since. A MAC is
    unique on its L2 (`macs`): a first try reads nothing, the claim's compare catches a collision."""
    nics = []
    for i, l3_uuid in enumerate(body.l3_network_uuids):
        l3, taken = l3s[l3_uuid], hints.taken_on(l3_uuid)
        fixed = body.fixed_ips.get(l3_uuid)
        if fixed:  # even a known taken one: the CAS decides
            ipam.check_fixed(l3, fixed, "fixed_ips")
            ip = fixed
        else:
            ip = picked.get((vm_uuid, l3_uuid), "")
            if not ip or ip in taken:
                # after a lost race the cursor jumps: two next-fit cursors that met would collide on every
                # address after it (each loser moving to the address the winner takes next)
                start = None if at.fresh else hints.cursor.get(l3_uuid)
                ip = await _next_ip(store, hints, l3, start, set(picked.values()))
        picked[(vm_uuid, l3_uuid)] = ip
        on_l2 = at.macs.setdefault(l3.l2_uuid, set())
        mac = await macs.pick(store, l3.l2_uuid, body.fixed_macs.get(l3_uuid), at.fresh, on_l2)
        on_l2.add(mac)
        nic = NicSpec(uuid=uuidlib.uuid4().hex, l3_uuid=l3_uuid, ip=ip, default=l3_uuid == body.default_l3_uuid,
                      device_index=i, mac=mac)
        vmnics.claim(at.txn, vm_uuid, name, l3, nic)
        nics.append(nic)
    return nics


async def _next_ip(store: Store, hints: Hints, l3: L3Spec, start: int | None, picked: set[str]) -> str:
    """Next fit past the addresses known taken and `picked`. Where the hint leaves none, past those taken now: the
    hint only learns addresses taken, so those of VMs deleted since are free again (a replica refused every VM
    on an L3 once it had made and deleted as many VMs as it has addresses)."""
    try:
        ip, hints.cursor[l3.uuid] = ipam.next_free(l3, start, hints.taken_on(l3.uuid), picked)
    except IpExhausted:
        taken = hints.learn_taken(l3.uuid, await ipam.taken(store, l3.uuid))
        ip, hints.cursor[l3.uuid] = ipam.next_free(l3, start, taken, picked)
    return ip


async def _hosts(store: Store, hints: Hints, body: VmCreate, txn: Txn, fresh: bool, heartbeat_timeout: float,
                 count: int) -> placement.Placed:
    """The explicit host (guarded in `txn`, its memory checked) for each VM, or where placement puts them."""
    if body.host_uuid:
        entry = await hints.get(store, keys.host(body.host_uuid), fresh)
        host = hosts.Host.model_validate(entry.value) if entry else None
        if entry is not None and host is not None and host.kind == "kvm":
            memory = await hostmemory.admitted(store, host, body.holds() * count)
            hints.guard(txn, entry)
            return placement.Placed([body.host_uuid] * count, [memory] if memory else [])
    return await placement.place_many(store, body.host_uuid, heartbeat_timeout, count, body.holds())


async def _hold_volumes(store: Store, txn: Txn, files: Files) -> None:
    """The Ceph volumes of the RBD disks a request names, held in `txn` (a volume being deleted is refused)."""
    for where, disk in files.disks.items():
        if isinstance(disk, RbdDisk):
            await ceph_volumes.guard_use(store, txn, disk, where)


def desired_spec(uuid: str, body: VmCreate, nics: list[NicSpec], name: str | None = None,
                 planned: vmdisks.Planned | None = None) -> VmSpec:
    """The desired object of a new VM (named `name`, default the body's): its volumes numbered (those
    `planned` on file-based storage included), an ISO booted first, its tags rendered."""
    made = planned.volumes() if planned else []
    volumes = ([VolumeSpec(uuid=uuidlib.uuid4().hex, role="root", disk=body.root_volume)] if body.root_volume
               else []) + made + [VolumeSpec(uuid=uuidlib.uuid4().hex, disk=d, device_index=len(made) + i + 1)
                                  for i, d in enumerate(body.data_volumes)]
    iso = planned.iso if planned and planned.iso else (
        IsoSpec(uuid=uuidlib.uuid4().hex, path=body.iso_path) if body.iso_path else None)
    boot = body.boot_order or ([BootDevice.CDROM, BootDevice.HARDDISK] if iso else [BootDevice.HARDDISK])
    spec = VmSpec(uuid=uuid, name=name or body.name, cpu=body.cpu, memory_mb=body.memory_mb, state=body.state,
                  nics=nics, volumes=volumes, boot_order=boot, kernel=body.kernel, cpu_mode=body.cpu_mode,
                  cache_mode=body.cache_mode, console_mode=body.console_mode, image_uuid=body.image_uuid, cdrom=iso)
    tags.render(spec, body.system_tags)
    return spec


def _check_fits(body: VmCreate, count: int, l3s: list[L3Spec], guards: int, claims: int) -> None:
    """`count` such VMs must fit one transaction (`MAX_TXN_OPS` operations and as many compares), with `guards`
    compares and `claims` memory claims (a compare and a put each) besides."""
    ops = 2 + len(body.system_tags) + sum(3 if {Service.DNS, Service.DHCP} & set(l3.services) else 2 for l3 in l3s)
    compares = 1 + 2 * len(l3s)  # the VM's index, and an address and a MAC per NIC
    fits = min((MAX_TXN_OPS - claims) // ops, (MAX_TXN_OPS - guards - claims) // compares)
    if count > fits:
        raise Invalid(f"{count} such VMs do not fit one transaction: at most {fits}", field="count")


async def create(store: Store, hints: Hints, body: VmCreate, heartbeat_timeout: float, roots: Sequence[str],
                 request_key: str | None = None) -> tuple[str, VmSpec]:
    """Place, address and record a VM (with its tags and DNS records) in one transaction; its host's
    agent makes it real. Returns the host and the desired object.

    With a `request_key` (the caller's Idempotency-Key) the VM's uuid derives from it, so a request
    sent again (to this replica or another, after a lost answer) finds the VM it created and returns
    it instead of creating a second one."""
    return (await create_many(store, hints, body, 1, heartbeat_timeout, roots, request_key))[0]


async def create_many(store: Store, hints: Hints, body: VmCreate, count: int, heartbeat_timeout: float,
                      roots: Sequence[str], request_key: str | None = None) -> list[tuple[str, VmSpec]]:
    """`count` VMs alike (named `<name>-1` … when more than one) in one transaction: all or none. One
    request, one read of each L3 and one commit for all of them; etcd bounds a transaction (`MAX_TXN_OPS`)."""
    if count > 1 and (body.fixed_ips or body.fixed_macs):
        raise Invalid("fixed IPs and MACs are for one VM: create it alone", field="count")
    for tag in body.system_tags:
        tags.check(tag, "system_tags")
    tags.check_set(body.system_tags, "system_tags")
    body.files().check(roots)
    uuids = [uuidlib.uuid5(REQUEST_KEYS, f"{request_key}/{i}" if i else request_key).hex if request_key
             else uuidlib.uuid4().hex for i in range(count)]
    names = [body.name] if count == 1 else [f"{body.name}-{i}" for i in range(1, count + 1)]
    picked: dict[tuple[str, str], str] = {}  # (VM, L3) -> the address the last attempt picked

    want = body.storage()
    if count > 1 and want.any:
        raise Invalid("VMs whose volumes are made with them (image_uuid, data_disks, iso_uuid) are created one at "
                      "a time", field="count")

    async def attempt(n: int) -> list[tuple[str, VmSpec]] | None:
        txn = Txn()
        if want.any and request_key and await store.get(keys.vm_index(uuids[0])):  # made (and reserved) before
            return [(host, spec) for host, spec, _ in [await vmrecords.load(store, uuids[0])]]
        planned = await vmdisks.plan(store, want, body.host_uuid, heartbeat_timeout, body.holds()) if want.any \
            else None
        placed = planned.placed if planned else await _hosts(store, hints, body, txn, n > 0, heartbeat_timeout, count)
        l3s = await _l3s(store, hints, body, txn, n > 0)
        await _hold_volumes(store, txn, body.files())
        _check_fits(body, count, list(l3s.values()), len(txn.compares) + placed.guards, placed.claims)
        at = _Attempt(txn, n > 0)
        out = []
        placed.claim(txn)  # a host deleted since placement read it, or two placements on one host at once
        # (the later one counts again, hostmemory.py): the commit fails, the VMs are placed again
        for uuid, name, host in zip(uuids, names, placed.hosts, strict=True):
            spec = desired_spec(uuid, body, await _nics(store, body, name, uuid, l3s, at, hints, picked), name,
                                planned)
            if planned:
                planned.write(txn, uuid)
            for tag in body.system_tags:
                t = tags.new(uuid, tag)
                txn.put(tags.key(uuid, t.uuid), t.model_dump())
            txn.absent(keys.vm_index(uuid)).put(keys.vm_index(uuid), {"host": host})
            txn.put(keys.desired_for(host, stream_key_vm(uuid)), spec.model_dump(mode="json"))
            out.append((host, spec))
        if await store.commit(txn) is not None:
            for (_, l3_uuid), ip in picked.items():
                hints.taken_on(l3_uuid).add(ip)
            return out
        for l3_uuid in body.l3_network_uuids:  # a collision, or a stale hint: learn what is taken
            hints.learn_taken(l3_uuid, await ipam.taken(store, l3_uuid))
        if request_key and await store.get(keys.vm_index(uuids[0])):  # created by an earlier send of this request
            return [(host, spec) for host, spec, _ in [await vmrecords.load(store, u) for u in uuids]]
        for l3_uuid, ip in body.fixed_ips.items():
            if ip in hints.taken_on(l3_uuid):
                raise IpInUse(f"{ip} is already in use", field="fixed_ips")
        return None
    return await retry_cas(attempt, f"IP allocation for VM {body.name}")


async def destroy(store: Store, uuid: str) -> tuple[str, VmSpec]:
    """Remove the VM's intent; its addresses, DNS records, leases and tags go now, its EIP is freed.
    The host removes the VM (also when it comes back later); so does the target of a live migration under
    way, whose copy goes in the same transaction (while the source's is unchanged, that copy is this move's)."""
    async def attempt(_: int) -> tuple[str, VmSpec] | None:
        host, spec, entry = await vmrecords.load(store, uuid)
        txn = Txn().unchanged(entry.key, entry.mod_revision).delete(entry.key).delete(keys.vm_index(spec.uuid))
        if spec.migrate_to is not None:
            txn.delete(keys.desired_for(spec.migrate_to.host, stream_key_vm(spec.uuid)))
        for nic in spec.nics:
            await vmnics.release(store, txn, nic)
        txn.delete(f"{keys.TAGS}{spec.uuid}/", prefix=True)
        await vmdisks.on_destroy(store, txn, spec)
        return (host, spec) if await store.commit(txn) is not None else None
    return await retry_cas(attempt, f"VM {uuid}")


async def act(store: Store, uuid: str, action: Action) -> tuple[str, VmSpec]:
    """start / stop / reboot / pause / resume: the desired power state (a reboot also bumps `reboot_seq`).
    Only a start gives a stopped VM its memory back (and waits for its volumes), so a stopped VM neither
    pauses nor resumes."""
    async def mutate(spec: VmSpec, txn: Txn) -> None:
        if action in ("pause", "resume") and spec.state == "Stopped":
            raise InvalidState(f"VM {spec.name} is Stopped; only a running or paused VM can {action}: start it")
        if action in ("start", "resume"):
            await vmdisks.check_idle(store, spec)
        if action == "start" and spec.state == "Stopped":  # it takes its memory back on its host
            host = await hosts.load(store, await vmrecords.locate(store, spec.uuid))
            await hostmemory.take(store, txn, host, spec.memory_mb)
        if action == "reboot":
            if spec.state != "Running":
                raise InvalidState(f"VM {spec.name} is {spec.state}; only a running VM reboots")
            spec.reboot_seq += 1
        spec.state = ACTIONS[action]
    return await vmrecords.update(store, uuid, mutate)


async def set_cdrom(store: Store, uuid: str, iso_path: str | None, roots: Sequence[str], iso_uuid: str | None = None
                    ) -> tuple[str, VmSpec]:
    """Insert an ISO image (fetched into the cache of the VM's storage) or a raw ISO path, or eject (both
    None); live; the boot order does not change."""
    Files(iso=iso_path).check(roots)

    async def mutate(spec: VmSpec, txn: Txn) -> None:
        if iso_uuid:  # cached where the VM is as of this try: it may have moved since the last one
            spec.cdrom = await vmdisks.iso(store, spec, await vmrecords.locate(store, uuid), iso_uuid)
        else:
            spec.cdrom = IsoSpec(uuid=uuidlib.uuid4().hex, path=iso_path) if iso_path else None
    return await vmrecords.update(store, uuid, mutate)


async def set_boot_order(store: Store, uuid: str, order: list[BootDevice]) -> tuple[str, VmSpec]:
    if len(set(order)) != len(order):
        raise Invalid("a boot device may appear once", field="order")

    async def mutate(spec: VmSpec, txn: Txn) -> None:
        spec.boot_order = order
    return await vmrecords.update(store, uuid, mutate)


async def boot_order(store: Store, uuid: str) -> dict[str, list[str]]:
    """The order the VM boots in (seed GetVmBootOrder): as its host reports it (HardDisk first once an ISO
    install rebooted), else the desired one; and the desired one."""
    _, spec, _ = await vmrecords.load(store, uuid)
    obs = await observed(store, spec.uuid)
    reported = obs.get("boot_order") if obs else None
    desired = [d.value for d in spec.boot_order]
    return {"order": reported if isinstance(reported, list) else desired, "desired": desired}


async def set_modes(store: Store, uuid: str, modes: Mapping[str, str | None]) -> tuple[str, VmSpec]:
    """Per-VM cpu/cache/console modes given in `modes` (None: follow the global config)."""
    async def mutate(spec: VmSpec, txn: Txn) -> None:
        for k, v in modes.items():
            setattr(spec, k, v)
    return await vmrecords.update(store, uuid, mutate)


async def attach_volume(store: Store, uuid: str, disk: FileDisk | RbdDisk | None, roots: Sequence[str],
                        volume_uuid: str | None = None) -> tuple[str, VmSpec]:
    """A data volume at the first free device index (live when the VM runs): a disk, or a volume of
    LocalStorage or SharedMountPoint by uuid."""
    if disk is not None:
        Files({"disk": disk}).check(roots)

    async def mutate(spec: VmSpec, txn: Txn) -> None:
        host = await vmrecords.locate(store, uuid)  # as of this try: the VM may have moved since the last one
        if sum(v.role == "data" for v in spec.volumes) >= MAX_DATA_VOLUMES:
            raise TooLarge(f"VM {spec.name} has {MAX_DATA_VOLUMES} data volumes, the most a VM has", field="disk")
        used = {v.device_index for v in spec.volumes}
        index = next(i for i in range(1, MAX_DATA_VOLUMES + 2) if i not in used)
        if volume_uuid:
            spec.volumes.append(await vmdisks.attach(store, txn, spec, host, volume_uuid, index))
        elif disk is not None:
            await _hold_volumes(store, txn, Files({"disk": disk}))
            spec.volumes.append(VolumeSpec(uuid=uuidlib.uuid4().hex, disk=disk, device_index=index))
        else:
            raise Invalid("give a disk or a volume_uuid", field="disk")
    return await vmrecords.update(store, uuid, mutate)


async def detach_volume(store: Store, uuid: str, volume: str) -> tuple[str, VmSpec]:
    async def mutate(spec: VmSpec, txn: Txn) -> None:
        match = [v for v in spec.volumes if v.uuid == volume and v.role == "data"]
        if not match:
            raise NotFound(f"VM {spec.name} has no data volume {volume}")
        spec.volumes.remove(match[0])
        if isinstance(match[0].disk, VolumeDisk):
            await vmdisks.detach(store, txn, volume)
    return await vmrecords.update(store, uuid, mutate)


async def migrate(store: Store, uuid: str, host_ref: str, heartbeat_timeout: float) -> tuple[str, VmSpec]:
    """Cold: the VM's desired object moves to the other host's view, which recreates it (its EIP and its
    SharedMountPoint volumes follow). A stopped VM with LocalStorage volumes waits where it is while they
    are copied (filestorage/migration.py) and follows them; a running one is refused (409). A move to the
    host it is on is refused, as a live one is: it would change nothing."""
    host, spec, _ = await vmrecords.load(store, uuid)
    target = await placement.place(store, host_ref, heartbeat_timeout, hostmemory.needs(spec))
    if spec.migrate_to is not None:
        raise _moving_live(spec)
    if target == host:
        raise InvalidState(f"VM {spec.name} is on {await hosts.title_of(store, host)} already", field="host_uuid")
    if await migration.migrate_vm(store, uuid, target):
        host, spec, _ = await vmrecords.load(store, uuid)
        return host, spec

    async def volumes_follow(spec: VmSpec, txn: Txn) -> None:
        if spec.migrate_to is not None:  # a live move begun since it was read (on any replica)
            raise _moving_live(spec)
        await vmdisks.follow(store, txn, spec, target)
        await hostmemory.take(store, txn, await placement.guarded(store, txn, target), hostmemory.needs(spec))
    return await vmrecords.update(store, uuid, volumes_follow, new_host=target)


def _moving_live(spec: VmSpec) -> InvalidState:
    """The refusal of a cold move of a VM that moves live."""
    return InvalidState(f"{vmrecords.title(spec)} is moving live: wait for it to arrive, or call the move off "
                        "(cancel-migration)", field="host_uuid")


async def console(store: Store, uuid: str) -> dict[str, Any]:
    """The VM's consoles (graphics protocol, the kinds there are) and its host's address, while it runs.
    Consoles listen on unix sockets on the host: clients get in through a console proxy (consoles.py)."""
    host, spec, _ = await vmrecords.load(store, uuid)
    obs = await observed(store, spec.uuid)
    con = _record(obs.get("console")) if obs else None
    if not obs or not con or obs.get("state") != "Running":
        raise NotRunning(f"VM {spec.name} has no console until it runs")
    return {**con, "host": (await hosts.load(store, host)).address}


async def observed(store: Store, uuid: str) -> dict[str, Any] | None:
    entry = await store.get(keys.observed("vm", uuid))
    return _record(entry.value) if entry else None


async def seen(store: Store, host: str, uuid: str, heartbeat_timeout: float) -> dict[str, Any] | None:
    """The VM's observed state as views show it (Unknown while `host` is Disconnected), in one read."""
    obs, alive = await store.get_many([keys.observed("vm", uuid), keys.alive(host)])
    return _as_seen(obs.value if obs else None, hosts.beat_of(alive.value) if alive else None, heartbeat_timeout,
                    time.time())


async def wait_state(store: Store, uuid: str, state: str, generation: int, timeout: float) -> bool:
    """True once the host reports the VM in `state` with spec `generation` applied (False after `timeout`
    seconds): a state reported before that (running, from before a stop that still takes it down) is
    no answer. A report without `applied` (an agent of an older release) is taken by its state alone."""
    def reached(v: object) -> bool:
        if not isinstance(v, dict) or v.get("state") != state:
            return False
        applied = v.get("applied")
        return not isinstance(applied, int) or applied >= generation
    return await wait_observed(store, keys.observed("vm", uuid), reached, timeout)


async def wait_rebooted(store: Store, uuid: str, seq: int, timeout: float) -> bool:
    """True once the host reports reboot request `seq` applied (False after `timeout` seconds)."""
    def applied(v: object) -> bool:
        return isinstance(v, dict) and isinstance(v.get("reboot_seq"), int) and v["reboot_seq"] >= seq
    return await wait_observed(store, keys.observed("vm", uuid), applied, timeout)


async def wait_gone(store: Store, uuid: str, timeout: float) -> bool:
    """True once the host reports the VM destroyed."""
    return await wait_observed(store, keys.observed("vm", uuid),
                               lambda v: v is None or (isinstance(v, dict) and v.get("state") == "Destroyed"), timeout)


def _as_seen(observed: object, beat: float | None, heartbeat_timeout: float, now: float) -> dict[str, Any] | None:
    """What the host reported, or while the host is Disconnected state `Unknown` (the seeds' VM state on a
    host that does not answer): its last report may be long out of date, whatever happened to the guest
    since. The state it reported stays as `reported_state`."""
    found = _record(observed)
    if found is None or hosts.state_of(beat, heartbeat_timeout, now) == "Connected":
        return found
    return {**found, "state": UNKNOWN, "reported_state": found.get("state")}


async def view(store: Store, uuid: str, heartbeat_timeout: float) -> VmView:
    """One VM with its observed state (Unknown while its host is Disconnected) and leases (one consistent
    read)."""
    host, spec, _ = await vmrecords.load(store, uuid)
    prefixes = [keys.observed("vm", spec.uuid), keys.alive(host), *(keys.observed("lease", n.uuid) for n in spec.nics)]
    snap, _ = await store.snapshot(prefixes)  # each prefix is a whole key
    found = {e.key: e.value for p in prefixes for e in snap[p] if e.key == p}
    leases = {n.uuid: found[p] for n, p in zip(spec.nics, prefixes[2:], strict=True) if p in found}
    seen = _as_seen(found.get(prefixes[0]), hosts.beat_of(found.get(prefixes[1])), heartbeat_timeout, time.time())
    return VmView(host, spec, seen, leases)


async def views(store: Store, heartbeat_timeout: float, host_uuid: str | None = None) -> list[VmView]:
    """Every VM (or those placed on `host_uuid`, whose desired state alone is read) with its observed state
    (Unknown while its host is Disconnected) and leases (one consistent read, not one per VM)."""
    desired_prefix = keys.desired_host(host_uuid) if host_uuid else keys.DESIRED_HOSTS
    prefixes = [keys.VM_INDEX, keys.observed("vm", ""), keys.observed("lease", ""), keys.ALIVE, desired_prefix]
    snap, _ = await store.snapshot(prefixes)
    obs = {e.key.rsplit("/", 1)[1]: e.value for e in snap[prefixes[1]]}
    leases = {e.key.rsplit("/", 1)[1]: e.value for e in snap[prefixes[2]]}
    beats = {e.key[len(keys.ALIVE):]: hosts.beat_of(e.value) for e in snap[keys.ALIVE]}
    desired = {e.key: e.value for e in snap[desired_prefix]}
    now = time.time()
    out = []
    for e in snap[keys.VM_INDEX]:
        uuid, host = e.key.rsplit("/", 1)[1], vmrecords.host_of(e.value)
        raw = desired.get(keys.desired_for(host, stream_key_vm(uuid)))
        if raw:
            spec = VmSpec.model_validate(raw)
            out.append(VmView(host, spec, _as_seen(obs.get(uuid), beats.get(host), heartbeat_timeout, now),
                              {n.uuid: leases[n.uuid] for n in spec.nics if n.uuid in leases}))
    return out
