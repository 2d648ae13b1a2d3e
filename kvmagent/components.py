"""The dataplane owners of a KVM host, each adapted to the pipeline's `apply(view)`.

The bridges (`kvmagent/bridges.py`) come first; everything here plugs into them and so runs `after`
them: VMs (their taps), anti-spoofing (rules on those taps), flat services and EIPs (their
namespaces' veths). Where anti-spoofing runs, the VMs and the flat services also come after it, and wait
for a pass of it that succeeded (it `fails_closed`): a domain starts once the revision that brought it
has been filtered, and an address is the metadata's or DHCP's for a new VM only once the VM that had it
before can no longer send from it. The VMs also come after the storage (`kvmagent/storage/`),
which makes their volumes in the same revision. `prepared` comes after all but the VMs: a VM moving
live here is reported prepared once they applied a view that has it. The composition root fixes the list.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from agentkit.model import VmSpec
from flatnet.antispoof import Antispoof
from flatnet.eip import EipDataplane, EipStatus
from flatnet.service import FlatnetService
from kvmagent.errors import DataplaneError
from kvmagent.view import HostView
from kvmagent.vms import VmReconciler

log = logging.getLogger(__name__)
AFTER_BRIDGES: tuple[str, ...] = ("bridges",)
AFTER_ANTISPOOF: tuple[str, ...] = ("bridges", "antispoof")
FAULT_ENV = "HS_KVMAGENT_TEST_FAULT"  # tests only: a VM of this name makes the VMs component fail with a bug


class VmsComponent:
    name = "vms"

    def __init__(self, reconciler: VmReconciler, fault: str | None = None, after: tuple[str, ...] = AFTER_BRIDGES):
        self.reconciler = reconciler
        self.fault = fault
        self.after = after

    async def apply(self, view: HostView, *, resync: bool = False) -> None:
        if self.fault and any(vm.name == self.fault for vm in view.vms.values()):
            raise RuntimeError(f"fault injected by ${FAULT_ENV} for VM {self.fault}")
        await self.reconciler.apply(view.vms, view.l2s, view.l3s, view.configs, full=resync, held=view.held_of("vm"))

    async def close(self) -> None:
        await self.reconciler.close()


class FlatnetComponent:
    """The flat services (DHCP, DNS, metadata) answer by source address: they follow anti-spoofing."""

    name = "flatnet"
    after = AFTER_ANTISPOOF

    def __init__(self, service: FlatnetService):
        self.service = service

    async def apply(self, view: HostView, *, resync: bool = False) -> None:
        await self.service.apply(view.l2s, view.l3s, view.vms, view.dns)

    async def close(self) -> None:
        await self.service.close()


class Domains(Protocol):
    """What anti-spoofing needs of the VMs component: the taps of every domain that still exists."""

    def domain_taps(self) -> Mapping[str, tuple[str, ...]]: ...


class AntispoofComponent:
    """Every VM tap may only send its NIC's MAC and IP, any other port of our bridges is cut off: what makes
    source addresses an identity (`flatnet/antispoof.py`).

    The filtered taps are the union of the desired NICs and the NICs of domains that still exist: a
    domain no longer desired (deleted, moved away, its destroy failed) drops everything until the VMs
    component has seen it gone. Nothing is written before the host's domains were listed once
    (`NotListed`, retried): the kernel keeps the last table meanwhile."""

    name = "antispoof"
    after = AFTER_BRIDGES
    fails_closed = True  # the VMs and flat services wait for a pass of it that succeeded

    def __init__(self, antispoof: Antispoof, domains: Domains):
        self.antispoof = antispoof
        self.domains = domains

    async def apply(self, view: HostView, *, resync: bool = False) -> None:
        """The table's fingerprint (flatnet.nft) tells whether anything needs writing."""
        wanted = {vm.uuid for vm in view.vms.values()}
        gone = {tap for vm_uuid, taps in self.domains.domain_taps().items() if vm_uuid not in wanted for tap in taps}
        await self.antispoof.apply({n.tap: (n.mac, n.ip) for vm in view.vms.values() for n in vm.nics},
                                   gone=gone, ports={l2.uplink for l2 in view.l2s.values()})

    async def close(self) -> None:
        return None


