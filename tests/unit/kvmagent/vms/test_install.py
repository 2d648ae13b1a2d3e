"""The ISO-install boot switch as metadata transitions."""

from __future__ import annotations

from dataclasses import replace

from agentkit.model import BootDevice, IsoSpec, VmSpec
from kvmagent.domain_xml import DomainMeta
from kvmagent.vms.install import current, effective_boot_order, first_meta, order_str, overridden, switching

CD_FIRST = [BootDevice.CDROM, BootDevice.HARDDISK]


def vm(**kw) -> VmSpec:
    return VmSpec(uuid="aaaaaaaa-0000-4000-8000-000000000001", name="v", **kw)


def test_attaching_an_iso_later_does_not_change_boot_order():
    spec = vm(cdrom=IsoSpec(uuid="iso", path="/i.iso"))
    assert effective_boot_order(spec, DomainMeta(spec.uuid)) == [BootDevice.HARDDISK]
    assert first_meta(spec).install == ""  # an ISO but HardDisk first: no installation


def test_an_installation_boots_its_iso_until_the_first_reboot_then_the_disk():
    spec = vm(cdrom=IsoSpec(uuid="iso", path="/i.iso"), boot_order=CD_FIRST)
    meta = first_meta(spec)
    assert meta.install == "pending" and effective_boot_order(spec, meta) == CD_FIRST
    enforced = replace(meta, intent="Running", intent_generation=0)
    switch = switching(enforced, spec)
    assert switch is not None and (switch.install, switch.install_order) == ("switching", "CdRom,HardDisk")
    assert effective_boot_order(spec, switch) == [BootDevice.HARDDISK, BootDevice.CDROM]
    # its intent is forgotten: the VM found off before its fresh qemu runs is started, not adopted as stopped
    assert (switch.intent, switch.intent_generation) == ("", None)
    assert switching(switch, spec) is None and switching(replace(switch, install="done"), spec) is None  # only once


def test_the_override_holds_until_the_spec_order_changes():
    spec = vm(cdrom=IsoSpec(uuid="iso", path="/i.iso"), boot_order=CD_FIRST)
    switch = switching(first_meta(spec), spec)
    assert switch is not None
    done = replace(switch, install="done")
    assert current(done, spec) is done  # unchanged: no redefinition
    recorded = spec.model_copy(update={"boot_order": [BootDevice.HARDDISK, BootDevice.CDROM]})
    dropped = current(done, recorded)
    assert dropped.install_order == "" and dropped.install == "done"
    assert effective_boot_order(recorded, dropped) == [BootDevice.HARDDISK, BootDevice.CDROM]
    assert order_str([]) == ""


def test_the_override_is_reported_until_the_coordinator_records_the_order_it_switched_to():
    spec = vm(cdrom=IsoSpec(uuid="iso", path="/i.iso"), boot_order=CD_FIRST, reboot_seq=3)
    meta = first_meta(spec)
    assert meta.reboot_seq == 3  # reboots asked for before the domain existed are behind it
    switch = switching(meta, spec)
    assert switch is not None and overridden(spec, switch) and not overridden(spec, meta)
    done = replace(switch, install="done")
    assert overridden(spec, done)
    recorded = spec.model_copy(update={"boot_order": [BootDevice.HARDDISK, BootDevice.CDROM]})
    assert not overridden(recorded, current(done, recorded))
