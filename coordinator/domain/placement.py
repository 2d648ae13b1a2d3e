"""Where a VM runs: the KVM host asked for (by uuid or name), else among the connected ones where its memory
fits (hostmemory.py) the one with the fewest VMs (the seeds' LeastVmPreferredHostAllocatorStrategy)."""

from __future__ import annotations

import time
from collections.abc import Mapping

from agentkit.errors import Invalid
from coordinator.domain import hostmemory, hosts
from coordinator.domain.errors import InsufficientCapacity, NoHost
from coordinator.domain.hostmemory import HostMemory
from coordinator.domain.hosts import Host
from coordinator.etcd import keys
from coordinator.etcd.store import Store


def named(candidates: list[Host], ref: str) -> Host:
    """The KVM host whose uuid or name is `ref`."""
    for h in candidates:
        if h.kind == "kvm" and ref in (h.uuid, h.name):
            return h
    raise Invalid(f"no KVM host {ref}", field="host_uuid")


def least_loaded(candidates: list[Host], connected: set[str], memory: Mapping[str, HostMemory], asked: int) -> str:
    """The connected KVM host with the fewest VMs where `asked` MiB fit (ties: the smallest uuid, so replicas
    agree)."""
    usable = [memory[h.uuid] for h in candidates if h.kind == "kvm" and h.uuid in connected]
    if not usable:
        raise NoHost("no connected KVM host to place the VM on", field="host_uuid")
    fit = [m for m in usable if m.fits(asked)]
    if not fit:
        most = max(usable, key=lambda m: (m.available_mb or 0, m.host_uuid))
        raise InsufficientCapacity(f"no connected KVM host has {asked} MiB of memory available for the VM; the "
                                   f"most is on host {most.host_name}: {most.why()}", field="memory_mb")
    return min(fit, key=lambda m: (m.vms, m.host_uuid)).host_uuid


async def place(store: Store, requested: str | None, heartbeat_timeout: float, memory_mb: int) -> str:
    """The host `requested` (uuid or name; it must be a KVM host, connected or not, where `memory_mb` fit),
    or with None the best connected KVM host for it."""
    return (await place_many(store, requested, heartbeat_timeout, 1, memory_mb))[0]


async def place_many(store: Store, requested: str | None, heartbeat_timeout: float, count: int,
                     memory_mb: int) -> list[str]:
    """Hosts for `count` new VMs of `memory_mb` each: all on the host `requested`, or each in turn on the
    best one (counting the ones placed before it)."""
    if requested:
        direct = await store.get(keys.host(requested))
        host = Host.model_validate(direct.value) if direct else None
        if host is None or host.kind != "kvm":
            host = named(await hosts.all_hosts(store), requested)
        (await hostmemory.of_host(store, host)).admit(memory_mb * count)
        return [host.uuid] * count
    snap, _ = await store.snapshot([keys.HOSTS, keys.ALIVE])
    candidates = [Host.model_validate(e.value) for e in snap[keys.HOSTS]]
    up = hosts.connected(snap[keys.ALIVE], heartbeat_timeout, time.time())
    memory = await hostmemory.of_hosts(store, (h for h in candidates if h.uuid in up))
    out = []
    for _ in range(count):
        out.append(least_loaded(candidates, up, memory, memory_mb))
        memory[out[-1]] = memory[out[-1]].taking(memory_mb)
    return out
