"""vmevents: p99 ms from a VM state change to its observed-state report, against the bare libvirt event.

One private libvirtd (testbed.libvirthost) runs one tiny guest under TCG. A "user" connection
pauses and resumes it (as `virsh suspend/resume` would, minus process start-up) CHANGES times. For
every change both sides are timed from the same instant:
- peer: a bare libvirtaio subscriber receives the lifecycle event (the floor: libvirt alone);
- ours: kvmagent's VmReconciler delivers `report("vm", uuid, {"state": ...})`.

`measure()` is the reusable core: it takes the observer of "ours" as an async hook, so the lead can
time "event -> coordinator API" with the same driver of changes and the same peer.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import libvirt

from agentkit.model import KernelBoot, VmSpec
from kvmagent.bridges import Bridges
from kvmagent.domain_xml import domain_uuid
from kvmagent.libvirt_driver import LibvirtDriver
from kvmagent.vms import VmReconciler, VmSettings
from testbed import guest_image
from testbed.libvirthost import LibvirtHost
from testbed.netns import Run

CHANGES = 40
VM_UUID = "5e0e0e0e-0000-4000-8000-00000000be7c"
# (vm uuid, expected state, monotonic start) -> monotonic time the state was seen
Observe = Callable[[str, str, float], Awaitable[float]]


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

    def cb(c, dom, event, detail, opaque):
        if event in names:
            seen.add(dom.name(), names[event])

    conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, cb, None)
    return conn, seen


async def measure(uri: str, vm_uuid: str, observe_ours: Observe, observe_peer: Observe,
                  changes: int = CHANGES) -> tuple[list[float], list[float]]:
    """Pause/resume the running domain `changes` times; (ours, peer) latencies in ms per change."""
    loop = asyncio.get_running_loop()
    user = await loop.run_in_executor(None, libvirt.open, uri)
    dom = user.lookupByUUIDString(domain_uuid(vm_uuid))
    ours, peer = [], []
    try:
        for i in range(changes):
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


async def main() -> None:
    guest = guest_image.build()
    run = Run()
    host = LibvirtHost(run, "bench")
    try:
        host.start()
        driver = LibvirtDriver(host.uri)
        await driver.connect(timeout=10)
        reports = Seen()
        settings = VmSettings(domain_type="qemu", serial_log_dir=str(host.vm_dir), drift_policy="adopt")
        rec = VmReconciler(driver, Bridges(netns=host.ns.name), settings,
                           lambda kind, ident, body: reports.add(ident, body["state"]))
        await rec.start()
        vm = VmSpec(uuid=VM_UUID, name="bench", kernel=KernelBoot(
            kernel=str(guest.kernel), initrd=str(guest.initrd), cmdline=guest.cmdline("hold")))
        t0 = time.monotonic()
        await rec.apply({vm.uuid: vm}, {}, {}, {})
        await reports.wait(vm.uuid, "Running", t0)
        conn, peer_seen = await peer_subscriber(host.uri)
        try:
            ours, peer = await measure(host.uri, vm.uuid, reports.wait, peer_seen.wait)
        finally:
            conn.close()
            await rec.apply({}, {}, {}, {})
            await rec.close()
            await rec.bridges.close()
            await driver.close()
        print(f"changes={len(ours)} ours median={statistics.median(ours):.2f}ms "
              f"peer median={statistics.median(peer):.2f}ms")
        o, p = p99(ours), p99(peer)
        print(f"vmevents: ours={o:.2f} peer={p:.2f} ratio={o / p:.2f}")
    finally:
        host.close()
        run.close()


if __name__ == "__main__":
    asyncio.run(main())
