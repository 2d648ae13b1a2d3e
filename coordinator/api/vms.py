"""VMs: create with NICs (IPs allocated by CAS), lifecycle, cdrom/ISO, boot order, volumes, modes,
console address, migration. Each call records intent at once; `?wait=` waits for the observed result.
"""

from __future__ import annotations

import random
import uuid as uuidlib
from typing import Annotated, Literal

from aiohttp import web
from pydantic import BaseModel, Field, model_validator

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
    VolumeSpec,
    stream_key_dns,
    stream_key_l3,
    stream_key_vm,
)
from coordinator.api.appkeys import HINTS, SETTINGS, STORE
from coordinator.api.hosts import NAME
from coordinator.api.http import ApiError, Routes
from coordinator.domain import ipam, vms
from coordinator.etcd import keys
from coordinator.etcd.store import Txn
from coordinator.etcd.waiting import WaitQuery, pending, wait_observed

routes = Routes("vms")
Disk = Annotated[FileDisk | RbdDisk, Field(discriminator="kind")]


class VmCreate(BaseModel):
    name: str = Field(pattern=NAME)
    cpu: int = Field(1, ge=1, le=256)
    memory_mb: int = Field(256, ge=32, le=4 << 20)
    l3_network_uuids: list[str] = Field([], max_length=16)
    default_l3_uuid: str | None = None
    fixed_ips: dict[str, str] = Field({}, description="L3 uuid -> requested IP")
    fixed_macs: dict[str, Mac] = Field({}, description="L3 uuid -> requested MAC (default: random fa:16:3e:…)")
    host_uuid: str | None = Field(None, description="explicit placement (uuid or name)")
    state: Literal["Running", "Stopped"] = "Running"
    root_volume: Disk | None = None
    data_volumes: list[Disk] = Field([], max_length=16)
    iso_path: str | None = Field(None, description="boot from this ISO: CdRom first, HardDisk after install")
    kernel: KernelBoot | None = None
    boot_order: list[BootDevice] | None = None
    cpu_mode: CpuMode | None = None
    cache_mode: CacheMode | None = None
    console_mode: ConsoleMode | None = None
    image_uuid: str | None = None
    system_tags: list[str] = Field([], max_length=32)

    @model_validator(mode="after")
    def _default_l3(self) -> VmCreate:
        if len(set(self.l3_network_uuids)) != len(self.l3_network_uuids):
            raise ValueError("l3_network_uuids: an L3 network may appear once")
        if self.l3_network_uuids and self.default_l3_uuid is None:
            self.default_l3_uuid = self.l3_network_uuids[0]
        if self.default_l3_uuid and self.default_l3_uuid not in self.l3_network_uuids:
            raise ValueError("default_l3_uuid must be one of l3_network_uuids")
        for field, given in (("fixed_ips", self.fixed_ips), ("fixed_macs", self.fixed_macs)):
            for l3 in given:
                if l3 not in self.l3_network_uuids:
                    raise ValueError(f"{field}: {l3} is not in l3_network_uuids")
        return self


class LeaseOut(BaseModel):
    """What the host's DHCP server saw of a NIC: the address bound, released or declined, and when."""

    state: Literal["bound", "released", "declined"]
    ip: str
    mac: str
    l3_uuid: str
    at: float


class VmOut(BaseModel):
    uuid: str
    host_uuid: str
    spec: VmSpec
    observed: dict | None = None
    leases: dict[str, LeaseOut] = Field(default_factory=dict, description="by NIC uuid; NICs on L3s "
                                        "without our DHCP, or whose guest has not asked yet, have none")
    pending: str | None = None


class VmList(BaseModel):
    vms: list[VmOut]


class VmAction(BaseModel):
    action: Literal["start", "stop", "reboot", "pause", "resume"]


class CdromSet(BaseModel):
    iso_path: str | None = Field(None, description="ISO to insert; null ejects")


class BootOrder(BaseModel):
    order: list[BootDevice] = Field(min_length=1, max_length=2)


class VmModes(BaseModel):
    cpu_mode: CpuMode | None = None
    cache_mode: CacheMode | None = None
    console_mode: ConsoleMode | None = None


class VolumeAttach(BaseModel):
    disk: Disk


class Migrate(BaseModel):
    host_uuid: str


class Console(BaseModel):
    host: str
    port: int
    protocol: ConsoleMode


def _expect(state: str):
    return lambda v: isinstance(v, dict) and v.get("state") == state


async def _respond(request: web.Request, uuid: str, host: str, spec: VmSpec, status: int, want: str):
    """The recorded intent at once, or with `?wait=` the observed result (202 when still pending)."""
    query = WaitQuery.model_validate(dict(request.query))
    store = request.app[STORE]
    key = keys.observed("vm", uuid)
    done = await wait_observed(store, key, _expect(want), query.wait) if query.wait else True
    obs = await store.get(key)
    out = VmOut(uuid=uuid, host_uuid=host, spec=spec, observed=obs.value if obs else None)
    return pending(status, out.model_dump(mode="json"), done, f"state {want}")


