"""The storage component on real files with real qemu-img: the image cache and volumes of a LocalStorage.

Images come from a real HTTP server (the `images` fixture: aiohttp's file responses, with Range) whose
access log counts the downloads. What is asserted is what an operator would look at: the files,
`qemu-img info`, the bytes a guest would read (`qemu-io -r`), the reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentkit.model import ExportSpec, ImageRef, PrimaryStorageSpec, Revert, SnapshotSpec, StoredVolumeSpec
from agentkit.proc import run
from kvmagent.storage import StorageComponent, StorageSettings, volumes
from kvmagent.storage.holders import Holder, Holders
from kvmagent.view import HostView

pytestmark = pytest.mark.timeout(120)
MiB = 1 << 20


class NoVm:
    """No running VM holds any volume here (the guest's tests use libvirt's answer)."""

    async def holder(self, folder):
        return None


class Reports(list):
    def __call__(self, kind, ident, body):
        self.append((kind, ident, body))

    def last(self, kind, ident) -> dict:
        return next(b for k, i, b in reversed(self) if (k, i) == (kind, ident))


def publish(images, name: str, fmt: str, size: int, writes: list[tuple[int, int, int]], **kw) -> ImageRef:
    """An image made with qemu-img/qemu-io and served: ImageRef with its real size and sha256."""
    path = images.root / name
    run(["qemu-img", "create", "-q", "-f", fmt, *kw.get("extra", []), str(path), str(size)])
    for off, length, byte in writes:
        run(["qemu-io", "-f", fmt, "-c", f"write -P {byte} {off} {length}", str(path)])
    return images.publish(path, name.split(".")[0], fmt, kw.get("sha256"))


def local_host(images, root: Path, holders: Holders | None = None) -> Host:
    """A host's storage component on LocalStorage `root` (another one on the same root: the agent restarted)."""
    reports = Reports()
    comp = StorageComponent(StorageSettings(cache_grace=0), "h1", "kvm1", holders or NoVm(), reports, images.locate)
    woken = asyncio.Event()
    comp.wake = woken.set
    return Host(comp, reports, woken, PrimaryStorageSpec(uuid="ls1", name="local", type="LocalStorage", url=str(root)))


@pytest.fixture
async def host(tmp_path, images):
    h = local_host(images, tmp_path / "local")
    yield h
    await h.comp.close()


class Host:
    def __init__(self, comp, reports, woken, ps):
        self.comp, self.reports, self.woken, self.ps = comp, reports, woken, ps
        self.rev = 0

    async def apply(self, *volumes: StoredVolumeSpec, settle: bool = True) -> None:
        """One pass; with `settle`, passes until no volume waits for a download any more."""
        for _ in range(50):
            self.rev += 1
            self.woken.clear()
            view = HostView(rev=self.rev, storages={self.ps.uuid: self.ps}, volumes={v.uuid: v for v in volumes})
            try:
                await self.comp.apply(view)
            except Exception:
                if not settle:
                    raise
            if not settle or not any(self.reports.last("volume", v.uuid)["state"] == "Creating" for v in volumes):
                return
            await asyncio.wait_for(self.woken.wait(), 30)
        raise AssertionError("volumes never settled")

    def vol(self, uuid: str) -> dict:
        return self.reports.last("volume", uuid)

    @property
    def root(self) -> Path:
        return Path(self.ps.url)


def qinfo(path) -> dict:
    return json.loads(run(["qemu-img", "info", "-U", "-f", "qcow2", "--output=json", str(path)]).stdout)


def reads(path, off: int, length: int, byte: int) -> bool:
    """Does a guest of this volume read `byte` x length at off (through the whole backing chain)?"""
    return run(["qemu-io", "-r", "-U", "-f", "qcow2", "-c", f"read -P {byte} {off} {length}", str(path)],
               rcs=(0, 1)).returncode == 0


def write(path, off: int, length: int, byte: int) -> None:
    run(["qemu-io", "-f", "qcow2", "-c", f"write -P {byte} {off} {length}", str(path)])


def vol(uuid: str, **kw) -> StoredVolumeSpec:
    return StoredVolumeSpec(**{"uuid": uuid, "storage_uuid": "ls1", "size_bytes": 16 * MiB, **kw})


