"""vmevents: p99 ms from a VM state change to its observed-state report, against the bare libvirt event.

One private libvirtd (testbed.libvirthost) runs one tiny guest under TCG. A "user" connection
pauses and resumes it (as `virsh suspend/resume` would, minus process start-up) CHANGES times. The agent
runs with the drift policy `adopt`, so it never undoes these out-of-band changes: it reports each as
drift and the coordinator makes it the desired state. Before each change the bench waits until that is
settled (the desired state is the domain's state and the agent recorded it as met), so no change races
the agent's handling of the previous one, however fast or slow the machine. For every change both
sides are timed from the same instant:
- peer: a bare libvirtaio subscriber receives the lifecycle event (the floor: libvirt alone);
- ours: the real kvmagent (in a simulated host) reported it and the coordinator stored it, i.e. the
  API shows it: the etcd watch on the VM's observed key sees the new state.

`measure()` drives the changes and takes both observers, and the wait for a settled VM, as async hooks.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import libvirt

from coordinator.client import Client
from coordinator.etcd import keys
from coordinator.etcd.store import Store
from kvmagent.domain_xml import NS, DomainMeta, domain_uuid
from kvmagent.libvirt_driver import _bind_event_impl
from testbed import guest_image
from testbed.coordinators import Coordinator, admin_token
from testbed.etcd import Etcd
from testbed.kvmhost import KvmHost
from testbed.netns import Run
from testbed.switch import Switch

CHANGES = 40
SETTLE = 60.0  # a VM that never settles is a bug, not a slow figure
# (vm uuid, expected state, monotonic start) -> monotonic time the state was seen
Observe = Callable[[str, str, float], Awaitable[float]]
Settled = Callable[[libvirt.virDomain], Awaitable[None]]


class Seen:
    """Records when each (vm, state) was seen; `wait` returns the first sighting after a start time."""

    def __init__(self) -> None:
        self.log: list[tuple[float, str, str]] = []
        self._changed = asyncio.Event()

    def add(self, ident: str, state: str) -> None:
        self.log.append((time.monotonic(), ident, state))
        self._changed.set()

    async def wait(self, ident: str, state: str, since: float, timeout: float = 10.0) -> float:
        async with asyncio.timeout(timeout):
            while True:
                for t, i, s in self.log:
                    if t >= since and i == ident and s == state:
                        return t
                self._changed.clear()
                await self._changed.wait()


async def peer_subscriber(uri: str) -> tuple[libvirt.virConnect, Seen]:
    """The peer: a bare libvirtaio lifecycle subscriber (event loop already registered by ours)."""
    seen = Seen()
    names = {libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "Paused", libvirt.VIR_DOMAIN_EVENT_RESUMED: "Running",
             libvirt.VIR_DOMAIN_EVENT_STARTED: "Running", libvirt.VIR_DOMAIN_EVENT_STOPPED: "Stopped"}
    conn = await asyncio.get_running_loop().run_in_executor(None, libvirt.open, uri)

    def cb(c: libvirt.virConnect, dom: libvirt.virDomain, event: int, detail: int, opaque: object) -> None:
        if event in names:
            seen.add(dom.name(), names[event])

    conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, cb, None)
    return conn, seen


async def measure(uri: str, vm_uuid: str, observe_ours: Observe, observe_peer: Observe, settled: Settled,
                  changes: int = CHANGES) -> tuple[list[float], list[float]]:
    """Pause/resume the running domain `changes` times, each once it settled; (ours, peer) ms per change."""
    loop = asyncio.get_running_loop()
    user = await loop.run_in_executor(None, libvirt.open, uri)
    dom = user.lookupByUUIDString(domain_uuid(vm_uuid))
    ours, peer = [], []
    try:
        for i in range(changes):
            await settled(dom)
            op, state = (dom.suspend, "Paused") if i % 2 == 0 else (dom.resume, "Running")
            t0 = time.monotonic()
            await loop.run_in_executor(None, op)
            t_peer = await observe_peer(vm_uuid, state, t0)
            t_ours = await observe_ours(vm_uuid, state, t0)
            peer.append((t_peer - t0) * 1000)
            ours.append((t_ours - t0) * 1000)
    finally:
        user.close()
    return ours, peer


def p99(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[98]


def settler(api: Client, vm_uuid: str) -> Settled:
    """Waits until the VM's desired state is its domain's state and the agent recorded it as met for the
    current generation (kvmagent.vms.power: then it treats the next out-of-band change as drift)."""
    async def settled(dom: libvirt.virDomain) -> None:
        async with asyncio.timeout(SETTLE):
            while True:
                spec = (await api.get(f"/v1/vms/{vm_uuid}"))["spec"]
                meta = _meta(dom)
                actual = "Paused" if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED else "Running"
                if meta and (meta.intent, meta.intent_generation, actual) == (spec["state"], spec["generation"],
                                                                              spec["state"]):
                    return
                await asyncio.sleep(0.02)
    return settled


def _meta(dom: libvirt.virDomain) -> DomainMeta | None:
    try:
        return DomainMeta.from_xml(dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NS))
    except libvirt.libvirtError:
        return None  # not written yet


async def api_observer(etcd_endpoint: str, vm_uuid: str, seen: Seen) -> None:
    """Ours: the moment the coordinator has stored the observed state (what the API then serves)."""
    store = Store(etcd_endpoint)
    await store.connect()
    try:
        _, rev = await store.list(keys.observed("vm", vm_uuid))
        async for batch in store.watch(keys.observed("vm", vm_uuid), rev + 1):
            for ch in batch:
                if isinstance(ch.value, dict):
                    seen.add(vm_uuid, ch.value.get("state", ""))
    finally:
        await store.close()


async def main() -> None:
    """Event → API through the whole system: coordinator, etcd, and the real agent in a simulated host."""
    guest = guest_image.build()
    with Run() as run:
        etcd = Etcd(run).start()
        token = admin_token()
        co = Coordinator(run, etcd, token).start()
        host = KvmHost(run, Switch(run), "bench")
        async with Client(co.url, token) as api:
            await host.register(api)
            host.start(co, vm={"drift_policy": "adopt"})
            vm = await api.post("/v1/vms", {"name": "bench", "host_uuid": host.uuid, "kernel": {
                "kernel": str(guest.kernel), "initrd": str(guest.initrd), "cmdline": guest.cmdline("hold")}},
                wait="120")
            _bind_event_impl()
            ours_seen = Seen()
            watcher = asyncio.create_task(api_observer(etcd.endpoint, vm["uuid"], ours_seen))
            conn, peer_seen = await peer_subscriber(host.libvirt.uri)
            try:
                ours, peer = await measure(host.libvirt.uri, vm["uuid"], ours_seen.wait, peer_seen.wait,
                                           settler(api, vm["uuid"]))
            finally:
                conn.close()
                watcher.cancel()
                host.close()
        print(f"changes={len(ours)} event->API median={statistics.median(ours):.2f}ms "
              f"libvirt event median={statistics.median(peer):.2f}ms")
        o, p = p99(ours), p99(peer)
        print(f"vmevents: ours={o:.2f} peer={p:.2f} ratio={o / p:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