async def _nics(request: web.Request, body: VmCreate, vm_uuid: str, txn: Txn, fresh: bool) -> list[NicSpec]:
    """NICs with addresses claimed in `txn`. A first try uses cached L3s and random picks without
    reading the taken set; the CAS catches a stale L3 or a collision and the retry reads fresh."""
    store, hints = request.app[STORE], request.app[HINTS]
    nics = []
    for i, l3_uuid in enumerate(body.l3_network_uuids):
        entry = await hints.get(store, keys.desired_all(stream_key_l3(l3_uuid)), fresh)
        if entry is None:
            raise ApiError(400, "invalid", f"L3 network {l3_uuid} does not exist", "l3_network_uuids")
        hints.guard(txn, entry)
        l3 = L3Spec.model_validate(entry.value)
        fixed = body.fixed_ips.get(l3_uuid)
        if fixed:
            ipam.check_fixed(l3, fixed, "fixed_ips")
            ip = fixed
        else:
            ip = ipam.pick(l3, await ipam.taken(store, l3_uuid) if fresh else set())
        nic = NicSpec(uuid=uuidlib.uuid4().hex, l3_uuid=l3_uuid, ip=ip, default=l3_uuid == body.default_l3_uuid,
                      device_index=i, mac=body.fixed_macs.get(l3_uuid)
                      or "fa:16:3e:" + ":".join(f"{b:02x}" for b in random.randbytes(3)))
        ipam.claim(txn, l3_uuid, ip, {"vm": vm_uuid, "nic": nic.uuid})
        if Service.DNS in l3.services or Service.DHCP in l3.services:
            txn.put(keys.desired_all(stream_key_dns(l3_uuid, nic.uuid)),
                    {"l3_uuid": l3_uuid, "name": body.name, "ip": ip})
        nics.append(nic)
    return nics


async def _host(request: web.Request, body: VmCreate, txn: Txn, fresh: bool) -> str:
    """The explicit host (guarded in `txn`), or the least-loaded connected KVM host."""
    store, hints = request.app[STORE], request.app[HINTS]
    if body.host_uuid:
        entry = await hints.get(store, keys.host(body.host_uuid), fresh)
        if entry and entry.value["kind"] == "kvm":
            hints.guard(txn, entry)
            return body.host_uuid
        return await vms.place(store, body.host_uuid, set())
    alive, _ = await store.list(keys.ALIVE)
    return await vms.place(store, None, vms.connected_hosts(alive, request.app[SETTINGS].heartbeat_timeout))


@routes.route("POST", "/v1/vms", body=VmCreate, query=WaitQuery, response=VmOut, status=201)
async def create_vm(request: web.Request, body: VmCreate, query: WaitQuery):
    """Create a VM: placed, addressed, recorded at once; the host agent makes it real."""
    store = request.app[STORE]
    for tag in body.system_tags:
        vms.parse_tag(tag, "system_tags")
    uuid = uuidlib.uuid4().hex
    for attempt in range(vms.RETRIES):
        txn = Txn().absent(keys.vm_index(uuid))
        host = await _host(request, body, txn, fresh=attempt > 0)
        nics = await _nics(request, body, uuid, txn, fresh=attempt > 0)
        volumes = ([VolumeSpec(uuid=uuidlib.uuid4().hex, role="root", disk=body.root_volume)] if body.root_volume
                   else []) + [VolumeSpec(uuid=uuidlib.uuid4().hex, disk=d, device_index=i + 1)
                               for i, d in enumerate(body.data_volumes)]
        boot = body.boot_order or ([BootDevice.CDROM, BootDevice.HARDDISK] if body.iso_path else [BootDevice.HARDDISK])
        spec = VmSpec(uuid=uuid, name=body.name, cpu=body.cpu, memory_mb=body.memory_mb, state=body.state,
                      nics=nics, volumes=volumes, boot_order=boot, kernel=body.kernel, cpu_mode=body.cpu_mode,
                      cache_mode=body.cache_mode, console_mode=body.console_mode, image_uuid=body.image_uuid,
                      cdrom=IsoSpec(uuid=uuidlib.uuid4().hex, path=body.iso_path) if body.iso_path else None)
        vms.apply_tags(spec, body.system_tags)
        for tag in body.system_tags:
            t = uuidlib.uuid4().hex
            txn.put(vms.tag_key(uuid, t), {"uuid": t, "resource_uuid": uuid, "resource_type": "VmInstanceVO",
                                           "tag": tag})
        txn.put(keys.vm_index(uuid), {"host": host})
        txn.put(keys.desired_for(host, stream_key_vm(uuid)), spec.model_dump(mode="json"))
        if await store.commit(txn) is not None:
            if not query.wait:
                return 201, VmOut(uuid=uuid, host_uuid=host, spec=spec).model_dump(mode="json")
            return await _respond(request, uuid, host, spec, 201, body.state)
        for l3_uuid, ip in body.fixed_ips.items():
            if await store.get(keys.ipam(l3_uuid, ip)):
                raise ApiError(409, "ip_in_use", f"{ip} is already in use", "fixed_ips")
    raise ApiError(409, "conflict", "too much contention allocating addresses, retry")


