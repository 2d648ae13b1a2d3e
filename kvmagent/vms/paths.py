"""Where a VM's disks and ISO are on this host, decided before anything is created or defined.

- A raw `FileDisk` (the expert option) that names a primary storage lives in that storage's directory,
  and so does its backing file (`on_storage`); the others, and raw ISO, kernel and initrd paths, are
  confined by `disks.check_confined` (the agent's `volume_dir` and file roots). `../../etc/shadow`, an
  absolute path elsewhere or a symlink out is refused, as the VM's one error.
- A `VolumeDisk` becomes the file its volume currently lives in, and an ISO image the cached copy, as
  the host's storage component knows them (`Storages`); a storage that is not usable here (a shared
  mount point not mounted) is the VM's error, naming the host and the path.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Protocol

from agentkit.model import FileDisk, IsoSpec, VmSpec, VolumeDisk
from kvmagent.errors import StorageError, VolumeNotReady
from kvmagent.storage.layout import confine


class Storages(Protocol):
    """What the VMs need of the host's storage component."""

    def root(self, storage_uuid: str) -> Path:
        """The storage's directory; StorageError when it is not usable on this host."""

    def volume_path(self, volume_uuid: str, storage_uuid: str) -> Path:
        """The file a VM opens for the volume; StorageError while it is not ready."""

    def iso_path(self, iso: IsoSpec) -> Path:
        """The cached copy of an ISO image; StorageError while it is fetched."""

    def holding(self, volume_uuids: Iterable[str]) -> contextlib.AbstractAsyncContextManager[None]:
        """Keep the storage from changing these volumes' files while a VM is defined or started on them."""


class NoStorages:
    """A host without file-based primary storage (the VMs' own tests): only raw paths resolve."""

    def root(self, storage_uuid: str) -> Path:
        raise StorageError(f"primary storage {storage_uuid} is not attached to this host")

    def volume_path(self, volume_uuid: str, storage_uuid: str) -> Path:
        raise VolumeNotReady(f"volume {volume_uuid} is not on this host")

    def iso_path(self, iso: IsoSpec) -> Path:
        raise VolumeNotReady(f"ISO image {iso.image.uuid if iso.image else iso.uuid} is not cached on this host")

    @contextlib.asynccontextmanager
    async def holding(self, volume_uuids: Iterable[str]) -> AsyncIterator[None]:
        yield


def on_storage(spec: VmSpec, storages: Storages) -> VmSpec:
    """`spec` with the raw disks that name a primary storage (and their backing files) inside its directory
    (PathEscapes when one leaves it; StorageError when the storage is not usable here)."""
    vols = []
    for vol in spec.volumes:
        d = vol.disk
        if isinstance(d, FileDisk) and d.storage_uuid:
            root = storages.root(d.storage_uuid)
            backing = str(confine(root, d.backing, f"backing file of volume {vol.uuid}")) if d.backing else None
            d = d.model_copy(update={"path": str(confine(root, d.path, f"volume {vol.uuid}")), "backing": backing})
        vols.append(vol.model_copy(update={"disk": d}))
    return spec.model_copy(update={"volumes": vols})


def roots(spec: VmSpec, storages: Storages) -> list[str]:
    """The directories of the storages the VM's raw disks name (where their paths may lie)."""
    return sorted({str(storages.root(v.disk.storage_uuid)) for v in spec.volumes
                   if isinstance(v.disk, FileDisk) and v.disk.storage_uuid})


def resolved(spec: VmSpec, storages: Storages) -> VmSpec:
    """`spec` with its storage volumes and ISO image as the files this host has for them."""
    vols = []
    for vol in spec.volumes:
        d = vol.disk
        if isinstance(d, VolumeDisk):
            path = storages.volume_path(vol.uuid, d.storage_uuid)
            vol = vol.model_copy(update={"disk": FileDisk(path=str(path), storage_uuid=d.storage_uuid)})
        vols.append(vol)
    cdrom = spec.cdrom
    if cdrom is not None and cdrom.image is not None:
        cdrom = IsoSpec(uuid=cdrom.uuid, path=str(storages.iso_path(cdrom)))
    return spec.model_copy(update={"volumes": vols, "cdrom": cdrom})


def storage_volumes(spec: VmSpec) -> list[str]:
    """The VM's volumes on file-based primary storage (what `Storages.holding` guards)."""
    return sorted(v.uuid for v in spec.volumes if isinstance(v.disk, VolumeDisk))


def references(spec: VmSpec) -> set[str]:
    """Volume, image and storage uuids the VM depends on: a change to any of them re-converges it."""
    refs = set(storage_volumes(spec))
    refs |= {v.disk.storage_uuid for v in spec.volumes if isinstance(v.disk, FileDisk | VolumeDisk)
             and v.disk.storage_uuid}
    if spec.cdrom is not None and spec.cdrom.image is not None:
        refs.add(spec.cdrom.image.uuid)
    return refs
