"""Volumes on LocalStorage under the tiny guest on a real private libvirtd (TCG), through the agent's pipeline
(bridges → storage → VMs, as kvmagent's composition root wires them).

A VM boots from a root volume made from an image (an overlay on the cached image); a blank data volume
and one from a DataVolumeTemplate are attached live (the guest prints each new disk, with the letters
of its first bytes), snapshotted while attached (libvirt switches qemu to the new overlay), detached,
reverted; an image made from the stopped VM's root volume boots a second VM.
"""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from agentkit.model import (
    ExportSpec,
    PrimaryStorageSpec,
    Revert,
    SnapshotSpec,
    StoredVolumeSpec,
    VmSpec,
    VolumeDisk,
    VolumeSpec,
)
from agentkit.proc import run
from agentkit.supervise import Supervisor
from kvmagent.agent import Reconciler
from kvmagent.bridges import Bridges, BridgesComponent
from kvmagent.components import VmsComponent
from kvmagent.libvirt_driver import LibvirtDriver
from kvmagent.storage import LibvirtHolders, StorageComponent, StorageSettings
from kvmagent.vms import VmReconciler, VmSettings

pytestmark = [pytest.mark.real, pytest.mark.timeout(420)]
MiB = 1 << 20
VM1, VM2 = "a1000000-0000-4000-8000-0000000000a1", "a2000000-0000-4000-8000-0000000000a2"


class Node:
    """One host's pipeline: bridges, storage and VMs as actors; `put` gives it a new desired state."""

    def __init__(self, lab, reports, driver, storage, vms, reconciler, tasks):
        self.lab, self.reports, self.driver = lab, reports, driver
        self.storage, self.vms, self.reconciler, self.tasks = storage, vms, reconciler, tasks
        self.items: dict[str, object] = {}
        self.rev = 0

    async def put(self, *items) -> None:
        for item in items:
            kind = {StoredVolumeSpec: "volume", VmSpec: "vm", PrimaryStorageSpec: "storage"}[type(item)]
            self.items[f"{kind}/{item.uuid}"] = item
        self.rev += 1
        await self.reconciler.on_state(dict(self.items), self.rev)

    async def volume(self, uuid: str, until, timeout: float = 60) -> dict:
        """The volume's newest report once `until(report)` holds."""
        end = time.monotonic() + timeout
        while True:
            found = [b for _, k, i, b in self.reports if (k, i) == ("volume", uuid)]
            if found and until(found[-1]):
                return found[-1]
            assert time.monotonic() < end, f"volume {uuid}: condition never met; last report {found[-1:]}"
            await asyncio.sleep(0.1)

    def source(self, vm: str, volume: str) -> str | None:
        dom = ET.fromstring(self.lab.host.virsh("dumpxml", vm))
        for disk in dom.findall("devices/disk"):
            alias = disk.find("alias")
            if alias is not None and alias.get("name") == f"ua-vol-{volume}":
                return disk.find("source").get("file")
        return None


@pytest.fixture
async def node(lab, reports, images):
    driver = LibvirtDriver(lab.host.uri)
    await driver.connect(timeout=10)

    storage = StorageComponent(StorageSettings(check_interval=1), "h1", "kvm1", LibvirtHolders(driver), reports,
                               images.locate)
    bridges = BridgesComponent(Bridges(netns=lab.host.ns.name))
    settings = VmSettings(domain_type="qemu", serial_log_dir=str(lab.host.vm_dir), volume_dir=str(lab.run.path("vols")),
                          stop_timeout=20, console_dir=str(lab.run.path("consoles")), host_address=lab.mgmt)
    vms = VmReconciler(driver, bridges, settings, reports, storages=storage)
    storage.listeners.append(vms.storage_changed)
    reconciler = Reconciler([bridges, storage, VmsComponent(vms, after=("bridges", "storage"))], resync_interval=30)
    storage.wake = lambda: reconciler.poke(storage.name)
    crashes: list[str] = []
    tasks = Supervisor(on_crash=lambda: crashes.append("crash"))
    await vms.start()
    reconciler.start(tasks)
    storage.start()
    n = Node(lab, reports, driver, storage, vms, reconciler, tasks)
    l2, l3 = lab.nets
    n.items.update({f"l2/{k}": v for k, v in l2.items()} | {f"l3/{k}": v for k, v in l3.items()})
    yield n
    n.items = {k: v for k, v in n.items.items() if not k.startswith("vm/")}
    await n.put()
    for uuid in (VM1, VM2):
        await reports.wait(uuid, "Destroyed", timeout=30)
    await tasks.stop()
    await reconciler.close()
    await driver.close()
    assert not crashes, tasks.crashed