@routes.route("GET", "/v1/vms", response=VmList)
async def list_vms(request: web.Request):
    """All VMs with desired and observed state (one consistent read, not one per VM)."""
    store = request.app[STORE]
    prefixes = [keys.VM_INDEX, keys.observed("vm", ""), keys.observed("lease", ""), keys.DESIRED_HOSTS]
    snap, _ = await store.snapshot(prefixes)
    obs = {e.key.rsplit("/", 1)[1]: e.value for e in snap[prefixes[1]]}
    leases = {e.key.rsplit("/", 1)[1]: e.value for e in snap[prefixes[2]]}
    desired = {e.key: e.value for e in snap[keys.DESIRED_HOSTS]}
    out = []
    for e in snap[keys.VM_INDEX]:
        uuid, host = e.key.rsplit("/", 1)[1], e.value["host"]
        spec = desired.get(keys.desired_for(host, stream_key_vm(uuid)))
        if spec:
            vm = VmSpec.model_validate(spec)
            out.append(VmOut(uuid=uuid, host_uuid=host, spec=vm, observed=obs.get(uuid),
                             leases={n.uuid: leases[n.uuid] for n in vm.nics if n.uuid in leases}))
    return VmList(vms=out)


@routes.route("GET", "/v1/vms/{uuid}", response=VmOut)
async def get_vm(request: web.Request):
    """One VM with desired and observed state."""
    store = request.app[STORE]
    host, spec, _ = await vms.load(store, request.match_info["uuid"])
    prefixes = [keys.observed("vm", spec.uuid), *(keys.observed("lease", n.uuid) for n in spec.nics)]
    snap, _ = await store.snapshot(prefixes)  # one consistent read; each prefix is a whole key
    found = {e.key: e.value for p in prefixes for e in snap[p] if e.key == p}
    leases = {n.uuid: found[p] for n, p in zip(spec.nics, prefixes[1:], strict=True) if p in found}
    return VmOut(uuid=spec.uuid, host_uuid=host, spec=spec, observed=found.get(prefixes[0]), leases=leases)


@routes.route("DELETE", "/v1/vms/{uuid}", query=WaitQuery, response=VmOut)
async def destroy_vm(request: web.Request, query: WaitQuery):
    """Destroy a VM: addresses and tags released now; its host removes it (also after coming back)."""
    store = request.app[STORE]
    for _ in range(vms.RETRIES):
        host, spec, entry = await vms.load(store, request.match_info["uuid"])
        txn = Txn().unchanged(entry.key, entry.mod_revision).delete(entry.key).delete(keys.vm_index(spec.uuid))
        for nic in spec.nics:
            ipam.release(txn, nic.l3_uuid, nic.ip)
            txn.delete(keys.desired_all(stream_key_dns(nic.l3_uuid, nic.uuid))).delete(keys.observed("lease", nic.uuid))
            if nic.eip:
                eip = await store.get(keys.eip(nic.eip.uuid))
                if eip:
                    txn.put(keys.eip(nic.eip.uuid), {**eip.value, "vm_uuid": None, "nic_uuid": None})
        txn.delete(f"{keys.TAGS}{spec.uuid}/", prefix=True)
        if await store.commit(txn) is not None:
            done = await wait_observed(store, keys.observed("vm", spec.uuid), _gone, query.wait)
            obs = await store.get(keys.observed("vm", spec.uuid))
            out = VmOut(uuid=spec.uuid, host_uuid=host, spec=spec, observed=obs.value if obs else None)
            return pending(200, out.model_dump(mode="json"), done or not query.wait, "destroy on host")
    raise ApiError(409, "conflict", "VM keeps changing concurrently, retry")


def _gone(v) -> bool:
    return v is None or v.get("state") == "Destroyed"


ACTIONS = {"start": "Running", "stop": "Stopped", "pause": "Paused", "resume": "Running", "reboot": "Running"}


@routes.route("POST", "/v1/vms/{uuid}/actions", body=VmAction, query=WaitQuery, response=VmOut)
async def vm_action(request: web.Request, body: VmAction, query: WaitQuery):
    """start / stop / reboot / pause / resume."""
    def mutate(spec: VmSpec, txn: Txn) -> None:
        if body.action == "reboot":
            if spec.state != "Running":
                raise ApiError(409, "invalid_state", f"VM {spec.name} is {spec.state}; only a running VM reboots")
            spec.reboot_seq += 1
        spec.state = ACTIONS[body.action]
    host, spec = await vms.update(request.app[STORE], request.match_info["uuid"], mutate)
    return await _respond(request, spec.uuid, host, spec, 200, spec.state)


