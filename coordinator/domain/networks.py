"""L2 and L3 networks and their flat network services (DHCP, DNS, Userdata, EIP).

Both are global desired state (`/hs/d/all/l2|l3/<uuid>`), streamed to every host. An L3 with DHCP
has one server address, allocated from its pool when the service is attached and released with it.
"""

from __future__ import annotations

import ipaddress
import uuid as uuidlib

from pydantic import BaseModel, Field, field_validator, model_validator

from agentkit.errors import Conflict, InUse, NotFound
from agentkit.model import ImdsMode, IpRange, L2Spec, L3Spec, Service, stream_key_l2, stream_key_l3
from coordinator.domain import ipam, vmrecords
from coordinator.domain.errors import SHOWN, MissingReference, first_few
from coordinator.domain.fields import IfName, Name, Ref
from coordinator.etcd import keys
from coordinator.etcd.cas import retry_cas
from coordinator.etcd.store import Store, Txn

MAX_RANGES = 64  # each host's DHCP server and every allocation walk them
L2S, L3S = keys.desired_all("l2/"), keys.desired_all("l3/")


class L2Create(BaseModel):
    name: Name
    physical_interface: IfName = Field(description="host device the bridge enslaves")
    vlan: int | None = Field(None, ge=1, le=4094)


class L3Create(BaseModel):
    """An L3 network as requested: its addresses must be host addresses of its subnet."""

    name: Name
    l2_uuid: Ref
    cidr: str = Field(max_length=18)
    gateway: str | None = Field(None, max_length=15)
    ip_ranges: list[IpRange] = Field([], max_length=MAX_RANGES)
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
        named = [("gateway", self.gateway)] + [("ip_ranges", r.start) for r in self.ip_ranges] + \
            [("ip_ranges", r.end) for r in self.ip_ranges]
        for what, ip in named:
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


def _l2_key(uuid: str) -> str:
    return keys.desired_all(stream_key_l2(uuid))


def _l3_key(uuid: str) -> str:
    return keys.desired_all(stream_key_l3(uuid))


async def load_l2(store: Store, uuid: str) -> L2Spec:
    entry = await store.get(_l2_key(uuid))
    if entry is None:
        raise NotFound(what="L2 network", ident=uuid)
    return L2Spec.model_validate(entry.value)


async def load_l3(store: Store, uuid: str, field: str | None = None) -> tuple[L3Spec, int]:
    """The L3 network and its mod revision (to guard a write on it). Missing: 404, or 400 naming the request
    body's `field` that refers to it."""
    entry = await store.get(_l3_key(uuid))
    if entry is None:
        raise (MissingReference if field else NotFound)(what="L3 network", ident=uuid, field=field)
    return L3Spec.model_validate(entry.value), entry.mod_revision


async def list_l2(store: Store) -> list[L2Spec]:
    entries, _ = await store.list(L2S)
    return [L2Spec.model_validate(e.value) for e in entries]


async def list_l3(store: Store) -> list[L3Spec]:
    entries, _ = await store.list(L3S)
    return [L3Spec.model_validate(e.value) for e in entries]


async def create_l2(store: Store, body: L2Create) -> L2Spec:
    """Refused when another L2 has the same physical interface and VLAN (untagged counting as a VLAN of its
    own): every host would move the one uplink into the newer L2's bridge, cutting the older one's VMs off.
    Written only if no L2 was added since they were read (on any replica), else they are read again."""
    l2 = L2Spec(uuid=uuidlib.uuid4().hex, **body.model_dump())
    key = _l2_key(l2.uuid)

    async def attempt(_: int) -> bool | None:
        entries, read_at = await store.list(L2S)
        for other in map(L2Spec.model_validate, (e.value for e in entries)):
            if (other.physical_interface, other.vlan) == (l2.physical_interface, l2.vlan):
                on = l2.physical_interface if l2.vlan is None else f"VLAN {l2.vlan} of {l2.physical_interface}"
                raise InUse(f"{on} is already used by L2 network {other.name} ({other.uuid})",
                            field="physical_interface" if l2.vlan is None else "vlan")
        txn = Txn().absent(key).none_created_since(L2S, read_at).put(key, l2.model_dump(mode="json"))
        return True if await store.commit(txn) is not None else None
    await retry_cas(attempt, f"L2 network {l2.name}")
    return l2