class EipComponent:
    """The EIPs of this host's VMs, handed over make-before-break when a VM moves live. One moving here
    (`incoming`) has its EIPs staged (everything but the VIP addresses: flatnet/eip/plan.py) until it is this
    host's, when the VIPs are added and announced; one that left for another host stops being answered for
    here at once (`withdraw`: its VIPs leave) before the coordinator is told, and the next pass tidies the
    rest. So the new host answers for them only once this one stopped: never both at once."""

    name = "eip"
    after = AFTER_BRIDGES

    def __init__(self, dataplane: EipDataplane, verify_every: float = 60.0):
        self.dataplane = dataplane
        self.verify_every = verify_every
        self.away: set[str] = set()  # VMs whose domain stopped here for another host (spec still says migrate_to)
        self.wake: Callable[[], None] = lambda: None  # asks the pipeline for a pass of this component
        self._verified_at = -math.inf  # monotonic time of the last pass that read the tables back
        self._view: HostView | None = None
        self._viewed = asyncio.Event()
        self._lock = asyncio.Lock()

    def _here(self, view: HostView) -> dict[str, VmSpec]:
        return {u: vm for u, vm in view.vms.items() if u not in self.away}

    async def apply(self, view: HostView, *, resync: bool = False) -> None:
        """The tables are read back from the kernel on the periodic pass and at least every `verify_every`
        seconds (a busy host may have no quiet minute for its periodic pass); otherwise a pass that
        changes no table runs no process."""
        status = await self._apply(view, resync)
        if status.errors:
            raise DataplaneError(f"EIPs not applied: {status.errors}")

    async def _apply(self, view: HostView, resync: bool = False) -> EipStatus:
        async with self._lock:
            self._view = view
            self._viewed.set()
            self.away &= {u for u, vm in view.vms.items() if vm.migrate_to is not None}
            now = time.monotonic()
            verify = resync or now - self._verified_at >= self.verify_every
            status = await self.dataplane.apply(view.l2s, view.l3s, self._here(view), verify=verify)
            if verify:
                self._verified_at = now
        return status

    async def withdraw(self, vm_uuid: str) -> None:
        """The VM's domain stopped here for another host: stop answering for its EIPs now (their VIPs leave;
        a process that has not applied a view yet waits for its first), the next pass removes the rest."""
        await self._viewed.wait()
        try:
            async with self._lock:
                self.away.add(vm_uuid)
                assert self._view is not None
                await self.dataplane.silence(self._view.l2s, self._view.l3s, self._here(self._view))
        finally:  # a silence that failed is the caller's to retry; the pass takes the VIPs away too
            self.wake()

    async def restore(self, vm_uuid: str) -> None:
        """The VM runs here again (its move failed): answer for its EIPs again. Pairs that fail now (another
        VM's, or its own) are the pipeline's to report and retry: it is asked for a pass."""
        self.away.discard(vm_uuid)
        if self._view is not None and (await self._apply(self._view)).errors:
            self.wake()

    async def close(self) -> None:
        await self.dataplane.close()


class PreparedComponent:
    """Reports each VM moving live here (`incoming`) `prepared` for its move once every component it comes
    `after` (all but the VMs: bridges, storage, anti-spoofing, flat services, EIPs staged) applied a view that
    has it: the source sends the VM only then (coordinator/domain/livemigration.py), so the guest never runs
    here before its taps pass. Once per move and process, and again on each periodic pass while it moves
    here: a report lost (refused by an older coordinator replica during an upgrade) is made good, and the
    coordinator takes a repeat as a no-op."""

    name = "prepared"

    def __init__(self, after: tuple[str, ...], applied: Callable[[str], int],
                 report: Callable[[str, str, dict[str, Any]], None]):
        self.after = after
        self.applied = applied  # the revision a component last applied successfully (-1: none)
        self.report = report
        self._told: dict[str, str] = {}  # VM uuid -> the move it was reported prepared for

    async def apply(self, view: HostView, *, resync: bool = False) -> None:
        """A component that failed on this view holds the report back; this pass fails (retried) meanwhile."""
        moving = {u: vm.incoming for u, vm in view.vms.items() if vm.incoming is not None}
        self._told = {} if resync else {u: move for u, move in self._told.items() if moving.get(u) == move}
        if all(self._told.get(u) == move for u, move in moving.items()):
            return
        behind = [name for name in self.after if self.applied(name) < view.rev]
        if behind:
            raise DataplaneError(f"VMs moving here not prepared: {', '.join(behind)} not applied yet")
        for vm_uuid, move in moving.items():
            if self._told.get(vm_uuid) != move:
                log.info("vm %s: prepared for live migration %s", vm_uuid, move)
                self.report("vm", vm_uuid, {"state": "Stopped", "console": None, "boot_order": None,  # not stored
                                            "prepared": move})
                self._told[vm_uuid] = move

    async def close(self) -> None:
        return None