@routes.route("PUT", "/v1/vms/{uuid}/cdrom", body=CdromSet, response=VmOut)
async def set_cdrom(request: web.Request, body: CdromSet):
    """Attach (or with null, detach) an ISO, live; the boot order does not change."""
    def mutate(spec: VmSpec, txn: Txn) -> None:
        spec.cdrom = IsoSpec(uuid=uuidlib.uuid4().hex, path=body.iso_path) if body.iso_path else None
    host, spec = await vms.update(request.app[STORE], request.match_info["uuid"], mutate)
    return VmOut(uuid=spec.uuid, host_uuid=host, spec=spec)


@routes.route("PUT", "/v1/vms/{uuid}/boot-order", body=BootOrder, response=VmOut)
async def set_boot_order(request: web.Request, body: BootOrder):
    """Set the boot order (HardDisk, CdRom)."""
    if len(set(body.order)) != len(body.order):
        raise ApiError(400, "invalid", "a boot device may appear once", "order")

    def mutate(spec: VmSpec, txn: Txn) -> None:
        spec.boot_order = body.order
    host, spec = await vms.update(request.app[STORE], request.match_info["uuid"], mutate)
    return VmOut(uuid=spec.uuid, host_uuid=host, spec=spec)


@routes.route("PATCH", "/v1/vms/{uuid}", body=VmModes, response=VmOut)
async def set_modes(request: web.Request, body: VmModes):
    """Per-VM cpu/cache/console modes (null: follow the global config)."""
    def mutate(spec: VmSpec, txn: Txn) -> None:
        for k, v in body.model_dump(exclude_unset=True).items():
            setattr(spec, k, v)
    host, spec = await vms.update(request.app[STORE], request.match_info["uuid"], mutate)
    return VmOut(uuid=spec.uuid, host_uuid=host, spec=spec)


@routes.route("POST", "/v1/vms/{uuid}/volumes", body=VolumeAttach, response=VmOut)
async def attach_volume(request: web.Request, body: VolumeAttach):
    """Attach a data volume (live when the VM runs)."""
    def mutate(spec: VmSpec, txn: Txn) -> None:
        used = {v.device_index for v in spec.volumes}
        index = next(i for i in range(1, 64) if i not in used)
        spec.volumes.append(VolumeSpec(uuid=uuidlib.uuid4().hex, disk=body.disk, device_index=index))
    host, spec = await vms.update(request.app[STORE], request.match_info["uuid"], mutate)
    return VmOut(uuid=spec.uuid, host_uuid=host, spec=spec)


@routes.route("DELETE", "/v1/vms/{uuid}/volumes/{volume}", response=VmOut)
async def detach_volume(request: web.Request):
    """Detach a data volume (live when the VM runs)."""
    vol = request.match_info["volume"]

    def mutate(spec: VmSpec, txn: Txn) -> None:
        match = [v for v in spec.volumes if v.uuid == vol and v.role == "data"]
        if not match:
            raise ApiError(404, "not_found", f"VM {spec.name} has no data volume {vol}")
        spec.volumes.remove(match[0])
    host, spec = await vms.update(request.app[STORE], request.match_info["uuid"], mutate)
    return VmOut(uuid=spec.uuid, host_uuid=host, spec=spec)


@routes.route("POST", "/v1/vms/{uuid}/migrate", body=Migrate, response=VmOut)
async def migrate(request: web.Request, body: Migrate):
    """Move a VM to another host (cold: it is recreated there; its EIP follows)."""
    store = request.app[STORE]
    target = await vms.place(store, body.host_uuid, set())
    host, spec = await vms.update(store, request.match_info["uuid"], lambda s, t: None, new_host=target)
    return VmOut(uuid=spec.uuid, host_uuid=host, spec=spec)


@routes.route("GET", "/v1/vms/{uuid}/console", response=Console)
async def console(request: web.Request):
    """Where to connect a console client: host IP, port and protocol (VM must be running)."""
    store = request.app[STORE]
    host, spec, _ = await vms.load(store, request.match_info["uuid"])
    obs = await store.get(keys.observed("vm", spec.uuid))
    con = (obs.value or {}).get("console") if obs else None
    if not con or obs.value.get("state") != "Running":
        raise ApiError(409, "not_running", f"VM {spec.name} has no console until it runs")
    if con.get("host") in (None, "", "0.0.0.0"):
        con = {**con, "host": (await store.get(keys.host(host))).value["address"]}
    return Console.model_validate(con)
