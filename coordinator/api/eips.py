"""Elastic IPs: a VIP allocated from a public L3, attached to a VM NIC on an L3 with the `EIP` service
(see coordinator/domain/eips.py)."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, Field

from coordinator.api.appkeys import STORE
from coordinator.api.http import Routes
from coordinator.domain import eips
from coordinator.domain.eips import Eip
from coordinator.domain.fields import Name, Ref

routes = Routes("eips")


class EipCreate(BaseModel):
    name: Name
    public_l3_uuid: Ref
    vip: str | None = Field(None, max_length=15, description="a specific address of the public L3")


class EipOut(Eip):
    """An elastic IP and the VM NIC it is attached to, if any."""


class EipList(BaseModel):
    eips: list[EipOut]


class EipAttach(BaseModel):
    vm_uuid: Ref
    nic_uuid: Ref | None = Field(None, description="default: the VM's default NIC")


def eip_out(e: Eip) -> EipOut:
    return EipOut.model_validate(e.model_dump())


@routes.route("POST", "/v1/eips", body=EipCreate, response=EipOut, status=201)
async def create_eip(request: web.Request, body: EipCreate) -> EipOut:
    """Allocate a VIP on a public L3 network."""
    return eip_out(await eips.create(request.app[STORE], body.name, body.public_l3_uuid, body.vip))


@routes.route("GET", "/v1/eips", response=EipList)
async def list_eips(request: web.Request) -> EipList:
    """All EIPs with their bindings."""
    return EipList(eips=[eip_out(e) for e in await eips.all_eips(request.app[STORE])])


@routes.route("GET", "/v1/eips/{uuid}", response=EipOut)
async def get_eip(request: web.Request) -> EipOut:
    """One EIP."""
    return eip_out((await eips.load(request.app[STORE], request.match_info["uuid"]))[0])


@routes.route("POST", "/v1/eips/{uuid}/attach", body=EipAttach, response=EipOut)
async def attach_eip(request: web.Request, body: EipAttach) -> EipOut:
    """Attach to a VM NIC; the VM's host applies NAT and announces the VIP."""
    return eip_out(await eips.attach(request.app[STORE], request.match_info["uuid"], body.vm_uuid, body.nic_uuid))


@routes.route("POST", "/v1/eips/{uuid}/detach", response=EipOut)
async def detach_eip(request: web.Request) -> EipOut:
    """Detach from its VM; the host removes everything it applied for it."""
    return eip_out(await eips.detach(request.app[STORE], request.match_info["uuid"]))


@routes.route("DELETE", "/v1/eips/{uuid}", status=204)
async def delete_eip(request: web.Request) -> None:
    """Delete an EIP (detached first) and release its VIP."""
    await eips.delete(request.app[STORE], request.match_info["uuid"])
