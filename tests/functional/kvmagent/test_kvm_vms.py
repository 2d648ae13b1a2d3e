"""The VM reconciler on libvirt's `test:///default` driver (fast; the real one is in test_kvm_real)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import xml.etree.ElementTree as ET

import libvirt
import pytest

from agentkit.model import BootDevice, FileDisk, IsoSpec, L2Spec, L3Spec, NicSpec, VmSpec, VolumeSpec
from agentkit.proc import run
from kvmagent.bridges import BridgesComponent
from kvmagent.domain_xml import NS, DomainMeta, domain_uuid
from kvmagent.errors import DriverError
from kvmagent.libvirt_driver import DomainEvent, LibvirtDriver
from kvmagent.view import HostView
from kvmagent.vms import VmReconciler, VmSettings, install

L2 = L2Spec(uuid="l2000000aaaa", name="l2", physical_interface="eth0")
L3 = L3Spec(uuid="l3000000aaaa", name="l3", l2_uuid=L2.uuid, cidr="198.18.0.0/24")
NETS = ({L2.uuid: L2}, {L3.uuid: L3})


class FakeBridges:
    def __init__(self):
        self.ensured, self.pruned = [], []

    async def ensure_all(self, l2s):
        self.ensured.append([l2.uuid for l2 in l2s])
        return {}

    async def prune(self, wanted):
        self.pruned.append(sorted(wanted))


class Host:
    """The agent's order for one view: the bridges component first, then the VM reconciler."""

    def __init__(self, driver, settings, reports):
        self.bridges = FakeBridges()
        self.component = BridgesComponent(self.bridges)
        self.vms = VmReconciler(driver, self.component, settings, reports)
        self.settings = settings

    async def apply(self, desired, l2s, l3s, configs):
        await self.component.apply(HostView(l2s=dict(l2s)))
        await self.vms.apply(desired, l2s, l3s, configs)

    async def resync(self):
        await self.vms.resync()


def vm(uuid="aaaaaaaa-0000-4000-8000-000000000001", **kw) -> VmSpec:
    base = dict(uuid=uuid, name="v", nics=[NicSpec(uuid="nic0000aaaa", l3_uuid=L3.uuid, mac="52:54:00:00:00:01",
                                                   ip="198.18.0.10", default=True)])
    base.update(kw)
    return VmSpec(**base)


def settings(tmp_path, **kw) -> VmSettings:
    base: dict = dict(domain_type="qemu", serial_log_dir=str(tmp_path / "serial"), volume_dir=str(tmp_path),
                      console_dir=str(tmp_path / "consoles"), stop_timeout=2, restart_backoff_max=0.2,
                      file_roots=["/isos"], drift_policy="restart")
    return VmSettings(**{**base, **kw})


@pytest.fixture
async def env(tmp_path, reports):
    driver = LibvirtDriver("test:///default")
    await driver.connect(timeout=2)
    rec = Host(driver, settings(tmp_path), reports)
    await rec.vms.start()
    other = libvirt.open("test:///default")  # the user's virsh
    yield rec, reports, other
    await rec.apply({}, {}, {}, {})
    await rec.vms.close()
    other.close()
    await driver.close()


def ours(conn) -> list[str]:
    names = []
    for d in conn.listAllDomains():
        try:
            d.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NS)
            names.append(d.name())
        except libvirt.libvirtError:
            pass
    return names


async def test_create_is_idempotent_and_reported(env):
    rec, reports, other = env
    spec = vm()
    await rec.apply({spec.uuid: spec}, *NETS, {})
    _, body = await reports.wait(spec.uuid, "Running")
    assert body["boot_order"] == ["HardDisk"]
    xml = other.lookupByName(spec.uuid).XMLDesc()
    await rec.apply({spec.uuid: spec}, *NETS, {})
    await asyncio.sleep(0.1)
    assert other.lookupByName(spec.uuid).XMLDesc() == xml
    assert reports.states(spec.uuid) == ["Running"]  # nothing reported twice
    assert rec.bridges.ensured[-1] == [L2.uuid]


