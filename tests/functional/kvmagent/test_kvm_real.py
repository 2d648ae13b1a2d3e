"""The reconciler against a real private libvirtd running the tiny guest under TCG.

One simulated host per module; every test boots its own guest(s) and leaves none behind.
What is asserted is what an operator would look at: the domain XML, virsh, the guest's serial log
(`HS-...` lines printed by the guest itself) and the reports the coordinator would receive.
"""

from __future__ import annotations

import asyncio
import re
import time
import xml.etree.ElementTree as ET

import pytest

from agentkit.model import BootDevice, FileDisk, IsoSpec, VolumeSpec
from agentkit.proc import run
from kvmagent.errors import DriverError
from testbed.guest_image import make_data_iso

pytestmark = [pytest.mark.real, pytest.mark.timeout(240)]
EVENT_TO_REPORT = 1.0  # seconds: the bound from the libvirt event to the coordinator


def xml_of(lab, name: str, inactive: bool = False) -> ET.Element:
    return ET.fromstring(lab.host.virsh("dumpxml", *(["--inactive"] if inactive else []), name))


def ds_identify(tmp_path, dmi: dict[str, str]) -> str:
    """cloud-init's own ds-identify over a root whose /sys/class/dmi/id is what the guest saw."""
    root = tmp_path / "root"
    (root / "sys/class/dmi/id").mkdir(parents=True)
    for k, v in dmi.items():
        (root / "sys/class/dmi/id" / k).write_text(v + "\n")
    (root / "bin").mkdir()
    virt = root / "bin/systemd-detect-virt"  # what the guest's systemd would answer
    virt.write_text("#!/bin/sh\necho kvm\n")
    virt.chmod(0o755)
    run(["env", f"PATH={root / 'bin'}:/usr/bin:/bin", f"PATH_ROOT={root}", "DI_LOG=/dev/null",
         "/usr/lib/cloud-init/ds-identify", "--force"])
    return (root / "run/cloud-init/cloud.cfg").read_text()


async def test_lifecycle_guest_view_and_out_of_band_destroy(lab, make_agent, tmp_path):
    agent = await make_agent(drift_policy="restart", cache_mode="none")
    uuid = "a0000000-0000-4000-8000-00000000000a"
    vm = lab.vm(uuid, volumes=[VolumeSpec(uuid="a0data01", device_index=1,
                                          disk=FileDisk(path="a/data.qcow2", size_bytes=16 << 20))])
    await agent.apply(vm)
    _, body = await agent.reports.wait(uuid, "Running", timeout=15)
    assert body["console"] == {"protocol": "vnc", "kinds": ["vnc", "serial"]}  # unix sockets only
    assert "qemu" not in lab.host.ns.sh("ss", "-Hltnp").stdout  # nothing of the VM listens on the network
    await lab.wait_serial(uuid, r"HS-READY")
    log = lab.serial(uuid)
    assert re.search(rf"HS-DHCP-BOUND iface=eth0 ip={re.escape(lab.l3.cidr.rsplit('.', 1)[0])}\.\d+", log)
    assert "hs-user-data: hello-from-hoststack" in log
    assert "HS-DISK vda serial=a0data01 write_cache=write back" in log  # cache=none (the agent's setting)
    assert "HS-CPU model=QEMU Virtual CPU" in log  # cpu mode none
    assert "HS-DISPLAY 0x1234:0x1111" in log  # VGA for VNC
    dmi = dict(re.findall(r"HS-DMI (\w+)=(.*)", log))
    assert dmi["sys_vendor"] == "HostStack" and dmi["product_serial"] == uuid
    assert "datasource_list: [ Ec2, None ]" in ds_identify(tmp_path, dmi)

    # out of band: the libvirt event reaches the report in well under a second; policy restart undoes it
    t0 = time.monotonic()
    lab.host.virsh("destroy", uuid)
    t_report, _ = await agent.reports.wait(uuid, "Stopped", since=t0)
    assert t_report - agent.event_time(uuid, "STOPPED", since=t0) < EVENT_TO_REPORT
    await agent.reports.wait(uuid, "Running", since=t_report, timeout=10)
    await lab.wait_serial(uuid, r"HS-READY", count=2)

    # graceful stop through desired state: the guest sees the ACPI power button
    t0 = time.monotonic()
    await agent.apply(vm.model_copy(update={"state": "Stopped", "generation": 1}))
    await agent.reports.wait(uuid, "Stopped", since=t0, timeout=25)
    assert "HS-ACPI-POWERBUTTON" in lab.serial(uuid)
    assert lab.host.virsh("domstate", uuid).strip() == "shut off"

    await agent.apply()  # deleted
    await agent.reports.wait(uuid, "Destroyed")
    assert uuid not in lab.host.virsh("list", "--all", "--name")