async def test_root_volumes_are_overlays_on_one_verified_read_only_copy_of_the_image(host, images):
    image = publish(images, "base.raw", "raw", 8 * MiB, [(0, MiB, 0xAB)])
    await host.apply(vol("root1", image=image), vol("root2", image=image, size_bytes=MiB))
    assert images.gets == ["/base.raw"]  # one download for both volumes
    cached = host.root / "images/base/image.raw"
    assert stat.S_IMODE(cached.stat().st_mode) == 0o444 and hashlib.sha256(cached.read_bytes()).hexdigest() == \
        image.sha256
    for uuid, size in (("root1", 16 * MiB), ("root2", 8 * MiB)):  # never smaller than the image
        info = qinfo(host.root / f"volumes/{uuid}/f0.qcow2")
        assert info["backing-filename"] == "../../images/base/image.raw"
        assert info["backing-filename-format"] == "raw" and info["virtual-size"] == size
        assert reads(host.root / f"volumes/{uuid}/f0.qcow2", 0, MiB, 0xAB)
        assert host.vol(uuid)["state"] == "Ready" and host.vol(uuid)["path"].endswith(f"/volumes/{uuid}/f0.qcow2")
    assert host.comp.volume_path("root1", "ls1") == host.root / "volumes/root1/f0.qcow2"

    await host.apply(vol("root1", image=image), vol("root2", image=image, size_bytes=MiB), vol("root3", image=image))
    assert images.gets == ["/base.raw"]  # cached: a third volume costs no download

    await host.apply(*(vol(u, image=image, deleted=True) for u in ("root1", "root2", "root3")))
    assert host.vol("root1")["state"] == "Deleted" and not (host.root / "volumes/root1").exists()
    assert await host.comp.collect() == ["base"]  # grace 0: nothing uses it any more
    assert not (host.root / "images/base").exists()


async def test_snapshots_revert_merge_grow_and_images_made_from_them(host, images):
    await host.apply(vol("d1"))
    path = host.comp.volume_path
    write(path("d1", "ls1"), 0, MiB, 0x11)
    await host.apply(vol("d1", snapshots=[SnapshotSpec(uuid="s1", seq=1)]))
    write(path("d1", "ls1"), 0, MiB, 0x22)
    await host.apply(vol("d1", snapshots=[SnapshotSpec(uuid="s1", seq=1), SnapshotSpec(uuid="s2", seq=2)]))
    write(path("d1", "ls1"), MiB, MiB, 0x33)
    assert reads(path("d1", "ls1"), 0, MiB, 0x22) and reads(path("d1", "ls1"), MiB, MiB, 0x33)
    assert host.vol("d1")["snapshots"] == ["s1", "s2"]

    snaps = [SnapshotSpec(uuid="s1", seq=1), SnapshotSpec(uuid="s2", seq=2)]
    await host.apply(vol("d1", snapshots=snaps, revert=Revert(seq=3, snapshot_uuid="s1")))
    assert reads(path("d1", "ls1"), 0, MiB, 0x11) and reads(path("d1", "ls1"), MiB, MiB, 0)
    assert host.vol("d1")["revert_seq"] == 3

    # deleting s1 merges it into what depends on it: s2 and the reverted data read the same afterwards
    exported = [ExportSpec(image_uuid="fromsnap", snapshot_uuid="s2")]
    await host.apply(vol("d1", snapshots=snaps[1:], revert=Revert(seq=3, snapshot_uuid="s1"), exports=exported,
                         size_bytes=32 * MiB))
    assert host.vol("d1")["snapshots"] == ["s2"] and reads(path("d1", "ls1"), 0, MiB, 0x11)
    assert qinfo(path("d1", "ls1"))["virtual-size"] == 32 * MiB
    made = host.vol("d1")["exports"]["fromsnap"]
    export = host.root / "exports/fromsnap.qcow2"
    assert made["sha256"] == hashlib.sha256(export.read_bytes()).hexdigest() and made["size"] == export.stat().st_size
    assert "backing-filename" not in qinfo(export) and reads(export, 0, MiB, 0x22)  # s2 held 0x22, flat
    files = sorted(p.name for p in (host.root / "volumes/d1").glob("*.qcow2"))
    assert len(files) == 2  # s2's file and the active one: nothing left behind

    await host.apply(vol("d1", snapshots=snaps[1:], revert=Revert(seq=3, snapshot_uuid="s1")))
    assert not export.exists()  # the image store took it: the spec no longer lists it


class Killed(BaseException):
    """The agent killed between two steps of a volume (nothing in it handles this)."""


