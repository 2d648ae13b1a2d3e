"""A VM's paths: raw disks on a storage confined to its directory, volumes and ISO images resolved by it."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from agentkit.model import FileDisk, ImageRef, IsoSpec, VmSpec, VolumeDisk, VolumeSpec
from kvmagent.errors import PathEscapes, StorageUnavailable
from kvmagent.vms.paths import on_storage, references, resolved, roots

ISO = ImageRef(uuid="iso1", format="iso", sha256="0" * 64, size=1)


class Storages:
    def root(self, storage_uuid):
        if storage_uuid == "down":
            raise StorageUnavailable("primary storage down: /mnt/smp on host kvm2 is not mounted")
        return Path("/ps") / storage_uuid

    def volume_path(self, volume_uuid, storage_uuid):
        return self.root(storage_uuid) / "volumes" / volume_uuid / "f3.qcow2"

    def iso_path(self, iso):
        return Path("/ps/local/images/iso1/image.iso")

    @contextlib.asynccontextmanager
    async def holding(self, volume_uuids):
        yield


def vm(*volumes: VolumeSpec, **kw) -> VmSpec:
    return VmSpec(uuid="aaaaaaaa-0000-4000-8000-000000000001", name="v", volumes=list(volumes), **kw)


@pytest.mark.parametrize("disk", [FileDisk(path="../x.qcow2", storage_uuid="local"),
                                  FileDisk(path="/etc/shadow", storage_uuid="local"),
                                  FileDisk(path="ok.qcow2", backing="../../../etc/shadow", storage_uuid="local")])
def test_a_raw_disk_on_a_storage_cannot_leave_its_directory(disk):
    with pytest.raises(PathEscapes, match="outside"):
        on_storage(vm(VolumeSpec(uuid="r", role="root", disk=disk)), Storages())


def test_a_raw_disk_on_a_storage_lives_in_its_directory_and_needs_it_usable():
    spec = on_storage(vm(VolumeSpec(uuid="r", role="root", disk=FileDisk(path="expert/r.qcow2",
                                                                         storage_uuid="local"))), Storages())
    assert spec.volumes[0].disk.path == "/ps/local/expert/r.qcow2" and roots(spec, Storages()) == ["/ps/local"]
    with pytest.raises(StorageUnavailable, match="host kvm2"):
        on_storage(vm(VolumeSpec(uuid="r", role="root", disk=FileDisk(path="r.qcow2", storage_uuid="down"))),
                   Storages())


def test_volumes_and_iso_images_become_the_files_the_storage_has():
    spec = vm(VolumeSpec(uuid="v1", role="root", disk=VolumeDisk(storage_uuid="local")),
              cdrom=IsoSpec(uuid="c", image=ISO, storage_uuid="local"))
    real = resolved(spec, Storages())
    assert real.volumes[0].disk == FileDisk(path="/ps/local/volumes/v1/f3.qcow2", storage_uuid="local")
    assert real.cdrom == IsoSpec(uuid="c", path="/ps/local/images/iso1/image.iso")
    assert references(spec) == {"v1", "local", "iso1"}


def test_an_iso_is_a_path_or_an_image_with_its_storage():
    with pytest.raises(ValueError, match="either a path"):
        IsoSpec(uuid="c", image=ISO)
    with pytest.raises(ValueError, match="either a path"):
        IsoSpec(uuid="c", path="/a.iso", image=ISO, storage_uuid="local")
