"""Elastic IPs: a VIP allocated from a public L3, attached to a VM NIC on an L3 with the `EIP` service.

The binding lives in the VM's desired object (`NicSpec.eip`), so it is applied on the VM's host and
follows the VM when it moves.
"""

from __future__ import annotations

import uuid as uuidlib

from aiohttp import web
from pydantic import BaseModel, Field

from agentkit.model import EipBinding, Service, VmSpec
from coordinator.api.appkeys import STORE
from coordinator.api.hosts import NAME
from coordinator.api.http import ApiError, Routes, not_found
from coordinator.api.networks import load_l3
from coordinator.domain import ipam, vms
from coordinator.etcd import keys
from coordinator.etcd.store import Store, Txn

routes = Routes("eips")


class EipCreate(BaseModel):
    name: str = Field(pattern=NAME)
    public_l3_uuid: str
    vip: str | None = Field(None, description="a specific address of the public L3")


class EipOut(BaseModel):
    uuid: str
    name: str
    vip: str
    public_l3_uuid: str
    vm_uuid: str | None = None
    nic_uuid: str | None = None


class EipList(BaseModel):
    eips: list[EipOut]


class EipAttach(BaseModel):
    vm_uuid: str
    nic_uuid: str | None = Field(None, description="default: the VM's default NIC")


async def _load(store: Store, uuid: str):
    entry = await store.get(keys.eip(uuid))
    if entry is None:
        raise not_found("EIP", uuid)
    return EipOut.model_validate(entry.value), entry


@routes.route("POST", "/v1/eips", body=EipCreate, response=EipOut, status=201)
async def create_eip(request: web.Request, body: EipCreate):
    """Allocate a VIP on a public L3 network."""
    store = request.app[STORE]
    l3, _ = await load_l3(store, body.public_l3_uuid, field="public_l3_uuid")
    if not l3.public:
        raise ApiError(400, "invalid", f"L3 network {l3.name} is not public", "public_l3_uuid")
    if body.vip:
        ipam.check_fixed(l3, body.vip, "vip")
    uuid = uuidlib.uuid4().hex
    for _ in range(ipam.MAX_TRIES):
        vip = body.vip or ipam.pick(l3, await ipam.taken(store, l3.uuid))
        out = EipOut(uuid=uuid, name=body.name, vip=vip, public_l3_uuid=l3.uuid)
        txn = ipam.claim(Txn(), l3.uuid, vip, {"eip": uuid}).put(keys.eip(uuid), out.model_dump())
        if await store.commit(txn) is not None:
            return out
        if body.vip:
            raise ApiError(409, "ip_in_use", f"{body.vip} is already in use", "vip")
    raise ApiError(409, "conflict", "too much contention allocating a VIP, retry")


@routes.route("GET", "/v1/eips", response=EipList)
async def list_eips(request: web.Request):
    """All EIPs with their bindings."""
    entries, _ = await request.app[STORE].list(keys.EIPS)
    return EipList(eips=[EipOut.model_validate(e.value) for e in entries])


@routes.route("GET", "/v1/eips/{uuid}", response=EipOut)
async def get_eip(request: web.Request):
    """One EIP."""
    return (await _load(request.app[STORE], request.match_info["uuid"]))[0]


async def _bind(store: Store, eip_uuid: str, vm_uuid: str, nic_uuid: str | None, attach: bool) -> EipOut:
    for _ in range(vms.RETRIES):
        eip, entry = await _load(store, eip_uuid)
        if attach and eip.vm_uuid and eip.vm_uuid != vm_uuid:
            raise ApiError(409, "in_use", f"EIP {eip.name} is attached to VM {eip.vm_uuid}; detach it first")
        if attach:
            _, spec, _ = await vms.load(store, vm_uuid)
            nic = next((n for n in spec.nics if n.uuid == nic_uuid or (nic_uuid is None and n.default)), None)
            if nic is None:
                raise ApiError(400, "invalid", f"VM {spec.name} has no NIC {nic_uuid}", "nic_uuid")
            l3, _ = await load_l3(store, nic.l3_uuid)
            if Service.EIP not in l3.services:
                raise ApiError(409, "no_service", f"L3 network {l3.name} has no EIP service", "nic_uuid")
            nic_uuid = nic.uuid
        new = eip.model_copy(update={"vm_uuid": vm_uuid if attach else None, "nic_uuid": nic_uuid if attach else None})

        def mutate(spec: VmSpec, txn: Txn, eip=eip, new=new, entry=entry) -> None:
            for n in spec.nics:
                if attach and n.uuid == new.nic_uuid:
                    n.eip = EipBinding(uuid=eip.uuid, vip=eip.vip, public_l3_uuid=eip.public_l3_uuid)
                elif n.eip and n.eip.uuid == eip.uuid:
                    n.eip = None
            txn.unchanged(entry.key, entry.mod_revision).put(entry.key, new.model_dump())
        try:
            await vms.update(store, vm_uuid, mutate)
            return new
        except ApiError as e:
            if e.code != "conflict":
                raise
    raise ApiError(409, "conflict", "EIP keeps changing concurrently, retry")


@routes.route("POST", "/v1/eips/{uuid}/attach", body=EipAttach, response=EipOut)
async def attach_eip(request: web.Request, body: EipAttach):
    """Attach to a VM NIC; the VM's host applies NAT and announces the VIP."""
    return await _bind(request.app[STORE], request.match_info["uuid"], body.vm_uuid, body.nic_uuid, True)


@routes.route("POST", "/v1/eips/{uuid}/detach", response=EipOut)
async def detach_eip(request: web.Request):
    """Detach from its VM; the host removes everything it applied for it."""
    store = request.app[STORE]
    eip, entry = await _load(store, request.match_info["uuid"])
    if not eip.vm_uuid:
        return eip
    try:
        return await _bind(store, eip.uuid, eip.vm_uuid, None, False)
    except ApiError as e:
        if e.status != 404:
            raise
        new = eip.model_copy(update={"vm_uuid": None, "nic_uuid": None})
        await store.put(entry.key, new.model_dump())
        return new


@routes.route("DELETE", "/v1/eips/{uuid}", status=204)
async def delete_eip(request: web.Request):
    """Delete an EIP (detached first) and release its VIP."""
    store = request.app[STORE]
    eip, _ = await _load(store, request.match_info["uuid"])
    if eip.vm_uuid:
        await detach_eip(request)
    eip, entry = await _load(store, eip.uuid)
    txn = Txn().unchanged(entry.key, entry.mod_revision).delete(entry.key)
    if await store.commit(ipam.release(txn, eip.public_l3_uuid, eip.vip)) is None:
        raise ApiError(409, "conflict", "EIP changed concurrently, retry")
    return web.Response(status=204)