async def test_stop_start_and_global_modes(env):
    rec, reports, other = env
    spec = vm(state="Stopped")
    await rec.apply({spec.uuid: spec}, *NETS, {"kvm.vm.consoleMode": "spice", "kvm.vm.cpuMode": "host-model"})
    await reports.wait(spec.uuid, "Stopped")
    dom = ET.fromstring(other.lookupByName(spec.uuid).XMLDesc())
    assert dom.find("devices/graphics").get("type") == "spice" and dom.find("cpu").get("mode") == "host-model"
    await rec.apply({spec.uuid: vm(state="Running", generation=1)}, *NETS, {})
    t, _ = await reports.wait(spec.uuid, "Running")
    assert ET.fromstring(other.lookupByName(spec.uuid).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)).find(
        "devices/graphics").get("type") == "vnc"  # redefined for the next boot
    await rec.apply({spec.uuid: vm(state="Stopped", generation=2)}, *NETS, {})
    await reports.wait(spec.uuid, "Stopped", since=t, applied=2)  # a stop is applied once the guest is down
    states = reports.states(spec.uuid)  # a report per change: a stop's `applied` comes after its state
    assert [s for s, before in zip(states, [None, *states], strict=False) if s != before] == [
        "Stopped", "Running", "Stopped"]


async def test_desired_pause_and_resume(env):
    rec, reports, other = env
    spec = vm()
    await rec.apply({spec.uuid: spec}, *NETS, {})
    t, _ = await reports.wait(spec.uuid, "Running")
    await rec.apply({spec.uuid: vm(state="Paused", generation=1)}, *NETS, {})
    t, _ = await reports.wait(spec.uuid, "Paused", since=t)
    assert other.lookupByName(spec.uuid).state()[0] == libvirt.VIR_DOMAIN_PAUSED
    other.lookupByName(spec.uuid).resume()  # out of band: policy restart pauses it again
    t, _ = await reports.wait(spec.uuid, "Running", since=t)
    t, _ = await reports.wait(spec.uuid, "Paused", since=t)
    await rec.apply({spec.uuid: vm(state="Stopped", generation=2)}, *NETS, {})  # a paused VM stops too
    t, _ = await reports.wait(spec.uuid, "Stopped", since=t)
    await rec.apply({spec.uuid: vm(state="Paused", generation=3)}, *NETS, {})  # starts, then pauses
    await reports.wait(spec.uuid, "Paused", since=t)


async def test_out_of_band_destroy_is_undone_under_restart_policy(env):
    rec, reports, other = env
    spec = vm()
    await rec.apply({spec.uuid: spec}, *NETS, {})
    await reports.wait(spec.uuid, "Running")
    other.lookupByName(spec.uuid).destroy()
    t, _ = await reports.wait(spec.uuid, "Stopped")
    await reports.wait(spec.uuid, "Running", since=t)
    assert other.lookupByName(spec.uuid).isActive()


async def test_adopt_policy_keeps_the_users_change_until_the_spec_changes(env):
    rec, reports, other = env
    rec.settings.drift_policy = "adopt"
    spec = vm()
    await rec.apply({spec.uuid: spec}, *NETS, {})
    await reports.wait(spec.uuid, "Running")
    other.lookupByName(spec.uuid).destroy()
    t, _ = await reports.wait(spec.uuid, "Stopped", drift=True, generation=spec.generation)  # adopted against it
    assert [b.get("drift") for _, _, _, b in reports if b["state"] == "Stopped"] == [True]  # one report
    await rec.resync()
    await asyncio.sleep(0.2)
    assert not other.lookupByName(spec.uuid).isActive()
    other.lookupByName(spec.uuid).create()  # the user starts it again: no drift any more
    t, _ = await reports.wait(spec.uuid, "Running", since=t, drift=None)
    other.lookupByName(spec.uuid).destroy()
    t, _ = await reports.wait(spec.uuid, "Stopped", since=t, drift=True)
    await rec.apply({spec.uuid: vm(generation=5)}, *NETS, {})  # new intent from the coordinator
    await reports.wait(spec.uuid, "Running", since=t, drift=None)


