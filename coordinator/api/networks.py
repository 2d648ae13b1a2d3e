"""L2 and L3 networks and their flat network services (DHCP, DNS, Userdata, EIP).

Both are global desired state (`/hs/d/all/l2|l3/<uuid>`), streamed to every host.
"""

from __future__ import annotations

import ipaddress
import uuid as uuidlib
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field, field_validator, model_validator

from agentkit.model import ImdsMode, IpRange, L2Spec, L3Spec, Service, stream_key_l2, stream_key_l3
from coordinator.api.appkeys import STORE
from coordinator.api.hosts import NAME
from coordinator.api.http import ApiError, Routes, not_found
from coordinator.domain import ipam
from coordinator.etcd import keys
from coordinator.etcd.store import Store, Txn

routes = Routes("networks")
IFNAME = r"^[A-Za-z0-9_.:-]{1,15}$"


class L2Create(BaseModel):
    name: str = Field(pattern=NAME)
    physical_interface: str = Field(pattern=IFNAME, description="host device the bridge enslaves")
    vlan: int | None = Field(None, ge=1, le=4094)


class L2List(BaseModel):
    l2_networks: list[L2Spec]


class L3Create(BaseModel):
    name: str = Field(pattern=NAME)
    l2_uuid: str
    cidr: str
    gateway: str | None = None
    ip_ranges: list[IpRange] = []
    dns_servers: list[str] = Field([], max_length=8)
    domain: str | None = Field(None, pattern=r"^[A-Za-z0-9]([A-Za-z0-9-]{0,62}\.?)*$", max_length=200)
    mtu: int = Field(1500, ge=576, le=9216)
    services: list[Service] = []
    imds: ImdsMode = "optional"
    public: bool = False

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        try:
            net = ipaddress.IPv4Network(v, strict=True)
        except ValueError as e:
            raise ValueError(f"not an IPv4 network: {e}") from None
        if net.prefixlen > 30:
            raise ValueError("prefix must be /30 or larger")
        return str(net)

    @field_validator("dns_servers")
    @classmethod
    def _dns(cls, v: list[str]) -> list[str]:
        for s in v:
            ipaddress.IPv4Address(s)
        return v

    @model_validator(mode="after")
    def _inside(self) -> L3Create:
        net = ipaddress.IPv4Network(self.cidr)
        hosts = (net.network_address, net.broadcast_address)
        for what, ip in [("gateway", self.gateway)] + [("ip_ranges", r.start) for r in self.ip_ranges] + \
                [("ip_ranges", r.end) for r in self.ip_ranges]:
            if ip is None:
                continue
            try:
                addr = ipaddress.IPv4Address(ip)
            except ValueError:
                raise ValueError(f"{what}: {ip!r} is not an IPv4 address") from None
            if addr not in net or addr in hosts:
                raise ValueError(f"{what}: {ip} is not a host address of {self.cidr}")
        for r in self.ip_ranges:
            if ipaddress.IPv4Address(r.start) > ipaddress.IPv4Address(r.end):
                raise ValueError(f"ip_ranges: start {r.start} is after end {r.end}")
        return self


class L3List(BaseModel):
    l3_networks: list[L3Spec]


class ServiceAttach(BaseModel):
    service: Service
    provider: Literal["flat"] = "flat"


async def load_l2(store: Store, uuid: str) -> L2Spec:
    entry = await store.get(keys.desired_all(stream_key_l2(uuid)))
    if entry is None:
        raise not_found("L2 network", uuid)
    return L2Spec.model_validate(entry.value)


async def load_l3(store: Store, uuid: str, field: str | None = None) -> tuple[L3Spec, int]:
    entry = await store.get(keys.desired_all(stream_key_l3(uuid)))
    if entry is None:
        err = not_found("L3 network", uuid)
        err.field = field
        raise err
    return L3Spec.model_validate(entry.value), entry.mod_revision


@routes.route("POST", "/v1/l2-networks", body=L2Create, response=L2Spec, status=201)
async def create_l2(request: web.Request, body: L2Create):
    """Create an L2 network (a physical interface, optionally a VLAN on it)."""
    l2 = L2Spec(uuid=uuidlib.uuid4().hex, **body.model_dump())
    await request.app[STORE].put(keys.desired_all(stream_key_l2(l2.uuid)), l2.model_dump(mode="json"))
    return l2


@routes.route("GET", "/v1/l2-networks", response=L2List)
async def list_l2(request: web.Request):
    """All L2 networks."""
    entries, _ = await request.app[STORE].list(keys.desired_all("l2/"))
    return L2List(l2_networks=[L2Spec.model_validate(e.value) for e in entries])


@routes.route("GET", "/v1/l2-networks/{uuid}", response=L2Spec)
async def get_l2(request: web.Request):
    """One L2 network."""
    return await load_l2(request.app[STORE], request.match_info["uuid"])