async def killed_at_save(images, host: Host, spec: StoredVolumeSpec, monkeypatch, saved: bool,
                         holders: Holders | None = None) -> Host:
    """`host` converges `spec` and is killed as its step's record is saved (before it, or just `saved`); its
    storage component started again on the same directory, the VMs running then `holders` (default: none)."""
    save = volumes.save

    def kill(path: Path, record: object) -> None:
        if saved:
            save(path, record)
        raise Killed()

    with monkeypatch.context() as m, pytest.raises(Killed):
        m.setattr(volumes, "save", kill)
        await host.apply(spec)
    await host.comp.close()
    return local_host(images, host.root, holders)


class SwitchingGuest:
    """A running VM on a volume's file: told to snapshot, its qemu switches to the overlay (libvirt's disk-only
    snapshot) and the guest writes on there (`byte`, its first MiB)."""

    def __init__(self, source: Path, byte: int | None = 0x22):
        self.source, self.byte = source, byte

    async def holder(self, folder: Path) -> Holder | None:
        return Holder("dom1", "vda", self.source, ()) if self.source.parent == folder else None

    async def snapshot(self, holder: Holder, overlay: Path) -> None:
        self.source = overlay
        if self.byte is not None:
            write(overlay, 0, MiB, self.byte)


async def test_a_snapshot_cut_off_after_qemu_switched_keeps_what_the_guest_wrote_since(images, tmp_path, monkeypatch):
    """The agent killed once qemu wrote to the snapshot's new overlay but before the record named it, and the
    VM down when it starts again (a power loss takes both): the snapshot is taken with the overlay the guest
    wrote to, not a blank one in its place."""
    root = tmp_path / "local"
    guest = SwitchingGuest(root.resolve() / "volumes/d1/f0.qcow2")
    before = local_host(images, root, guest)
    await before.apply(vol("d1"))
    write(before.comp.volume_path("d1", "ls1"), 0, 2 * MiB, 0x11)
    snapshot = vol("d1", snapshots=[SnapshotSpec(uuid="s1", seq=1)])
    after = await killed_at_save(images, before, snapshot, monkeypatch, saved=False)
    await after.apply(snapshot)
    assert after.vol("d1")["snapshots"] == ["s1"] and after.vol("d1")["path"] == str(guest.source)
    assert reads(guest.source, 0, MiB, 0x22) and reads(guest.source, MiB, MiB, 0x11)
    assert reads(root / "volumes/d1/f0.qcow2", 0, MiB, 0x11)  # the snapshot holds what was there before
    await after.comp.close()


@pytest.mark.parametrize("running", [True, False])
async def test_a_snapshot_cut_off_then_its_vm_on_the_older_file_again_takes_what_that_guest_saw(
        images, tmp_path, monkeypatch, running):
    """As above, but the VM started again on the file the record still names before the snapshot was redone
    (and runs, or stopped again): that guest saw that file, so the snapshot is taken with a blank overlay on
    it; what the old overlay held is no part of it, and taking it in would corrupt the guest's disk."""
    root = tmp_path / "local"
    f0 = root.resolve() / "volumes/d1/f0.qcow2"
    before = local_host(images, root, SwitchingGuest(f0))
    await before.apply(vol("d1"))
    write(f0, 0, 2 * MiB, 0x11)
    snapshot = vol("d1", snapshots=[SnapshotSpec(uuid="s1", seq=1)])
    again = SwitchingGuest(f0, byte=None)
    after = await killed_at_save(images, before, snapshot, monkeypatch, saved=False,
                                 holders=again if running else None)
    write(f0, 0, MiB, 0x33)  # the guest started on f0 again writes there
    await after.apply(snapshot)
    active = root.resolve() / "volumes/d1/f1.qcow2"
    assert after.vol("d1")["snapshots"] == ["s1"] and after.vol("d1")["path"] == str(active)
    assert reads(active, 0, MiB, 0x33) and reads(active, MiB, MiB, 0x11)
    await after.comp.close()


async def test_files_a_step_discarded_just_before_the_agent_was_killed_go_when_it_starts_again(images, tmp_path,
                                                                                               monkeypatch):
    """A revert and a snapshot's delete each save the record, then remove the file it no longer names: killed
    in between, the file is removed when the agent starts again (it was kept, and counted, for good)."""
    root = tmp_path / "local"
    before = local_host(images, root)
    snaps = [SnapshotSpec(uuid="s1", seq=1), SnapshotSpec(uuid="s2", seq=2)]
    await before.apply(vol("d1", snapshots=snaps))
    reverted = vol("d1", snapshots=snaps, revert=Revert(seq=3, snapshot_uuid="s1"))
    for spec in (reverted, reverted.model_copy(update={"snapshots": snaps[1:]})):
        before = await killed_at_save(images, before, spec, monkeypatch, saved=True)
        await before.apply(spec)
        record = json.loads((root / "volumes/d1/volume.json").read_text())
        assert sorted(p.stem for p in (root / "volumes/d1").glob("*.qcow2")) == sorted(record["files"])
    assert before.vol("d1")["snapshots"] == ["s2"] and before.vol("d1")["revert_seq"] == 3
    await before.comp.close()