async def test_garbage_collects_our_domains_only(env, tmp_path):
    rec, reports, other = env
    a, b = vm(), vm(uuid="bbbbbbbb-0000-4000-8000-000000000002", state="Stopped")
    await rec.apply({a.uuid: a, b.uuid: b}, *NETS, {})
    await reports.wait(b.uuid, "Stopped")
    await rec.apply({b.uuid: b}, *NETS, {})
    await reports.wait(a.uuid, "Destroyed")
    assert sorted(ours(other)) == [b.uuid]
    assert other.lookupByName("test").isActive()  # foreign domain untouched


async def test_volumes_are_created_with_backing(env, tmp_path):
    rec, reports, other = env
    base = tmp_path / "base.raw"
    run(["qemu-img", "create", "-q", "-f", "raw", str(base), "4M"])
    spec = vm(state="Stopped", volumes=[
        VolumeSpec(uuid="root1", role="root", disk=FileDisk(path="vols/root1.qcow2", backing=str(base))),
        VolumeSpec(uuid="data1", device_index=1, disk=FileDisk(path=str(tmp_path / "d.qcow2"), size_bytes=1 << 20))])
    await rec.apply({spec.uuid: spec}, *NETS, {})
    await reports.wait(spec.uuid, "Stopped")
    info = json.loads(run(["qemu-img", "info", "--output=json", str(tmp_path / "vols/root1.qcow2")]).stdout)
    assert info["format"] == "qcow2" and info["backing-filename"] == str(base)
    assert json.loads(run(["qemu-img", "info", "--output=json", str(tmp_path / "d.qcow2")]).stdout)[
        "virtual-size"] == 1 << 20
    dom = ET.fromstring(other.lookupByName(spec.uuid).XMLDesc())
    assert dom.find("devices/disk[@device='disk']/source").get("file") == str(tmp_path / "vols/root1.qcow2")


async def test_missing_network_is_reported_as_an_error(env):
    rec, reports, other = env
    spec = vm()
    await rec.apply({spec.uuid: spec}, {}, {}, {})
    _, body = await reports.wait(spec.uuid, "Unknown")
    assert "not in this host's state" in body["error"]


async def test_a_file_outside_the_volume_dir_and_roots_is_reported_not_used(env, tmp_path):
    rec, reports, other = env
    os.symlink("/etc", tmp_path / "escape")
    for bad in (vm(cdrom=IsoSpec(uuid="iso", path="/etc/shadow")),
                vm(uuid="aaaaaaaa-0000-4000-8000-000000000002",
                   volumes=[VolumeSpec(uuid="r", role="root", disk=FileDisk(path="escape/shadow"))])):
        await rec.apply({bad.uuid: bad}, *NETS, {})
        _, body = await reports.wait(bad.uuid, "Unknown")
        assert "outside" in body["error"] and bad.uuid not in ours(other)


async def test_iso_install_switches_boot_order_at_first_reboot(env):
    rec, reports, other = env
    spec = vm(volumes=[VolumeSpec(uuid="r", role="root", disk=FileDisk(path="r.qcow2"))],
              cdrom=IsoSpec(uuid="iso", path="/isos/install.iso"),
              boot_order=[BootDevice.CDROM, BootDevice.HARDDISK])
    await rec.apply({spec.uuid: spec}, *NETS, {})
    await reports.wait(spec.uuid, "Running", boot_order=["CdRom", "HardDisk"])
    assert reports.states(spec.uuid) == ["Running"]
    rec.vms.observer.on_event(DomainEvent(domain_uuid(spec.uuid), spec.uuid, "REBOOTED", 0, 0.0))  # the guest's reboot
    await reports.wait(spec.uuid, "Running", boot_order=["HardDisk", "CdRom"])
    dom = ET.fromstring(other.lookupByName(spec.uuid).XMLDesc())
    assert dom.find("devices/disk[@device='disk']/boot").get("order") == "1"
    meta = DomainMeta.from_xml(other.lookupByName(spec.uuid).metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NS))
    assert meta.install == "done"
    # the coordinator records the new order: the override is no longer needed and is dropped
    await rec.apply({spec.uuid: spec.model_copy(update={"boot_order": [BootDevice.HARDDISK, BootDevice.CDROM],
                                                       "generation": 1})}, *NETS, {})
    meta = DomainMeta.from_xml(other.lookupByName(spec.uuid).metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NS))
    assert meta.install_order == ""


