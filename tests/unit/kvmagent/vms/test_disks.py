"""Disk planning: qcow2 paths and commands, and what a running domain needs hot-plugged."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from agentkit.model import FileDisk, IsoSpec, RbdDisk, VmSpec, VolumeSpec
from kvmagent.vms.disks import Backing, create_argv, missing, plan_hotplug
from kvmagent.vms.paths import NoStorages, confined

RBD = RbdDisk(pool="p", image="i", monitors=["198.18.0.2"], user="hs",
              secret_uuid="3a0e4a52-9a5e-4c43-9d3a-2f1d1c1e7a10")


def vm(**kw) -> VmSpec:
    return VmSpec(uuid="aaaaaaaa-0000-4000-8000-000000000001", name="v", **kw)


def test_relative_paths_live_under_the_volume_dir(tmp_path):
    vols = tmp_path / "vols"
    spec = confined(vm(volumes=[
        VolumeSpec(uuid="r", role="root", disk=FileDisk(path="a/root.qcow2", backing="images/base.raw")),
        VolumeSpec(uuid="d", device_index=1, disk=FileDisk(path=f"{vols}/d.qcow2")),
        VolumeSpec(uuid="c", device_index=2, disk=RBD)]), str(vols), NoStorages())
    assert [v.disk.path for v in spec.volumes[:2]] == [f"{vols}/a/root.qcow2", f"{vols}/d.qcow2"]
    assert spec.volumes[0].disk.backing == f"{vols}/images/base.raw" and spec.volumes[1].disk.backing is None
    assert spec.volumes[2].disk == RBD


def test_only_missing_files_are_created():
    spec = vm(volumes=[VolumeSpec(uuid="r", role="root", disk=FileDisk(path="/v/r.qcow2")),
                       VolumeSpec(uuid="d", device_index=1, disk=FileDisk(path="/v/d.qcow2")),
                       VolumeSpec(uuid="c", device_index=2, disk=RBD)])
    assert [d.path for d in missing(spec, exists=lambda p: p == "/v/r.qcow2")] == ["/v/d.qcow2"]


def test_a_disk_over_its_backing_file_is_at_least_as_large():
    plain = FileDisk(path="/v/d.qcow2", size_bytes=1 << 20)
    assert create_argv(plain) == ["qemu-img", "create", "-q", "-f", "qcow2", "/v/d.qcow2", str(1 << 20)]
    over = FileDisk(path="/v/r.qcow2", backing="/img/base.raw", size_bytes=1 << 20)
    assert create_argv(over, Backing("raw", 4 << 20)) == [
        "qemu-img", "create", "-q", "-f", "qcow2", "-b", "/img/base.raw", "-F", "raw", "/v/r.qcow2", str(4 << 20)]


LIVE = """<domain><devices>
<disk type='file' device='disk'><source file='/v/r.qcow2'/><target dev='vda' bus='virtio'/>
<alias name='ua-vol-r'/></disk>
<disk type='file' device='disk'><source file='/v/old.qcow2'/><target dev='vdb' bus='virtio'/>
<alias name='ua-vol-old'/></disk>
<disk type='file' device='cdrom'><driver name='qemu' type='raw'/><source file='/a.iso'/><target dev='hdc' bus='ide'/>
<readonly/><alias name='ua-cdrom'/></disk>
</devices></domain>"""


def test_hotplug_swaps_media_detaches_gone_volumes_and_attaches_new_ones_on_free_targets():
    spec = vm(cdrom=IsoSpec(uuid="b", path="/b.iso"), volumes=[
        VolumeSpec(uuid="r", role="root", disk=FileDisk(path="/v/r.qcow2")),
        VolumeSpec(uuid="new2", device_index=2, disk=FileDisk(path="/v/n2.qcow2")),
        VolumeSpec(uuid="new1", device_index=1, disk=FileDisk(path="/v/n1.qcow2"))])
    plan = plan_hotplug(spec, LIVE, "writethrough")
    assert plan.media is not None and ET.fromstring(plan.media).find("source").get("file") == "/b.iso"
    assert plan.detach == ["ua-vol-old"]
    assert [(a.volume, a.target) for a in plan.attach] == [("new1", "vdc"), ("new2", "vdd")]  # vdb still taken
    disk = ET.fromstring(plan.attach[0].xml)
    assert disk.find("driver").get("cache") == "writethrough" and disk.find("alias").get("name") == "ua-vol-new1"


def test_nothing_to_hotplug_when_the_live_domain_matches():
    spec = vm(cdrom=IsoSpec(uuid="a", path="/a.iso"), volumes=[
        VolumeSpec(uuid="r", role="root", disk=FileDisk(path="/v/r.qcow2")),
        VolumeSpec(uuid="old", device_index=1, disk=FileDisk(path="/v/old.qcow2"))])
    plan = plan_hotplug(spec, LIVE, "none")
    assert (plan.media, plan.detach, plan.attach) == (None, [], [])
    ejected = plan_hotplug(spec.model_copy(update={"cdrom": None}), LIVE, "none")
    assert ejected.media is not None and ET.fromstring(ejected.media).find("source") is None
