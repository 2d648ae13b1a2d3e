"""The ISO-install boot switch, as transitions of the domain's metadata (pure functions).

A VM *created* with a cdrom and `CdRom` first is an installation (`install="pending"`). At the
guest's first reboot the agent records the switch to `HardDisk` first (`install="switching"`, remembering
in `install_order` the spec order it overrode) and converges: a pass that finds a domain `switching`
stops its qemu and starts a fresh one in the new order (`install="done"`). The switch forgets the
enforced intent, as an API reboot does: a start that fails, or an agent killed in between, leaves a VM
the next pass starts (or restarts), never a stop to adopt nor an installer booted again. The override
holds until the spec's boot order changes. Attaching an ISO later never changes the boot order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from agentkit.model import BootDevice, VmSpec
from kvmagent.domain_xml import DomainMeta


def order_str(order: Sequence[BootDevice]) -> str:
    return ",".join(d.value for d in order)


def overridden(spec: VmSpec, meta: DomainMeta) -> bool:
    """Does the install switch still override the spec's boot order? (Reported, so that the coordinator
    records the order the VM boots in as its desired one: coordinator/domain/vmrecords.py `installed`.)"""
    return meta.install in ("switching", "done") and meta.install_order == order_str(spec.boot_order)


def effective_boot_order(spec: VmSpec, meta: DomainMeta) -> list[BootDevice]:
    """The spec's boot order, or HardDisk first once an ISO install rebooted (until the spec changes)."""
    order = list(spec.boot_order)
    if overridden(spec, meta):
        return [BootDevice.HARDDISK] + [d for d in order if d is not BootDevice.HARDDISK]
    return order


def first_meta(spec: VmSpec) -> DomainMeta:
    """The metadata of a domain defined now: an installation if it boots its ISO first; the reboots asked
    for before it existed are behind it."""
    install = "pending" if spec.cdrom and spec.boot_order[:1] == [BootDevice.CDROM] else ""
    return DomainMeta(spec.uuid, install=install, reboot_seq=spec.reboot_seq)


def current(meta: DomainMeta, spec: VmSpec) -> DomainMeta:
    """`meta` itself while the switch still applies; without the override once the spec's order changed."""
    if meta.install_order and meta.install_order != order_str(spec.boot_order):
        return replace(meta, install_order="")  # the spec now says what it wants
    return meta


def switching(meta: DomainMeta, spec: VmSpec) -> DomainMeta | None:
    """The metadata at an installation's first reboot; None when the domain is no installation."""
    if meta.install != "pending":
        return None
    return replace(meta, install="switching", install_order=order_str(spec.boot_order), intent="",
                   intent_generation=None)
