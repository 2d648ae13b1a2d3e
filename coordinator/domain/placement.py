"""Where a VM runs: the KVM host asked for (by uuid or name), else among the connected ones where its memory
fits (hostmemory.py) the one with the fewest VMs (the seeds' LeastVmPreferredHostAllocatorStrategy).

The transaction that puts a VM on a host is guarded on the host's record as placement read it (`Placed.claim`):
a host's delete counts its VMs and commits while none is there yet, so a VM placed before that commit would
land under a host that no longer exists; guarded, its commit fails and it is placed again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from agentkit.errors import Invalid
from coordinator.domain import hostmemory, hosts
from coordinator.domain.errors import InsufficientCapacity, NoHost
from coordinator.domain.hostmemory import HostMemory
from coordinator.domain.hosts import Host
from coordinator.etcd import keys
from coordinator.etcd.store import Entry, Store, Txn


@dataclass(frozen=True)
class Placed:
    """The host of each new VM, and what to claim of their memory in the transaction that creates them."""

    hosts: list[str]
    memory: list[HostMemory]  # each host whose memory was counted for them, once (none for VMs holding none)
    read: Mapping[str, int] = field(default_factory=dict)  # each of `hosts` -> its record's revision as read

    @property
    def claims(self) -> int:
        return len(self.memory)

    @property
    def guards(self) -> int:
        return len(self.read)

    def claim(self, txn: Txn) -> None:
        """Guard `txn` on each host's record as placement read it (a delete since fails it) and claim the
        memory counted there."""
        for uuid, revision in self.read.items():
            txn.unchanged(keys.host(uuid), revision)
        for m in self.memory:
            m.claim(txn)


def named(candidates: list[Host], ref: str) -> Host:
    """The KVM host whose uuid or name is `ref`."""
    for h in candidates:
        if h.kind == "kvm" and ref in (h.uuid, h.name):
            return h
    raise Invalid(f"no KVM host {ref}", field="host_uuid")


async def guarded(store: Store, txn: Txn, uuid: str) -> Host:
    """The host a VM moves to (migrates), as of now, with `txn` guarded on its record: deleted since on any
    replica, the commit fails and its retry finds the host gone (400, as for a host asked for that is not)."""
    entry = await store.get(keys.host(uuid))
    if entry is None:
        raise Invalid(f"no KVM host {uuid}", field="host_uuid")
    txn.unchanged(entry.key, entry.mod_revision)
    return Host.model_validate(entry.value)


def by_load(candidates: list[Host], connected: set[str], vm_counts: Mapping[str, int]) -> list[Host]:
    """The connected KVM hosts, the fewest VMs first (ties: the smallest uuid, so replicas agree)."""
    usable = [h for h in candidates if h.kind == "kvm" and h.uuid in connected]
    if not usable:
        raise NoHost("no connected KVM host to place the VM on", field="host_uuid")
    return sorted(usable, key=lambda h: (vm_counts.get(h.uuid, 0), h.uuid))


def nowhere(counted: Iterable[HostMemory], asked: int) -> InsufficientCapacity:
    """The refusal when `asked` MiB fit on none of the hosts `counted`, naming the one with the most."""
    most = max(counted, key=lambda m: (m.available_mb or 0, m.host_uuid))
    return InsufficientCapacity(f"no connected KVM host has {asked} MiB of memory available for the VM; the most "
                                f"is on host {most.host_name}: {most.why()}", field="memory_mb")


async def place(store: Store, requested: str | None, heartbeat_timeout: float, memory_mb: int) -> str:
    """The host `requested` (uuid or name; it must be a KVM host, connected or not, where `memory_mb` fit),
    or with None the best connected KVM host for it. Whoever gives the VM its memory there claims it
    (hostmemory.take)."""
    return (await place_many(store, requested, heartbeat_timeout, 1, memory_mb)).hosts[0]


async def place_many(store: Store, requested: str | None, heartbeat_timeout: float, count: int,
                     memory_mb: int) -> Placed:
    """Hosts for `count` new VMs of `memory_mb` each: all on the host `requested`, or each in turn on the
    best one (counting the ones placed before it). Hosts are counted by their VMs (keys only); their VMs'
    memory is read only for the hosts tried, the least loaded first."""
    if requested:
        direct = await store.get(keys.host(requested))
        candidates, read = records([direct] if direct else [])
        if not candidates or candidates[0].kind != "kvm":
            candidates, read = records((await store.list(keys.HOSTS))[0])
        host = named(candidates, requested)
        memory = await hostmemory.admitted(store, host, memory_mb * count)
        return Placed([host.uuid] * count, [memory] if memory else [], {host.uuid: read[host.uuid]})
    snap, _ = await store.snapshot([keys.HOSTS, keys.ALIVE])
    candidates, read = records(snap[keys.HOSTS])
    up = hosts.connected(snap[keys.ALIVE], heartbeat_timeout, time.time())
    counts = await vm_counts(store, [h for h in candidates if h.kind == "kvm" and h.uuid in up])
    rule = await hostmemory.rules(store) if memory_mb > 0 else None  # a VM that holds none counts nothing
    counted: dict[str, HostMemory] = {}
    out = []
    for _ in range(count):
        out.append(await _first_fit(store, by_load(candidates, up, counts), counted, memory_mb, rule))
        counts[out[-1]] = counts.get(out[-1], 0) + 1
    return Placed(out, [counted[u] for u in dict.fromkeys(out) if u in counted], {u: read[u] for u in out})


def records(entries: list[Entry]) -> tuple[list[Host], dict[str, int]]:
    """The hosts stored in `entries`, and uuid -> the revision of each one's record."""
    found = [Host.model_validate(e.value) for e in entries]
    return found, {h.uuid: e.mod_revision for h, e in zip(found, entries, strict=True)}


async def vm_counts(store: Store, found: list[Host]) -> dict[str, int]:
    """uuid -> how many VMs are desired on each host of `found`."""
    counts = await asyncio.gather(*(store.count(keys.desired_host(h.uuid) + "vm/") for h in found))
    return {h.uuid: n for h, n in zip(found, counts, strict=True)}


async def _first_fit(store: Store, order: list[Host], counted: dict[str, HostMemory], asked: int,
                     rule: hostmemory.Rules | None) -> str:
    """The first host of `order` where `asked` MiB fit (`counted` keeps what was counted, and takes them)."""
    for host in order:
        if asked <= 0 or host.facts is None or host.facts.memory_mb <= 0:  # nothing to count
            return host.uuid
        if host.uuid not in counted:
            counted[host.uuid] = await hostmemory.of_host(store, host, rule)
        if counted[host.uuid].fits(asked):
            counted[host.uuid] = counted[host.uuid].taking(asked)
            return host.uuid
    raise nowhere(counted.values(), asked)
