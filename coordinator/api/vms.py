"""VMs: create with NICs, lifecycle, NICs, cdrom/ISO, boot order, volumes, modes, console address, migration
(see coordinator/domain/vms.py). Each call records intent at once; `?wait=` waits for the observed result.
"""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field

from agentkit.consoles import ConsoleKind
from agentkit.errors import Invalid, NotFound
from agentkit.model import BootDevice, CacheMode, ConsoleMode, CpuMode, Mac, VmSpec
from agentkit.paths import FilePath
from coordinator.api.appkeys import HINTS, SETTINGS, STORE
from coordinator.api.http import Routes
from coordinator.domain import hosts, livemigration, vmnics, vms
from coordinator.domain.errors import MissingReference
from coordinator.domain.fields import Ref
from coordinator.domain.vms import Action, Disk, VmCreate, VmView

routes = Routes("vms")
MAX_WAIT = 600.0
MAX_KEY = 128


class WaitQuery(BaseModel):
    wait: float = Field(0, ge=0, le=MAX_WAIT, description="seconds to wait for the observed result")


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
    observed: dict[str, Any] | None = None
    leases: dict[str, LeaseOut] = Field(default_factory=dict, description="by NIC uuid; NICs on L3s "
                                        "without our DHCP, or whose guest has not asked yet, have none")
    pending: str | None = None


class VmList(BaseModel):
    vms: list[VmOut]


class VmBatchCreate(VmCreate):
    count: int = Field(ge=1, le=vms.MAX_TXN_OPS, description="how many VMs alike, named <name>-1 … <name>-<count>; "
                       "created in one transaction (all or none), so as many as fit one etcd transaction")


class VmAction(BaseModel):
    action: Action


class CdromSet(BaseModel):
    iso_uuid: Ref | None = Field(None, description="ISO image to insert (fetched into the cache of the VM's storage)")
    iso_path: FilePath | None = Field(None, description="or a raw ISO path on the host (expert option); neither "
                                      "ejects")


class BootOrder(BaseModel):
    order: list[BootDevice] = Field(min_length=1, max_length=2)


class BootOrderOut(BaseModel):
    order: list[BootDevice] = Field(description="what the VM boots in: as its host reports it, else desired")
    desired: list[BootDevice]


class NicAttach(BaseModel):
    l3_uuid: Ref
    ip: str | None = Field(None, max_length=15, description="the address (default: the next free one)")
    mac: Mac | None = Field(None, description="the MAC (default: random fa:16:3e:…)")


class VmModes(BaseModel):
    cpu_mode: CpuMode | None = None
    cache_mode: CacheMode | None = None
    console_mode: ConsoleMode | None = None


class VolumeAttach(BaseModel):
    disk: Disk | None = Field(None, description="a Ceph volume's disk or a raw qcow2 path")
    volume_uuid: str | None = Field(None, description="or a LocalStorage/SharedMountPoint volume")


class Migrate(BaseModel):
    host_uuid: Ref
    live: bool = Field(False, description="keep it running (shared storage: SharedMountPoint or Ceph)")


class Console(BaseModel):
    host: str = Field(description="the hypervisor's address (its consoles listen there on unix sockets only)")
    protocol: ConsoleMode
    kinds: list[ConsoleKind] = Field(description="consoles a console proxy can open (POST .../console)")


def vm_out(v: VmView) -> VmOut:
    return VmOut.model_validate({"uuid": v.spec.uuid, "host_uuid": v.host, "spec": v.spec, "observed": v.observed,
                                 "leases": v.leases})


def pending(status_done: int, out: VmOut, done: bool, what: str) -> tuple[int, dict[str, Any]]:
    """`status_done` with the result when done, else 202 naming what is still pending."""
    body = out.model_dump(mode="json")
    return (status_done, body) if done else (202, {**body, "pending": what})


async def _respond(request: web.Request, query: WaitQuery, host: str, spec: VmSpec, status: int, want: str
                   ) -> tuple[int, dict[str, Any]]:
    """The recorded intent at once, or with `?wait=` the observed result (202 when still pending)."""
    store = request.app[STORE]
    done = await vms.wait_state(store, spec.uuid, want, spec.generation, query.wait) if query.wait else True
    return pending(status, await _now(request, host, spec), done, f"state {want}")


async def _now(request: web.Request, host: str, spec: VmSpec) -> VmOut:
    """The VM as an action leaves it: its new spec, and what its host observed so far."""
    timeout = request.app[SETTINGS].heartbeat_timeout
    return vm_out(VmView(host, spec, await vms.seen(request.app[STORE], host, spec.uuid, timeout)))