async def delete_l2(store: Store, uuid: str) -> None:
    """Refused while L3 networks use it. An L3 made after they were read (on any replica) fails the delete,
    which reads them again: deleted under it, the L3's VMs would have no bridge on any host."""
    l2 = await load_l2(store, uuid)

    async def attempt(_: int) -> bool | None:
        entries, read_at = await store.list(L3S)
        users = [l3.name for l3 in map(L3Spec.model_validate, (e.value for e in entries)) if l3.l2_uuid == l2.uuid]
        if users:
            raise InUse(f"L2 network {l2.name} is used by L3 networks {', '.join(users)}")
        txn = Txn().none_created_since(L3S, read_at).delete(_l2_key(l2.uuid))
        return True if await store.commit(txn) is not None else None
    await retry_cas(attempt, f"L2 network {l2.name}")


async def create_l3(store: Store, body: L3Create) -> L3Spec:
    """With DHCP, its server address is allocated once, for every host. Refused when its CIDR overlaps that of
    another L3 on the same L2 (two gateways and DHCP servers for one address on one broadcast domain); on
    different L2s they may. Written only if no L3 was added since they were read and its L2 is still there (a
    delete of it meanwhile fails the write, which then finds it gone), else they are read again."""
    l3 = L3Spec(uuid=uuidlib.uuid4().hex, **{**body.model_dump(), "services": []})
    key = _l3_key(l3.uuid)

    async def attempt(_: int) -> bool | None:
        if (l2 := await store.get(_l2_key(l3.l2_uuid))) is None:
            raise MissingReference(what="L2 network", ident=l3.l2_uuid, field="l2_uuid")
        entries, read_at = await store.list(L3S)
        for other in map(L3Spec.model_validate, (e.value for e in entries)):
            if other.l2_uuid == l3.l2_uuid and other.network.overlaps(l3.network):
                raise InUse(f"{l3.cidr} overlaps {other.cidr} of L3 network {other.name} ({other.uuid}) on the "
                            "same L2 network", field="cidr")
        txn = Txn().exists(l2.key).absent(key).none_created_since(L3S, read_at).put(key, l3.model_dump(mode="json"))
        return True if await store.commit(txn) is not None else None
    await retry_cas(attempt, f"L3 network {l3.name}")
    for s in dict.fromkeys(body.services):
        l3 = await set_service(store, l3.uuid, s, attach=True)
    return l3


async def delete_l3(store: Store, uuid: str) -> None:
    """Refused while VM NICs or EIPs hold its addresses (the first few named, with what holds them). An
    address claimed after they were read (on any replica) fails the delete, which reads them again."""
    async def attempt(_: int) -> bool | None:
        l3, rev = await load_l3(store, uuid)
        entries, read_at = await store.list(keys.ipam_prefix(l3.uuid))
        used = [e for e in entries if e.key.rsplit("/", 1)[1] not in ipam.reserved(l3)]
        if used:
            shown = [f"{e.key.rsplit('/', 1)[1]} ({await _holder(store, e.value)})" for e in used[:SHOWN]]
            raise InUse(f"L3 network {l3.name} still has {len(used)} address{'es' if len(used) > 1 else ''} in use: "
                        f"{first_few(shown, len(used))}; delete those VMs and EIPs or detach their NICs first")
        key = _l3_key(l3.uuid)
        txn = Txn().unchanged(key, rev).none_created_since(keys.ipam_prefix(l3.uuid), read_at)
        txn.delete(key).delete(keys.ipam_prefix(l3.uuid), prefix=True)
        return True if await store.commit(txn) is not None else None
    await retry_cas(attempt, f"L3 network {uuid}")


async def _holder(store: Store, claim: object) -> str:
    """What holds an address, by name: a VM (its NIC) or an EIP."""
    held = claim if isinstance(claim, dict) else {}
    if isinstance(vm := held.get("vm"), str):
        try:
            return f"VM {(await vmrecords.load(store, vm))[1].name}"
        except (NotFound, Conflict):  # gone or moving meanwhile
            return f"VM {vm}"
    if isinstance(eip := held.get("eip"), str):
        entry = await store.get(keys.eip(eip))
        name = entry.value.get("name") if entry is not None and isinstance(entry.value, dict) else None
        return f"EIP {name or eip}"
    return "held"


async def set_service(store: Store, uuid: str, service: Service, attach: bool) -> L3Spec:
    """Attach or detach a network service; attaching DHCP claims its server address, detaching frees it."""
    async def attempt(_: int) -> L3Spec | None:
        l3, rev = await load_l3(store, uuid)
        if (service in l3.services) == attach:
            return l3
        key = _l3_key(uuid)
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
        return l3 if await store.commit(txn.put(key, l3.model_dump(mode="json"))) is not None else None
    return await retry_cas(attempt, "the L3 network")