class StartFails(LibvirtDriver):
    """libvirt's test driver whose next `fail` starts fail (as a qemu that dies at once on a loaded host)."""

    def __init__(self) -> None:
        super().__init__("test:///default")
        self.fail = 0

    async def start(self, uuid: str) -> None:
        if self.fail:
            self.fail -= 1
            raise DriverError("start: internal error: qemu unexpectedly closed the monitor")
        await super().start(uuid)


INSTALL = vm(uuid="aaaaaaaa-0000-4000-8000-0000000000e1",
             volumes=[VolumeSpec(uuid="r", role="root", disk=FileDisk(path="r.qcow2"))],
             cdrom=IsoSpec(uuid="iso", path="/isos/install.iso"), boot_order=[BootDevice.CDROM, BootDevice.HARDDISK])


@contextlib.asynccontextmanager
async def agent(tmp_path, reports, driver: LibvirtDriver, **kw):
    """One agent's VM reconciler (settings `kw`) on `driver`; its VMs are left as they are when it ends."""
    await driver.connect(timeout=2)
    rec = Host(driver, settings(tmp_path, **kw), reports)
    await rec.vms.start()
    try:
        yield rec
    finally:
        await rec.vms.close()
        await driver.close()


async def test_an_install_switch_whose_fresh_qemu_fails_to_start_is_retried_not_adopted_as_stopped(tmp_path, reports):
    """The switch stops the installer's qemu before starting one in the new order: under the adopt policy, the VM
    found off when that start failed is started again (with backoff), not taken for the user's stop."""
    driver = StartFails()
    async with agent(tmp_path, reports, driver, drift_policy="adopt", retry_backoff_max=0.2) as rec:
        await rec.apply({INSTALL.uuid: INSTALL}, *NETS, {})
        await reports.wait(INSTALL.uuid, "Running", boot_order=["CdRom", "HardDisk"])
        driver.fail = 2
        rec.vms.observer.on_event(DomainEvent(domain_uuid(INSTALL.uuid), INSTALL.uuid, "REBOOTED", 0, 0.0))
        await reports.wait(INSTALL.uuid, "Running", timeout=15, boot_order=["HardDisk", "CdRom"])
        assert driver.fail == 0 and not [b for _, _, i, b in reports if i == INSTALL.uuid and b.get("drift")]
        await rec.apply({}, {}, {}, {})


async def test_an_install_switch_cut_short_by_a_kill_is_done_by_the_restarted_agent(tmp_path, reports):
    """Killed once the guest's reboot was recorded, before its qemu was replaced: the restarted agent replaces it
    (the installer's qemu would boot the ISO again at the next reboot)."""
    other = libvirt.open("test:///default")
    async with agent(tmp_path, reports, LibvirtDriver("test:///default")) as rec:
        await rec.apply({INSTALL.uuid: INSTALL}, *NETS, {})
        await reports.wait(INSTALL.uuid, "Running", boot_order=["CdRom", "HardDisk"])
        switch = install.switching(rec.vms.ledger.meta[INSTALL.uuid], INSTALL)
        assert switch is not None
        await rec.vms.converger.remember(switch)  # what the reboot event does first
    installer = other.lookupByName(INSTALL.uuid).ID()
    async with agent(tmp_path, reports, LibvirtDriver("test:///default")) as rec:
        await rec.apply({INSTALL.uuid: INSTALL}, *NETS, {})
        await reports.wait(INSTALL.uuid, "Running", boot_order=["HardDisk", "CdRom"])
        dom = other.lookupByName(INSTALL.uuid)
        assert dom.ID() != installer  # a fresh qemu...
        boot = ET.fromstring(dom.XMLDesc()).find("devices/disk[@device='disk']/boot")
        assert boot is not None and boot.get("order") == "1"  # ...disk first
        assert DomainMeta.from_xml(dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NS)).install == "done"
        await rec.apply({}, {}, {}, {})
    other.close()