async def test_volumes_under_a_running_guest(lab, node, images, reports):
    ls = PrimaryStorageSpec(uuid="ls1", name="local", type="LocalStorage", url=str(lab.run.path("local")))
    tiny = images.publish(lab.guest.disk, "tiny", "raw")
    tmpl_path = images.root / "tmpl.qcow2"
    run(["qemu-img", "create", "-q", "-f", "qcow2", str(tmpl_path), str(8 * MiB)])
    run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x41 0 64k", str(tmpl_path)])  # 'A's
    tmpl = images.publish(tmpl_path, "tmpl", "qcow2")
    root = StoredVolumeSpec(uuid="root1", storage_uuid="ls1", size_bytes=64 * MiB, image=tiny)
    vm = lab.vm(VM1, kernel=None, volumes=[VolumeSpec(uuid="root1", role="root", disk=VolumeDisk(storage_uuid="ls1"))])
    await node.put(ls, root, vm)  # the VM waits for its root volume, which waits for the image
    await reports.wait(VM1, "Running", timeout=90)
    await lab.wait_serial(VM1, r"HS-INIT-START boot=disk action=hold", timeout=120)
    await lab.wait_serial(VM1, r"HS-USERDATA-END", timeout=60)
    assert images.gets == ["/tiny.raw"]
    assert node.source(VM1, "root1") == str(lab.run.path("local/volumes/root1/f0.qcow2"))

    # a blank data volume and one from a template, attached live
    blank = StoredVolumeSpec(uuid="blank1", storage_uuid="ls1", size_bytes=16 * MiB)
    fromt = StoredVolumeSpec(uuid="tmpl1", storage_uuid="ls1", size_bytes=16 * MiB, image=tmpl)
    data = [VolumeSpec(uuid=u, device_index=i, disk=VolumeDisk(storage_uuid="ls1"))
            for i, u in ((1, "blank1"), (2, "tmpl1"))]
    with_data = vm.model_copy(update={"volumes": vm.volumes + data, "generation": 1})
    await node.put(blank, fromt, with_data)
    found = await lab.wait_serial(VM1, r"HS-DISK (vd\w) serial=(blank1|tmpl1) write_cache=[\w ]+ head=(\w*)", count=2,
                                  timeout=60)
    heads = {serial: head for _, serial, head in found}
    assert heads == {"blank1": "", "tmpl1": "A" * 16}  # zeros, and the template's data

    # a snapshot while attached: qemu switches to the new overlay (libvirt), the record follows
    t0 = time.monotonic()
    blank_s = blank.model_copy(update={"snapshots": [SnapshotSpec(uuid="snap1", seq=1)]})
    await node.put(blank_s)
    await node.volume("blank1", lambda b: b.get("snapshots") == ["snap1"])
    assert node.source(VM1, "blank1") == str(lab.run.path("local/volumes/blank1/f1.qcow2"))
    # a revert under the running guest is refused, and says why
    reverted = blank_s.model_copy(update={"revert": Revert(seq=2, snapshot_uuid="snap1")})
    await node.put(reverted)
    await node.volume("blank1", lambda b: "in use by a running VM" in (b["error"] or ""))
    # detached: the guest loses the disk, then the revert goes through
    await node.put(with_data.model_copy(update={"volumes": vm.volumes + data[1:], "generation": 2}))
    await lab.wait_serial(VM1, r"(?m)^HS-BLOCKDEVS (?!.*vdb ).*vdc.*$", timeout=60)
    await node.volume("blank1", lambda b: b.get("revert_seq") == 2 and b["error"] is None, timeout=60)
    assert time.monotonic() - t0 < 120

    # an image from the stopped VM's root volume boots a second VM
    await node.put(with_data.model_copy(update={"volumes": vm.volumes + data[1:], "generation": 3,
                                                "state": "Stopped"}))
    await reports.wait(VM1, "Stopped", timeout=40)
    await node.put(root.model_copy(update={"exports": [ExportSpec(image_uuid="fromroot")]}))
    made = (await node.volume("root1", lambda b: "fromroot" in (b.get("exports") or {})))["exports"]["fromroot"]
    copy = images.publish(Path(made["path"]), "fromroot", "qcow2")
    assert copy.sha256 == made["sha256"]
    root2 = StoredVolumeSpec(uuid="root2", storage_uuid="ls1", size_bytes=64 * MiB, image=copy)
    vm2 = lab.vm(VM2, kernel=None, volumes=[VolumeSpec(uuid="root2", role="root", disk=VolumeDisk(storage_uuid="ls1"))])
    await node.put(root2, vm2)
    await lab.wait_serial(VM2, r"HS-INIT-START boot=disk action=hold", timeout=150)
    await lab.wait_serial(VM2, r"HS-READY", timeout=60)