async def test_guest_poweroff_and_virsh_start_are_adopted(lab, make_agent):
    agent = await make_agent(drift_policy="adopt")
    uuid = "b0000000-0000-4000-8000-00000000000b"
    vm = lab.vm(uuid, action="poweroff")
    await agent.apply(vm)
    t_run, _ = await agent.reports.wait(uuid, "Running", timeout=15)
    t_stop, body = await agent.reports.wait(uuid, "Stopped", since=t_run, timeout=60)
    assert t_stop - agent.event_time(uuid, "STOPPED", since=t_run) < EVENT_TO_REPORT
    await agent.reports.wait(uuid, "Stopped", drift=True)
    assert "HS-POWEROFF" in lab.serial(uuid)
    await asyncio.sleep(1.5)
    assert lab.host.virsh("domstate", uuid).strip() == "shut off"  # not restarted: adopted

    t0 = time.monotonic()
    lab.host.virsh("start", uuid)  # the user starts it by hand: reported, no drift any more
    t_report, _ = await agent.reports.wait(uuid, "Running", since=t0, drift=None)
    assert t_report - agent.event_time(uuid, "STARTED", since=t0) < EVENT_TO_REPORT
    lab.host.virsh("destroy", uuid)
    await agent.reports.wait(uuid, "Stopped", since=t_report, drift=True)
    await agent.apply(vm.model_copy(update={"state": "Stopped", "generation": 1}))  # coordinator adopts
    await agent.reports.wait(uuid, "Stopped", drift=None)


async def test_libvirtd_restart_then_resync(lab, make_agent):
    agent = await make_agent()
    keep, gone, new = (f"c{i}000000-0000-4000-8000-00000000000c" for i in range(3))
    await agent.apply(lab.vm(keep), lab.vm(gone))
    await agent.reports.wait(keep, "Running", timeout=15)
    await agent.reports.wait(gone, "Running", timeout=15)
    pids = {u: run(["pgrep", "-f", f"guest={u}"]).stdout.split()[0] for u in (keep, gone)}

    lab.host.stop_libvirtd()
    await asyncio.sleep(0.5)
    assert not agent.driver.connected
    with pytest.raises(DriverError, match="not connected"):  # kept for the resync, failing meanwhile (/health)
        await agent.apply(lab.vm(keep), lab.vm(new, state="Stopped"))
    lab.host.start()
    await agent.reports.wait(new, "Stopped", timeout=20)  # applied by the resync after reconnect
    await agent.reports.wait(gone, "Destroyed", timeout=10)
    assert gone not in lab.host.virsh("list", "--all", "--name")
    assert run(["ps", "-p", pids[gone]], rcs=(0, 1)).returncode == 1
    assert run(["pgrep", "-f", f"guest={keep}"]).stdout.split()[0] == pids[keep]  # survived the restart

    t0 = time.monotonic()  # events flow on the new connection
    lab.host.virsh("start", new)
    await agent.reports.wait(new, "Running", since=t0)