async def test_concurrent_applies_serialize(env):
    rec, reports, other = env
    specs = [vm(uuid=f"cccccccc-0000-4000-8000-00000000000{i}", state="Stopped") for i in range(4)]
    await asyncio.gather(*(rec.apply({s.uuid: s for s in specs[:i + 1]}, *NETS, {}) for i in range(4)))
    await rec.apply({s.uuid: s for s in specs}, *NETS, {})
    assert sorted(ours(other)) == sorted(s.uuid for s in specs)


async def test_adoption_written_back_after_a_newer_user_change_does_not_undo_it(env):
    """Policy adopt: the coordinator writes a drift report of generation g back as generation g+1. If the
    user changes the VM again before that write-back arrives, it is an intent already met, not a new one:
    the newer change is drift from g+1 (reported for adoption), never undone."""
    rec, reports, other = env
    rec.settings.drift_policy = "adopt"
    spec = vm()
    await rec.apply({spec.uuid: spec}, *NETS, {})
    t, _ = await reports.wait(spec.uuid, "Running")
    other.lookupByName(spec.uuid).suspend()
    t, _ = await reports.wait(spec.uuid, "Paused", since=t, drift=True, generation=spec.generation)
    other.lookupByName(spec.uuid).resume()  # before the coordinator's adoption reaches the agent
    t, _ = await reports.wait(spec.uuid, "Running", since=t, drift=None)
    await rec.apply({spec.uuid: vm(state="Paused", generation=spec.generation + 1)}, *NETS, {})  # the write-back
    await reports.wait(spec.uuid, "Running", since=t, drift=True, generation=spec.generation + 1)
    await asyncio.sleep(0.2)
    assert other.lookupByName(spec.uuid).state()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert reports.states(spec.uuid)[-1] == "Running"


async def test_a_reboot_request_is_applied_once_with_a_fresh_start_also_after_an_agent_restart(env, reports):
    rec, _, other = env
    rec.settings.drift_policy = "adopt"
    spec = vm()
    await rec.apply({spec.uuid: spec}, *NETS, {})
    t, _ = await reports.wait(spec.uuid, "Running", reboot_seq=0)
    first = other.lookupByName(spec.uuid).ID()
    rebooted = vm(generation=1, reboot_seq=1)
    await rec.apply({spec.uuid: rebooted}, *NETS, {})
    await reports.wait(spec.uuid, "Running", since=t, reboot_seq=1)
    second = other.lookupByName(spec.uuid).ID()
    assert second != first  # powered off and started: a fresh qemu
    assert "Stopped" not in reports.states(spec.uuid)  # the passing stop is neither reported nor adopted

    again = Host(rec.vms.driver, rec.settings, reports)  # the agent restarted: the request was applied
    await again.vms.start()
    await again.apply({spec.uuid: rebooted}, *NETS, {})
    await asyncio.sleep(0.3)
    assert other.lookupByName(spec.uuid).ID() == second
    await again.vms.close()

    # the agent died while the guest was off for reboot 2: the next agent starts it, not adopts the stop
    dom = other.lookupByName(spec.uuid)
    meta = DomainMeta.from_xml(dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NS))
    meta.reboot_seq, meta.intent, meta.intent_generation = 2, "", None
    dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, meta.to_xml(), "hs", NS,
                    libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    dom.destroy()
    third = Host(rec.vms.driver, rec.settings, reports)
    await third.vms.start()
    t = time.monotonic()
    await third.apply({spec.uuid: vm(generation=2, reboot_seq=2)}, *NETS, {})
    await reports.wait(spec.uuid, "Running", since=t, reboot_seq=2, drift=None)
    assert other.lookupByName(spec.uuid).isActive()
    await third.vms.close()
