"""Where a VM runs: the KVM host asked for (by uuid or name), else the connected one with the fewest VMs."""

from __future__ import annotations

import time
from collections.abc import Mapping

from agentkit.errors import Invalid
from coordinator.domain import hosts
from coordinator.domain.errors import NoHost
from coordinator.domain.hosts import Host
from coordinator.etcd import keys
from coordinator.etcd.store import Store


def named(candidates: list[Host], ref: str) -> str:
    """The uuid of the KVM host whose uuid or name is `ref`."""
    for h in candidates:
        if h.kind == "kvm" and ref in (h.uuid, h.name):
            return h.uuid
    raise Invalid(f"no KVM host {ref}", field="host_uuid")


def least_loaded(candidates: list[Host], connected: set[str], vm_counts: Mapping[str, int]) -> str:
    """The connected KVM host with the fewest VMs (ties: the smallest uuid, so replicas agree)."""
    usable = [h.uuid for h in candidates if h.kind == "kvm" and h.uuid in connected]
    if not usable:
        raise NoHost("no connected KVM host to place the VM on", field="host_uuid")
    return min(usable, key=lambda u: (vm_counts.get(u, 0), u))


async def place(store: Store, requested: str | None, heartbeat_timeout: float) -> str:
    """The host `requested` (uuid or name; it must be a KVM host, connected or not), or with None the
    least-loaded connected KVM host."""
    return (await place_many(store, requested, heartbeat_timeout, 1))[0]


async def place_many(store: Store, requested: str | None, heartbeat_timeout: float, count: int) -> list[str]:
    """Hosts for `count` new VMs: each on the host `requested`, or each in turn on the least-loaded one
    (counting the ones placed before it)."""
    if requested:
        direct = await store.get(keys.host(requested))
        if direct and Host.model_validate(direct.value).kind == "kvm":
            return [requested] * count
        return [named(await hosts.all_hosts(store), requested)] * count
    snap, _ = await store.snapshot([keys.HOSTS, keys.ALIVE])
    candidates = [Host.model_validate(e.value) for e in snap[keys.HOSTS]]
    up = hosts.connected(snap[keys.ALIVE], heartbeat_timeout, time.time())
    counts = {h.uuid: await store.count(keys.desired_host(h.uuid) + "vm/") for h in candidates
              if h.kind == "kvm" and h.uuid in up}
    out = []
    for _ in range(count):
        out.append(least_loaded(candidates, up, counts))
        counts[out[-1]] = counts.get(out[-1], 0) + 1
    return out
