"""Memory of KVM hosts as placement counts it (the seeds' totalMemoryCapacity and availableMemoryCapacity).

A host offers what its agent reports (`facts.memory_mb`) less `kvm.reservedMemory`, times
`mevoco.overProvisioning.memory`; each VM desired on it takes its `memory_mb` unless it is Stopped (a
stopped VM holds no memory, and its start is admitted again). A VM placed where it does not fit would only
fail to start there (qemu: `cannot set up guest memory`) and be retried forever, so placement skips such
hosts and a host asked for by name refuses with the figures. A host whose agent never reported is
admitted: nothing is known against it.

Two placements at once (on two replicas) cannot both take a host's last memory: each transaction that gives
a VM memory on a host (a creation, a start, a migration's target) rewrites the host's placement record
(`/hs/placed/<host>`), guarded on the version read before the host's VMs were counted; the later one fails
its compare and counts again. Freeing memory (a stop, a delete) needs no guard: a count that missed it is
only too careful.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import BaseModel, Field, PrivateAttr

from agentkit.model import VmSpec
from coordinator.domain import configs
from coordinator.domain.errors import InsufficientCapacity
from coordinator.domain.hosts import Host
from coordinator.etcd import keys
from coordinator.etcd.store import Entry, Store, Txn


@dataclass(frozen=True)
class Rules:
    """The global configs placement applies to every host."""

    reserved_mb: int
    over_provisioning: float


class HostMemory(BaseModel):
    """One KVM host's memory in MiB, as placement counts it."""

    host_uuid: str
    host_name: str
    total_mb: int | None = Field(description="what its agent reported; None: it never did")
    reserved_mb: int
    over_provisioning: float
    capacity_mb: int | None = Field(description="what VMs may take in all: (total - reserved) x over-provisioning")
    allocated_mb: int = Field(description="what the VMs desired on the host that are not Stopped take")
    available_mb: int | None = Field(description="what a VM placed now may take (availableMemoryCapacity)")
    vms: int = Field(description="every VM desired on it, Stopped ones too (placement prefers the fewest)")
    _placed: Entry | None = PrivateAttr(None)  # the host's placement record, read before its VMs were counted

    @classmethod
    def of(cls, host: Host, rule: Rules, allocated_mb: int, vms: int) -> HostMemory:
        total = host.facts.memory_mb if host.facts is not None and host.facts.memory_mb > 0 else None
        cap = None if total is None else int(max(total - rule.reserved_mb, 0) * rule.over_provisioning)
        return cls(host_uuid=host.uuid, host_name=host.name, total_mb=total, reserved_mb=rule.reserved_mb,
                   over_provisioning=rule.over_provisioning, capacity_mb=cap, allocated_mb=allocated_mb,
                   available_mb=None if cap is None else max(cap - allocated_mb, 0), vms=vms)

    def taking(self, asked: int) -> HostMemory:
        """The figures once a VM holding `asked` MiB is placed here."""
        allocated = self.allocated_mb + asked
        return self.model_copy(update={"allocated_mb": allocated, "vms": self.vms + 1, "available_mb": None
                                       if self.capacity_mb is None else max(self.capacity_mb - allocated, 0)})

    def claim(self, txn: Txn) -> None:
        """Guard `txn`, which gives a VM memory here, on the placement record as read before these figures, and
        rewrite the record: of two such transactions at once one commits, the other counts again."""
        key = keys.placed(self.host_uuid)
        if self._placed is None:
            txn.absent(key)
        else:
            txn.unchanged(key, self._placed.mod_revision)
        txn.put(key, {"at": time.time()})

    def fits(self, asked: int) -> bool:
        cap = self.capacity_mb
        return asked <= 0 or cap is None or self.allocated_mb + asked <= cap

    def admit(self, asked: int) -> None:
        """InsufficientCapacity (409) naming the host and its figures unless `asked` more MiB fit."""
        if not self.fits(asked):
            raise InsufficientCapacity(f"host {self.host_name} cannot take {asked} MiB of memory: {self.why()}",
                                       field="memory_mb")

    def why(self) -> str:
        return (f"{self.available_mb} MiB available of {self.capacity_mb} MiB ({self.total_mb} MiB less "
                f"{self.reserved_mb} reserved, x over-provisioning {self.over_provisioning:g}; {self.allocated_mb} "
                f"MiB given to VMs)")


async def rules(store: Store) -> Rules:
    reserved, ratio = await asyncio.gather(configs.number(store, configs.RESERVED_MEMORY),
                                           configs.number(store, configs.MEMORY_OVER_PROVISIONING))
    return Rules(int(reserved), ratio)


def held(state: object, memory_mb: object) -> int:
    """MiB a VM in `state` holds on its host: none while Stopped."""
    return memory_mb if state != "Stopped" and isinstance(memory_mb, int) else 0


def needs(spec: VmSpec) -> int:
    return held(spec.state, spec.memory_mb)


def _held(value: object) -> int:
    """What a stored desired object holds."""
    return held(value.get("state"), value.get("memory_mb")) if isinstance(value, dict) else 0


async def of_host(store: Store, host: Host, rule: Rules | None = None) -> HostMemory:
    """The host's memory now: its VMs' desired objects read from etcd (after its placement record, so that a
    placement committed in between fails the claim)."""
    rule = rule or await rules(store)
    placed = await store.get(keys.placed(host.uuid))
    entries, _ = await store.list(keys.desired_host(host.uuid) + "vm/")
    memory = HostMemory.of(host, rule, sum(_held(e.value) for e in entries), len(entries))
    memory._placed = placed
    return memory


async def admitted(store: Store, host: Host, asked: int) -> HostMemory | None:
    """The host's memory as counted now, `asked` MiB more having been found to fit (InsufficientCapacity
    otherwise), to claim where the VM is given it; None when there is nothing to count: no memory asked (a
    stopped VM) or none known (its agent never reported). Only then are a host's VMs read: a thousand
    stopped VMs made on one host read none."""
    if asked <= 0 or host.facts is None or host.facts.memory_mb <= 0:
        return None
    memory = await of_host(store, host)
    memory.admit(asked)
    return memory


async def take(store: Store, txn: Txn, host: Host, asked: int) -> None:
    """Admit `asked` MiB more on `host` as of now, claimed in `txn`."""
    if memory := await admitted(store, host, asked):
        memory.claim(txn)


async def of_hosts(store: Store, found: Iterable[Host]) -> dict[str, HostMemory]:
    """uuid -> memory, for each KVM host of `found`."""
    rule = await rules(store)
    kvm = [h for h in found if h.kind == "kvm"]
    return {m.host_uuid: m for m in await asyncio.gather(*(of_host(store, h, rule) for h in kvm))}
