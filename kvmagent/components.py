"""The dataplane owners of a KVM host, each adapted to the pipeline's `apply(view)`.

The bridges (`kvmagent/bridges.py`) come first; everything here plugs into them and so runs `after`
them: VMs (their taps), anti-spoofing (rules on those taps), flat services and EIPs (their
namespaces' veths). The VMs also come after the storage (`kvmagent/storage/`), which makes their
volumes. The composition root fixes the list.
"""

from __future__ import annotations

from flatnet.antispoof import Antispoof
from flatnet.eip import EipDataplane
from flatnet.service import FlatnetService
from kvmagent.errors import DataplaneError
from kvmagent.view import HostView
from kvmagent.vms import VmReconciler

AFTER_BRIDGES: tuple[str, ...] = ("bridges",)
FAULT_ENV = "HS_KVMAGENT_TEST_FAULT"  # tests only: a VM of this name makes the VMs component fail with a bug


class VmsComponent:
    """After the storage too: a new VM's volumes are made in the same revision's storage pass."""

    name = "vms"
    after = (*AFTER_BRIDGES, "storage")

    def __init__(self, reconciler: VmReconciler, fault: str | None = None):
        self.reconciler = reconciler
        self.fault = fault

    async def apply(self, view: HostView, *, resync: bool = False) -> None:
        if self.fault and any(vm.name == self.fault for vm in view.vms.values()):
            raise RuntimeError(f"fault injected by ${FAULT_ENV} for VM {self.fault}")
        await self.reconciler.apply(view.vms, view.l2s, view.l3s, view.configs, full=resync)

    async def close(self) -> None:
        await self.reconciler.close()


class FlatnetComponent:
    name = "flatnet"
    after = AFTER_BRIDGES

    def __init__(self, service: FlatnetService):
        self.service = service

    async def apply(self, view: HostView, *, resync: bool = False) -> None:
        await self.service.apply(view.l2s, view.l3s, view.vms, view.dns)

    async def close(self) -> None:
        await self.service.close()


class AntispoofComponent:
    """Every VM tap may only send its NIC's MAC and IP: what makes source addresses an identity."""

    name = "antispoof"
    after = AFTER_BRIDGES

    def __init__(self, antispoof: Antispoof):
        self.antispoof = antispoof

    async def apply(self, view: HostView, *, resync: bool = False) -> None:
        """The table's fingerprint (flatnet.nft) tells whether anything needs writing."""
        await self.antispoof.apply({n.tap: (n.mac, n.ip) for vm in view.vms.values() for n in vm.nics})

    async def close(self) -> None:
        return None


class EipComponent:
    name = "eip"
    after = AFTER_BRIDGES

    def __init__(self, dataplane: EipDataplane):
        self.dataplane = dataplane

    async def apply(self, view: HostView, *, resync: bool = False) -> None:
        status = await self.dataplane.apply(view.l2s, view.l3s, view.vms)
        if status.errors:
            raise DataplaneError(f"EIPs not applied: {status.errors}")

    async def close(self) -> None:
        await self.dataplane.close()