async def test_live_iso_volume_and_modes(lab, make_agent):
    agent = await make_agent()
    uuid = "d0000000-0000-4000-8000-00000000000d"
    iso = make_data_iso(lab.run.path("data-a.iso"), "hs-data-A")
    vm = lab.vm(uuid, cache_mode="writethrough", console_mode="spice")
    await agent.apply(vm, configs={"kvm.vm.cpuMode": "host-model"})
    _, body = await agent.reports.wait(uuid, "Running", timeout=15)
    assert body["console"] == {"protocol": "spice", "kinds": ["spice", "serial"]}
    dom = xml_of(lab, uuid)
    assert dom.find("cpu").get("mode") in ("host-model", "custom")  # libvirt expands host-model when running
    assert dom.find("devices/graphics").get("type") == "spice"
    await lab.wait_serial(uuid, r"HS-CDROM content=empty")
    log = lab.serial(uuid)
    assert "HS-DISPLAY 0x1b36:0x0100" in log  # QXL for SPICE
    assert "HS-CPU model=QEMU Virtual CPU" not in log

    gen = 0

    async def change(**update):
        nonlocal gen
        gen += 1
        await agent.apply(vm.model_copy(update={**update, "generation": gen}),
                          configs={"kvm.vm.cpuMode": "host-model"})

    await change(cdrom=IsoSpec(uuid="isoA", path=str(iso)))
    await lab.wait_serial(uuid, r"HS-CDROM content=hs-data-A", timeout=20)
    dom = xml_of(lab, uuid)
    assert dom.find("devices/disk[@device='cdrom']/source").get("file") == str(iso)
    assert dom.find("devices/disk[@device='cdrom']/boot") is None  # attaching an ISO keeps the boot order
    data = VolumeSpec(uuid="d0data01", device_index=1, disk=FileDisk(path="d/data.qcow2", size_bytes=8 << 20))
    await change(cdrom=IsoSpec(uuid="isoA", path=str(iso)), volumes=[data])
    await lab.wait_serial(uuid, r"HS-DISK vda serial=d0data01 write_cache=write through", timeout=20)
    assert xml_of(lab, uuid).find("devices/disk[@device='disk']/driver").get("cache") == "writethrough"
    await change(cdrom=None, volumes=[])
    await lab.wait_serial(uuid, r"HS-CDROM content=empty", count=2, timeout=20)
    await lab.wait_serial(uuid, r"(?m)^HS-BLOCKDEVS sr0 $", timeout=30)
    dom = xml_of(lab, uuid)
    assert dom.find("devices/disk[@device='disk']") is None
    assert dom.find("devices/disk[@device='cdrom']/source").get("file") is None  # empty tray
    assert xml_of(lab, uuid, inactive=True).find("devices/disk[@device='disk']") is None


async def test_vm_from_iso_boots_cdrom_then_disk(lab, make_agent):
    agent = await make_agent()
    uuid = "e0000000-0000-4000-8000-00000000000e"
    root = VolumeSpec(uuid="e0root01", role="root", disk=FileDisk(path="e/root.qcow2", backing=str(lab.guest.disk)))
    vm = lab.vm(uuid, kernel=None, volumes=[root], cdrom=IsoSpec(uuid="install", path=str(lab.guest.iso)),
                boot_order=[BootDevice.CDROM, BootDevice.HARDDISK])
    await agent.apply(vm)
    await agent.reports.wait(uuid, "Running", timeout=15, boot_order=["CdRom", "HardDisk"])
    await lab.wait_serial(uuid, r"HS-INIT-START boot=cdrom action=reboot", timeout=90)
    await lab.wait_serial(uuid, r"HS-INIT-START boot=disk action=hold", timeout=120)
    await agent.reports.wait(uuid, "Running", boot_order=["HardDisk", "CdRom"])
    dom = xml_of(lab, uuid)
    assert dom.find("devices/disk[@device='disk']/boot").get("order") == "1"
    assert dom.find("devices/disk[@device='cdrom']/boot").get("order") == "2"


async def test_destroy_while_agent_down_completes_when_it_returns(lab, make_agent, reports):
    first = await make_agent()
    uuid = "f0000000-0000-4000-8000-00000000000f"
    await first.apply(lab.vm(uuid, state="Stopped"))
    await reports.wait(uuid, "Stopped")
    await first.stop(clean=False)  # agent down; meanwhile the VM is deleted in the coordinator
    assert uuid in lab.host.virsh("list", "--all", "--name")
    second = await make_agent()
    await second.apply()  # its first snapshot no longer has the VM
    await reports.wait(uuid, "Destroyed")
    assert uuid not in lab.host.virsh("list", "--all", "--name")
