"""Disk planning: qcow2 paths and commands, and what a running domain needs hot-plugged."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from agentkit.model import FileDisk, IsoSpec, KernelBoot, RbdDisk, VmSpec, VolumeSpec
from kvmagent.errors import SpecError, StorageError
from kvmagent.vms import disks
from kvmagent.vms.disks import (
    Backing,
    absolute,
    backing_of,
    check_confined,
    create_argv,
    ensure,
    info_argv,
    missing,
    plan_hotplug,
)

RBD = RbdDisk(pool="p", image="i", monitors=["198.18.0.2"], user="hs",
              secret_uuid="3a0e4a52-9a5e-4c43-9d3a-2f1d1c1e7a10")


def vm(**kw) -> VmSpec:
    return VmSpec(uuid="aaaaaaaa-0000-4000-8000-000000000001", name="v", **kw)


def test_relative_paths_live_under_the_volume_dir():
    spec = absolute(vm(volumes=[
        VolumeSpec(uuid="r", role="root", disk=FileDisk(path="a/root.qcow2", backing="images/base.raw")),
        VolumeSpec(uuid="d", device_index=1, disk=FileDisk(path="/shared/d.qcow2")),
        VolumeSpec(uuid="c", device_index=2, disk=RBD)]), "/vols")
    assert [v.disk.path for v in spec.volumes[:2]] == ["/vols/a/root.qcow2", "/shared/d.qcow2"]
    assert spec.volumes[0].disk.backing == "/vols/images/base.raw" and spec.volumes[1].disk.backing is None
    assert spec.volumes[2].disk == RBD


def test_relative_iso_and_kernel_paths_live_under_the_volume_dir_too():
    spec = absolute(vm(cdrom=IsoSpec(uuid="i", path="isos/a.iso"), kernel=KernelBoot(kernel="k/vmlinux")), "/vols")
    assert spec.cdrom and spec.cdrom.path == "/vols/isos/a.iso"
    assert spec.kernel and (spec.kernel.kernel, spec.kernel.initrd) == ("/vols/k/vmlinux", None)


def test_every_file_a_vm_names_must_really_lie_in_the_volume_dir_or_a_root(tmp_path):
    vols, isos, etc = tmp_path / "vols", tmp_path / "isos", tmp_path / "etc"
    for d in (vols, isos, etc):
        d.mkdir()
    os.symlink(etc, vols / "escape")
    fine = vm(volumes=[VolumeSpec(uuid="r", role="root", disk=FileDisk(path=str(vols / "r.qcow2"),
                                                                        backing=str(isos / "base.raw")))],
              cdrom=IsoSpec(uuid="i", path=str(isos / "a.iso")), kernel=KernelBoot(kernel=str(isos / "k")))
    check_confined(fine, str(vols), [str(isos)])
    for bad in (vm(volumes=[VolumeSpec(uuid="r", disk=FileDisk(path=str(vols / "escape/shadow")))]),
                vm(volumes=[VolumeSpec(uuid="r", disk=FileDisk(path=str(vols / "r"), backing=str(etc / "s")))]),
                vm(cdrom=IsoSpec(uuid="i", path="/etc/shadow")),
                vm(kernel=KernelBoot(kernel=str(isos / "k"), initrd=str(etc / "initrd")))):
        with pytest.raises(SpecError, match="outside"):
            check_confined(bad, str(vols), [str(isos)])


def test_a_backing_file_is_opened_in_its_declared_format_never_probed():
    raw = FileDisk(path="/v/r.qcow2", backing="/img/base.raw")
    assert info_argv(raw) == ["qemu-img", "info", "-U", "-f", "raw", "--output=json", "/img/base.raw"]
    assert backing_of(raw, {"format": "raw", "virtual-size": 4096}) == Backing("raw", 4096)
    qcow2 = FileDisk(path="/v/r.qcow2", backing="/img/base.qcow2", backing_format="qcow2")
    assert info_argv(qcow2)[4] == "qcow2"
    with pytest.raises(SpecError, match="has a backing file of its own"):
        backing_of(qcow2, {"format": "qcow2", "virtual-size": 4096, "backing-filename": "/etc/shadow"})


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


async def test_a_disk_whose_directory_cannot_be_made_fails_its_vm_with_the_path(tmp_path):
    (tmp_path / "taken").write_text("a file where the disk's directory should be")
    path = str(tmp_path / "taken" / "vm" / "r.qcow2")
    with pytest.raises(StorageError, match=f"disk {path}: cannot make its directory: Not a directory"):
        await ensure(vm(volumes=[VolumeSpec(uuid="r", role="root", disk=FileDisk(path=path))]))


async def test_a_disk_whose_creation_was_cut_short_is_made_again(tmp_path, monkeypatch):
    """qemu-img killed with the agent (or a power loss) midway leaves part of a qcow2: the next start makes the
    disk again, where it took that part for the disk (a file that exists is never touched) and the VM never
    started."""
    class Killed(BaseException):
        pass

    whole = b"QFI\xfb" + bytes(4092)

    async def cut_short(argv: list[str], **kw: object) -> None:
        Path(argv[-2]).write_bytes(whole[:4])
        raise Killed()

    async def made(argv: list[str], **kw: object) -> None:
        Path(argv[-2]).write_bytes(whole)  # qemu-img flushes it before it ends

    path = tmp_path / "vm" / "r.qcow2"
    spec = vm(volumes=[VolumeSpec(uuid="r", role="root", disk=FileDisk(path=str(path), size_bytes=4096))])
    monkeypatch.setattr(disks, "arun", cut_short)
    with pytest.raises(Killed):
        await ensure(spec)
    monkeypatch.setattr(disks, "arun", made)
    await ensure(spec)
    assert path.read_bytes() == whole and [p.name for p in path.parent.iterdir()] == ["r.qcow2"]


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