async def test_a_data_volume_from_a_template_and_images_that_are_refused(host, images, tmp_path):
    template = publish(images, "tmpl.qcow2", "qcow2", 4 * MiB, [(MiB, MiB, 0xCD)])
    wrong = publish(images, "wrong.raw", "raw", MiB, [], sha256="0" * 64)
    backed = publish(images, "backed.qcow2", "qcow2", MiB, [], extra=["-b", "/etc/hostname", "-F", "raw"])
    await host.apply(vol("t1", image=template), vol("w1", image=wrong), vol("b1", image=backed), settle=True)
    assert reads(host.comp.volume_path("t1", "ls1"), MiB, MiB, 0xCD)
    assert qinfo(host.comp.volume_path("t1", "ls1"))["backing-filename-format"] == "qcow2"
    assert "expected 1048576 bytes with sha256 0000" in host.vol("w1")["error"]
    assert "names a backing file (/etc/hostname): not accepted" in host.vol("b1")["error"]
    assert host.vol("w1")["state"] == host.vol("b1")["state"] == "Error"
    left = sorted(p.name for p in (host.root / "images").rglob("*") if p.is_file())
    assert left == ["image.json", "image.qcow2", "last-used"]  # the template only; refused bytes are gone


@contextlib.asynccontextmanager
async def shared_hosts(images, tmp_path: Path) -> AsyncIterator[list[Host]]:
    """Two hosts' storage components on one SharedMountPoint directory (mounted: the mount check itself
    runs in real mount namespaces in test_storage_shared.py)."""
    url = tmp_path / "smp"
    url.mkdir()
    ps = PrimaryStorageSpec(uuid="smp1", name="shared", type="SharedMountPoint", url=str(url))
    mounted = f"99 1 254:0 /srv {url} rw - ext4 /dev/vda rw\n"
    hosts = []
    for name in ("h1", "h2"):
        reports = Reports()
        comp = StorageComponent(StorageSettings(), name, f"kvm-{name}", NoVm(), reports, images.locate,
                                mountinfo=lambda: mounted)
        woken = asyncio.Event()
        comp.wake = woken.set
        hosts.append(Host(comp, reports, woken, ps))
    try:
        yield hosts
    finally:
        for h in hosts:
            await h.comp.close()


async def test_hosts_of_a_shared_mount_point_share_its_image_cache(images, tmp_path):
    """The image is fetched once for both hosts."""
    image = publish(images, "base.raw", "raw", 8 * MiB, [(0, MiB, 0xAB)])
    async with shared_hosts(images, tmp_path) as hosts:
        await hosts[0].apply(vol("v1", storage_uuid="smp1", image=image))
        await hosts[1].apply(vol("v2", storage_uuid="smp1", image=image))
        assert images.gets == ["/base.raw"]
        for h, uuid in zip(hosts, ("v1", "v2"), strict=True):
            assert reads(h.comp.volume_path(uuid, "smp1"), 0, MiB, 0xAB)
        assert sorted(p.name for p in (tmp_path / "smp" / "heartbeat").iterdir()) == ["h1", "h2"]


async def test_two_hosts_at_one_volume_at_once_make_its_file_once(images, tmp_path, caplog):
    """A volume made on one host and attached at once to a VM on another (the API moves it there) is
    converged by both at the same time: one makes its file, the other finds it made and keeps it (before,
    each made it, the later one replacing the file the VM on the other may already have opened)."""
    caplog.set_level(logging.INFO, "kvmagent.storage.volumes")
    async with shared_hosts(images, tmp_path) as hosts:
        await asyncio.gather(*(h.apply(vol("v1", storage_uuid="smp1")) for h in hosts))
        made = [r.getMessage() for r in caplog.records if "CreateBase" in r.getMessage()]
        assert len(made) == 1, made
        assert [h.vol("v1")["state"] for h in hosts] == ["Ready", "Ready"]
        path = hosts[1].comp.volume_path("v1", "smp1")
        assert path == hosts[0].comp.volume_path("v1", "smp1") and qinfo(path)["virtual-size"] == 16 * MiB
