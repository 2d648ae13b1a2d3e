"""A small cloud in a MemoryStore, made through the domain's own calls: KVM hosts, networks, VMs."""

from __future__ import annotations

from typing import Any

from agentkit.model import L3Spec, Service, VmSpec
from coordinator.domain import networks, vms
from coordinator.domain.hosts import Host
from coordinator.etcd import keys
from coordinator.etcd.hints import Hints

from .memstore import MemoryStore

HEARTBEAT_TIMEOUT = 3.0


async def cloud(*hosts: str) -> MemoryStore:
    """KVM hosts `hosts` (default h1 and h2, named kvm-<uuid>) whose agents never reported their memory."""
    store = MemoryStore()
    for uuid in hosts or ("h1", "h2"):
        host = Host(uuid=uuid, name=f"kvm-{uuid}", address="198.18.0.2", kind="kvm", token_sha256="", created=0.0)
        await store.put(keys.host(uuid), host.record())
    return store


async def network(store: MemoryStore, name: str = "priv", cidr: str = "198.18.8.0/24",
                  services: tuple[Service, ...] = (), public: bool = False) -> L3Spec:
    """An L3 network on an L2 of its own (on an interface of its own: `eth-<name>`)."""
    l2 = await networks.create_l2(store, networks.L2Create(name=name, physical_interface=f"eth-{name}"))
    return await networks.create_l3(store, networks.L3Create(name=name, l2_uuid=l2.uuid, cidr=cidr,
                                                             services=list(services), public=public))


async def vm(store: MemoryStore, name: str = "web", host: str = "h1", **body: Any) -> VmSpec:
    """A VM placed on `host`."""
    create = vms.VmCreate.model_validate({"name": name, "host_uuid": host, **body})
    return (await vms.create(store, Hints(), create, HEARTBEAT_TIMEOUT, []))[1]
