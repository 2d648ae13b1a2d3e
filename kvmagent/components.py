"""The dataplane owners of a KVM host, each adapted to the pipeline's `apply(view)`.

Order matters and is fixed by the composition root: VMs (which own the L2 bridges), anti-spoofing, flat
services, EIPs.
"""

from __future__ import annotations

from flatnet.antispoof import Antispoof
from flatnet.eip import EipDataplane
from flatnet.service import FlatnetService
from kvmagent.view import HostView
from kvmagent.vms import VmReconciler


class VmsComponent:
    name = "vms"

    def __init__(self, reconciler: VmReconciler):
        self.reconciler = reconciler

    async def apply(self, view: HostView) -> None:
        await self.reconciler.apply(view.vms, view.l2s, view.l3s, view.configs)

    async def close(self) -> None:
        await self.reconciler.close()


class FlatnetComponent:
    name = "flatnet"

    def __init__(self, service: FlatnetService):
        self.service = service

    async def apply(self, view: HostView) -> None:
        await self.service.apply(view.l2s, view.l3s, view.vms, view.dns)

    async def close(self) -> None:
        await self.service.close()


class AntispoofComponent:
    """Every VM tap may only send its NIC's MAC and IP: what makes source addresses an identity."""

    name = "antispoof"

    def __init__(self, antispoof: Antispoof):
        self.antispoof = antispoof
        self._applied: dict[str, tuple[str, str]] | None = None

    async def apply(self, view: HostView) -> None:
        taps = {n.tap: (n.mac, n.ip) for vm in view.vms.values() for n in vm.nics}
        if taps != self._applied:
            await self.antispoof.apply(taps)
            self._applied = taps

    async def close(self) -> None:
        return None


class EipComponent:
    name = "eip"

    def __init__(self, dataplane: EipDataplane):
        self.dataplane = dataplane

    async def apply(self, view: HostView) -> None:
        status = await self.dataplane.apply(view.l2s, view.l3s, view.vms)
        if status.errors:
            raise RuntimeError(f"EIPs not applied: {status.errors}")

    async def close(self) -> None:
        await self.dataplane.close()
