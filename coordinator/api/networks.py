"""L2 and L3 networks and their flat network services (see coordinator/domain/networks.py)."""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import BaseModel

from agentkit.errors import Invalid
from agentkit.model import L2Spec, L3Spec, Service
from coordinator.api.appkeys import STORE
from coordinator.api.http import Routes
from coordinator.domain import networks
from coordinator.domain.networks import L2Create, L3Create

routes = Routes("networks")


class L2List(BaseModel):
    l2_networks: list[L2Spec]


class L3List(BaseModel):
    l3_networks: list[L3Spec]


class ServiceAttach(BaseModel):
    service: Service
    provider: Literal["flat"] = "flat"


@routes.route("POST", "/v1/l2-networks", body=L2Create, response=L2Spec, status=201)
async def create_l2(request: web.Request, body: L2Create) -> L2Spec:
    """Create an L2 network (a physical interface, optionally a VLAN on it); 409 `in_use` when another L2 has
    the same interface and VLAN (or is the interface's untagged one too)."""
    return await networks.create_l2(request.app[STORE], body)


@routes.route("GET", "/v1/l2-networks", response=L2List)
async def list_l2(request: web.Request) -> L2List:
    """All L2 networks."""
    return L2List(l2_networks=await networks.list_l2(request.app[STORE]))


@routes.route("GET", "/v1/l2-networks/{uuid}", response=L2Spec)
async def get_l2(request: web.Request) -> L2Spec:
    """One L2 network."""
    return await networks.load_l2(request.app[STORE], request.match_info["uuid"])


@routes.route("DELETE", "/v1/l2-networks/{uuid}", status=204)
async def delete_l2(request: web.Request) -> None:
    """Delete an L2 network; refused while L3 networks use it."""
    await networks.delete_l2(request.app[STORE], request.match_info["uuid"])


@routes.route("POST", "/v1/l3-networks", body=L3Create, response=L3Spec, status=201)
async def create_l3(request: web.Request, body: L3Create) -> L3Spec:
    """Create an L3 network; with DHCP its server address is allocated once, for every host. 409 `in_use`
    when its CIDR overlaps that of another L3 on the same L2."""
    return await networks.create_l3(request.app[STORE], body)


@routes.route("GET", "/v1/l3-networks", response=L3List)
async def list_l3(request: web.Request) -> L3List:
    """All L3 networks."""
    return L3List(l3_networks=await networks.list_l3(request.app[STORE]))


@routes.route("GET", "/v1/l3-networks/{uuid}", response=L3Spec)
async def get_l3(request: web.Request) -> L3Spec:
    """One L3 network."""
    return (await networks.load_l3(request.app[STORE], request.match_info["uuid"]))[0]


@routes.route("DELETE", "/v1/l3-networks/{uuid}", status=204)
async def delete_l3(request: web.Request) -> None:
    """Delete an L3 network; refused while VM NICs or EIPs hold its addresses."""
    await networks.delete_l3(request.app[STORE], request.match_info["uuid"])


@routes.route("POST", "/v1/l3-networks/{uuid}/services", body=ServiceAttach, response=L3Spec)
async def attach_service(request: web.Request, body: ServiceAttach) -> L3Spec:
    """Attach a network service (provider `flat`) at runtime."""
    return await networks.set_service(request.app[STORE], request.match_info["uuid"], body.service, attach=True)


@routes.route("DELETE", "/v1/l3-networks/{uuid}/services/{service}", response=L3Spec)
async def detach_service(request: web.Request) -> L3Spec:
    """Detach a network service at runtime; hosts remove its namespaces and rules."""
    try:
        service = Service(request.match_info["service"])
    except ValueError:
        raise Invalid(f"unknown service {request.match_info['service']!r}", field="service") from None
    return await networks.set_service(request.app[STORE], request.match_info["uuid"], service, attach=False)