@routes.route("POST", "/v1/vms", body=VmCreate, query=WaitQuery, response=VmOut, status=201)
async def create_vm(request: web.Request, body: VmCreate, query: WaitQuery) -> tuple[int, dict[str, Any]]:
    """Create a VM: placed, addressed, recorded at once; the host agent makes it real. With an
    `Idempotency-Key` header, sending the same request again returns the VM it created."""
    settings = request.app[SETTINGS]
    host, spec = await vms.create(request.app[STORE], request.app[HINTS], body, settings.heartbeat_timeout,
                                  settings.file_roots, _request_key(request))
    if not query.wait:
        return 201, vm_out(VmView(host, spec)).model_dump(mode="json")
    return await _respond(request, query, host, spec, 201, body.state)


@routes.route("POST", "/v1/vms/batch", body=VmBatchCreate, response=VmList, status=201)
async def create_vms(request: web.Request, body: VmBatchCreate) -> VmList:
    """Create several VMs alike in one request and one transaction: all or none."""
    settings = request.app[SETTINGS]
    made = await vms.create_many(request.app[STORE], request.app[HINTS], body, body.count, settings.heartbeat_timeout,
                                 settings.file_roots, _request_key(request))
    return VmList(vms=[vm_out(VmView(host, spec)) for host, spec in made])


def _request_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not (0 < len(key) <= MAX_KEY and key.isprintable() and key.isascii()):
        raise Invalid(f"Idempotency-Key must be 1 to {MAX_KEY} printable ASCII characters", field="Idempotency-Key")
    return key


class VmListQuery(BaseModel):
    host_uuid: str | None = Field(None, max_length=128, description="only the VMs placed on this host (uuid or "
                                  "name), as QueryVmInstance hostUuid= of the seeds")


@routes.route("GET", "/v1/vms", query=VmListQuery, response=VmList)
async def list_vms(request: web.Request, query: VmListQuery) -> VmList:
    """All VMs (or one host's) with desired and observed state (one consistent read, not one per VM);
    observed state Unknown while a VM's host is Disconnected."""
    store = request.app[STORE]
    try:
        host = (await hosts.find(store, query.host_uuid)).uuid if query.host_uuid else None
    except NotFound as e:
        raise MissingReference(str(e), field="host_uuid") from None
    found = await vms.views(store, request.app[SETTINGS].heartbeat_timeout, host)
    return VmList(vms=[vm_out(v) for v in found])


@routes.route("GET", "/v1/vms/{uuid}", response=VmOut)
async def get_vm(request: web.Request) -> VmOut:
    """One VM with desired and observed state (Unknown while its host is Disconnected)."""
    timeout = request.app[SETTINGS].heartbeat_timeout
    return vm_out(await vms.view(request.app[STORE], request.match_info["uuid"], timeout))


@routes.route("DELETE", "/v1/vms/{uuid}", query=WaitQuery, response=VmOut)
async def destroy_vm(request: web.Request, query: WaitQuery) -> tuple[int, dict[str, Any]]:
    """Destroy a VM: addresses and tags released now; its host removes it (also after coming back)."""
    store = request.app[STORE]
    host, spec = await vms.destroy(store, request.match_info["uuid"])
    done = await vms.wait_gone(store, spec.uuid, query.wait)
    return pending(200, await _now(request, host, spec), done or not query.wait, "destroy on host")


@routes.route("POST", "/v1/vms/{uuid}/actions", body=VmAction, query=WaitQuery, response=VmOut)
async def vm_action(request: web.Request, body: VmAction, query: WaitQuery) -> tuple[int, dict[str, Any]]:
    """start / stop / reboot / pause / resume; `?wait=` waits for the state, or for a reboot to be applied
    (graceful through ACPI, forced after the host's stop timeout)."""
    store = request.app[STORE]
    host, spec = await vms.act(store, request.match_info["uuid"], body.action)
    if body.action != "reboot" or not query.wait:
        return await _respond(request, query, host, spec, 200, spec.state)
    done = await vms.wait_rebooted(store, spec.uuid, spec.reboot_seq, query.wait)
    return pending(200, await _now(request, host, spec), done, f"reboot {spec.reboot_seq}")


@routes.route("PUT", "/v1/vms/{uuid}/cdrom", body=CdromSet, response=VmOut)
async def set_cdrom(request: web.Request, body: CdromSet) -> VmOut:
    """Attach an ISO (image or raw path; neither: detach), live; the boot order does not change."""
    return vm_out(VmView(*await vms.set_cdrom(request.app[STORE], request.match_info["uuid"], body.iso_path,
                                              request.app[SETTINGS].file_roots, body.iso_uuid)))


@routes.route("PUT", "/v1/vms/{uuid}/boot-order", body=BootOrder, response=VmOut)
async def set_boot_order(request: web.Request, body: BootOrder) -> VmOut:
    """Set the boot order (HardDisk, CdRom)."""
    return vm_out(VmView(*await vms.set_boot_order(request.app[STORE], request.match_info["uuid"], body.order)))


