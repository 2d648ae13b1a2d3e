"""What shapes a domain besides its spec, and the checks before anything is changed."""

from __future__ import annotations

import pytest

from agentkit.model import BootDevice, IsoSpec, L2Spec, L3Spec, NicSpec, VmSpec
from agentkit.supervise import Supervisor
from kvmagent.domain_xml import DomainMeta, Modes
from kvmagent.errors import BridgeError, SpecError
from kvmagent.libvirt_driver import LibvirtDriver
from kvmagent.vms.converge import Converger
from kvmagent.vms.ledger import Ledger
from kvmagent.vms.power import Power
from kvmagent.vms.settings import VmSettings

L2 = L2Spec(uuid="l2000000aaaa", name="l2", physical_interface="eth0")
L3 = L3Spec(uuid="l3000000aaaa", name="l3", l2_uuid=L2.uuid, cidr="198.18.0.0/24", mtu=1400)
SPEC = VmSpec(uuid="aaaaaaaa-0000-4000-8000-000000000001", name="v", cdrom=IsoSpec(uuid="i", path="/i.iso"),
              boot_order=[BootDevice.CDROM, BootDevice.HARDDISK],
              nics=[NicSpec(uuid="nic0000aaaa", l3_uuid=L3.uuid, mac="52:54:00:00:00:01", ip="198.18.0.10",
                            default=True)])


class Failed:
    def __init__(self, failed: dict[str, BridgeError]) -> None:
        self.failed = failed


def converger(failed: dict[str, BridgeError] | None = None, **settings) -> Converger:
    driver = LibvirtDriver("test:///default")
    s = VmSettings(domain_type="qemu", serial_log_dir="/var/log/hs", **settings)
    ledger = Ledger(l2s={L2.uuid: L2}, l3s={L3.uuid: L3}, configs={"kvm.vm.consoleMode": "spice"})
    power = Power(driver, s, Supervisor(), lambda vm, delay: None)
    return Converger(driver, ledger, s, power, Failed(failed or {}), lambda spec: False)


def test_context_resolves_bridges_modes_paths_and_boot_order():
    ctx = converger(cpu_mode="host-model").context(SPEC, DomainMeta(SPEC.uuid, install="done",
                                                                    install_order="CdRom,HardDisk"))
    assert ctx.nets["nic0000aaaa"].bridge == L2.bridge and ctx.nets["nic0000aaaa"].mtu == 1400
    assert ctx.modes == Modes("host-model", "writethrough", "spice")  # the seed's default cache mode
    assert ctx.serial_log == f"/var/log/hs/{SPEC.uuid}.log" and ctx.domain_type == "qemu"
    assert list(ctx.boot_order) == [BootDevice.HARDDISK, BootDevice.CDROM]  # the install switched it


def test_a_nic_off_this_hosts_networks_cannot_be_realized():
    c = converger()
    c.ledger.l3s.clear()
    with pytest.raises(SpecError, match="not in this host's state"):
        c.context(SPEC, DomainMeta(SPEC.uuid))


async def test_a_vm_on_a_failed_bridge_fails_with_the_bridge_error_before_any_change():
    err = BridgeError("l2 l2000000aaaa: physical interface eth0 not found")
    with pytest.raises(BridgeError) as raised:
        await converger({L2.uuid: err}).converge(SPEC, None)
    assert raised.value is err