@routes.route("DELETE", "/v1/l2-networks/{uuid}", status=204)
async def delete_l2(request: web.Request):
    """Delete an L2 network; refused while L3 networks use it."""
    store = request.app[STORE]
    l2 = await load_l2(store, request.match_info["uuid"])
    l3s, _ = await store.list(keys.desired_all("l3/"))
    users = [e.value["name"] for e in l3s if e.value["l2_uuid"] == l2.uuid]
    if users:
        raise ApiError(409, "in_use", f"L2 network {l2.name} is used by L3 networks {', '.join(users)}")
    await store.delete(keys.desired_all(stream_key_l2(l2.uuid)))
    return web.Response(status=204)


@routes.route("POST", "/v1/l3-networks", body=L3Create, response=L3Spec, status=201)
async def create_l3(request: web.Request, body: L3Create):
    """Create an L3 network; with DHCP its server address is allocated once, for every host."""
    store = request.app[STORE]
    try:
        await load_l2(store, body.l2_uuid)
    except ApiError as e:
        e.field, e.status = "l2_uuid", 400
        raise
    services = list(dict.fromkeys(body.services))
    l3 = L3Spec(uuid=uuidlib.uuid4().hex, **{**body.model_dump(), "services": []})
    key = keys.desired_all(stream_key_l3(l3.uuid))
    await store.commit(Txn().absent(key).put(key, l3.model_dump(mode="json")))
    for s in services:
        l3 = await _set_service(store, l3.uuid, s, attach=True)
    return l3


@routes.route("GET", "/v1/l3-networks", response=L3List)
async def list_l3(request: web.Request):
    """All L3 networks."""
    entries, _ = await request.app[STORE].list(keys.desired_all("l3/"))
    return L3List(l3_networks=[L3Spec.model_validate(e.value) for e in entries])


@routes.route("GET", "/v1/l3-networks/{uuid}", response=L3Spec)
async def get_l3(request: web.Request):
    """One L3 network."""
    return (await load_l3(request.app[STORE], request.match_info["uuid"]))[0]


@routes.route("DELETE", "/v1/l3-networks/{uuid}", status=204)
async def delete_l3(request: web.Request):
    """Delete an L3 network; refused while VM NICs or EIPs hold its addresses."""
    store = request.app[STORE]
    l3, rev = await load_l3(store, request.match_info["uuid"])
    used = await ipam.taken(store, l3.uuid) - ipam.reserved(l3)
    if used:
        raise ApiError(409, "in_use", f"L3 network {l3.name} still has {len(used)} addresses in use")
    key = keys.desired_all(stream_key_l3(l3.uuid))
    txn = Txn().unchanged(key, rev).delete(key).delete(keys.ipam_prefix(l3.uuid), prefix=True)
    if await store.commit(txn) is None:
        raise ApiError(409, "conflict", "the L3 network changed concurrently, retry")
    return web.Response(status=204)


@routes.route("POST", "/v1/l3-networks/{uuid}/services", body=ServiceAttach, response=L3Spec)
async def attach_service(request: web.Request, body: ServiceAttach):
    """Attach a network service (provider `flat`) at runtime."""
    return await _set_service(request.app[STORE], request.match_info["uuid"], body.service, attach=True)


@routes.route("DELETE", "/v1/l3-networks/{uuid}/services/{service}", response=L3Spec)
async def detach_service(request: web.Request):
    """Detach a network service at runtime; hosts remove its namespaces and rules."""
    try:
        service = Service(request.match_info["service"])
    except ValueError:
        raise ApiError(400, "invalid", f"unknown service {request.match_info['service']!r}", "service") from None
    return await _set_service(request.app[STORE], request.match_info["uuid"], service, attach=False)


async def _set_service(store: Store, uuid: str, service: Service, attach: bool) -> L3Spec:
    for _ in range(10):
        l3, rev = await load_l3(store, uuid)
        if (service in l3.services) == attach:
            return l3
        key = keys.desired_all(stream_key_l3(uuid))
        txn = Txn().unchanged(key, rev)
        if attach:
            l3.services.append(service)
        else:
            l3.services.remove(service)
        if service == Service.DHCP and attach and not l3.dhcp_address:
            l3.dhcp_address = ipam.pick(l3, await ipam.taken(store, uuid))
            ipam.claim(txn, uuid, l3.dhcp_address, {"owner": "dhcp"})
        elif service == Service.DHCP and not attach and l3.dhcp_address:
            ipam.release(txn, uuid, l3.dhcp_address)
            l3.dhcp_address = None
        if await store.commit(txn.put(key, l3.model_dump(mode="json"))) is not None:
            return l3
    raise ApiError(409, "conflict", "the L3 network keeps changing concurrently, retry")