@routes.route("GET", "/v1/vms/{uuid}/boot-order", response=BootOrderOut)
async def get_boot_order(request: web.Request) -> BootOrderOut:
    """The boot order the VM boots in (HardDisk first once an ISO install rebooted) and the desired one."""
    return BootOrderOut.model_validate(await vms.boot_order(request.app[STORE], request.match_info["uuid"]))


@routes.route("POST", "/v1/vms/{uuid}/nics", body=NicAttach, query=WaitQuery, response=VmOut)
async def attach_nic(request: web.Request, body: NicAttach, query: WaitQuery) -> tuple[int, dict[str, Any]]:
    """Attach a NIC on an L3 (live when the VM runs): address, MAC, DNS record, DHCP reservation,
    anti-spoofing and metadata come with it; `?wait=` waits for the host to lease it."""
    store = request.app[STORE]
    host, spec = await vmnics.attach(store, request.match_info["uuid"], body.l3_uuid, body.ip, body.mac)
    nic = next(n for n in spec.nics if n.l3_uuid == body.l3_uuid)
    done = await vmnics.wait_lease(store, nic.uuid, query.wait) if query.wait else True
    out = vm_out(await vms.view(store, spec.uuid, request.app[SETTINGS].heartbeat_timeout))
    return pending(200, out, done, f"lease of NIC {nic.uuid}")


@routes.route("DELETE", "/v1/vms/{uuid}/nics/{nic}", response=VmOut)
async def detach_nic(request: web.Request) -> VmOut:
    """Detach a NIC, named by its uuid or its L3's (live when the VM runs); its address, MAC, DNS record
    and lease are released."""
    return vm_out(VmView(*await vmnics.detach(request.app[STORE], request.match_info["uuid"],
                                              request.match_info["nic"])))


@routes.route("PATCH", "/v1/vms/{uuid}", body=VmModes, response=VmOut)
async def set_modes(request: web.Request, body: VmModes) -> VmOut:
    """Per-VM cpu/cache/console modes (null: follow the global config)."""
    modes = body.model_dump(exclude_unset=True)
    return vm_out(VmView(*await vms.set_modes(request.app[STORE], request.match_info["uuid"], modes)))


@routes.route("POST", "/v1/vms/{uuid}/volumes", body=VolumeAttach, response=VmOut)
async def attach_volume(request: web.Request, body: VolumeAttach) -> VmOut:
    """Attach a data volume (live when the VM runs)."""
    return vm_out(VmView(*await vms.attach_volume(request.app[STORE], request.match_info["uuid"], body.disk,
                                                  request.app[SETTINGS].file_roots, body.volume_uuid)))


@routes.route("DELETE", "/v1/vms/{uuid}/volumes/{volume}", response=VmOut)
async def detach_volume(request: web.Request) -> VmOut:
    """Detach a data volume (live when the VM runs)."""
    found = await vms.detach_volume(request.app[STORE], request.match_info["uuid"], request.match_info["volume"])
    return vm_out(VmView(*found))


@routes.route("POST", "/v1/vms/{uuid}/migrate", body=Migrate, response=VmOut)
async def migrate(request: web.Request, body: Migrate) -> VmOut:
    """Move a VM to another host: cold (it is recreated there; its LocalStorage volumes are copied first,
    it must be stopped then), or `live` (it keeps running; its storage must be shared); its EIP follows."""
    settings = request.app[SETTINGS]
    if body.live:
        moved = await livemigration.start(request.app[STORE], request.match_info["uuid"], body.host_uuid,
                                          settings.heartbeat_timeout, settings.live_migration_uri)
    else:
        moved = await vms.migrate(request.app[STORE], request.match_info["uuid"], body.host_uuid,
                                  settings.heartbeat_timeout)
    return await _now(request, *moved)  # as it is now


@routes.route("DELETE", "/v1/vms/{uuid}/migrate", response=VmOut)
async def cancel_migration(request: web.Request) -> VmOut:
    """Call off a live migration: the VM stays on its host. One whose target has not prepared (its agent down or
    failing) ends now; once it prepared, the source may be sending the VM: the move is marked `abort` and ends
    when the source reports it stopped sending (a send that completed first ends it on the target). Refused
    (409) once the VM runs on the target."""
    return await _now(request, *await livemigration.cancel(request.app[STORE], request.match_info["uuid"]))


@routes.route("GET", "/v1/vms/{uuid}/console", response=Console)
async def console(request: web.Request) -> Console:
    """The VM's consoles and host (VM must be running); open one with POST (a URL on a console proxy)."""
    return Console.model_validate(await vms.console(request.app[STORE], request.match_info["uuid"]))
