"""A running domain's NICs brought to its spec: taps plugged and unplugged live.

Live interfaces are matched to the spec's NICs by alias (`ua-nic-<uuid>`); an interface of ours the
spec no longer has is detached (the guest completes the unplug), a NIC it lacks is attached with the
element the full render gives it. libvirt applies both live and to the definition. Anti-spoofing has
the new tap's chain before the domain gets it (the VMs component runs after it); the host's flat
services serve or forget the NIC from the same spec.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field

from agentkit.model import VmSpec
from kvmagent.domain_xml import NIC_ALIAS, NicNet, nic_element
from kvmagent.libvirt_driver import LibvirtDriver

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NicPlug:
    detach: list[str] = field(default_factory=list)  # device aliases
    attach: list[tuple[str, str]] = field(default_factory=list)  # (NIC uuid, interface XML)


def plan(spec: VmSpec, live_xml: str, nets: Mapping[str, NicNet]) -> NicPlug:
    """The interfaces to detach from and attach to a running domain (pure)."""
    live = set()
    for iface in ET.fromstring(live_xml).findall("devices/interface"):
        alias = iface.find("alias")
        name = alias.get("name", "") if alias is not None else ""
        if name.startswith(NIC_ALIAS):
            live.add(name.removeprefix(NIC_ALIAS))
    wanted = {nic.uuid: nic for nic in spec.nics}
    return NicPlug([NIC_ALIAS + gone for gone in sorted(live - set(wanted))],
                   [(new, ET.tostring(nic_element(wanted[new], nets[new]), "unicode"))
                    for new in sorted(set(wanted) - live)])


async def hotplug(driver: LibvirtDriver, luuid: str, vm_uuid: str, plug: NicPlug) -> None:
    for alias in plug.detach:
        await driver.detach_alias(luuid, alias)
        log.info("vm %s: detaching %s", vm_uuid, alias)
    for nic_uuid, xml in plug.attach:
        await driver.attach_device(luuid, xml)
        log.info("vm %s: attached NIC %s", vm_uuid, nic_uuid)
