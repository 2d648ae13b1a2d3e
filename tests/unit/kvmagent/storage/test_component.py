"""The storage component's checker: a storage whose filesystem fails is logged and tried again, not a crash."""

from __future__ import annotations

import contextlib
import os
import time

import pytest

from agentkit.model import Held, PrimaryStorageSpec, StoredVolumeSpec
from kvmagent.errors import StorageError
from kvmagent.storage.component import StorageComponent
from kvmagent.storage.record import VolumeRecord, save
from kvmagent.storage.settings import StorageSettings
from kvmagent.view import HostView


async def nowhere(*args):
    raise AssertionError("no download expected")


async def test_a_cache_collection_the_filesystem_fails_is_logged_and_the_other_storages_collected(tmp_path, caplog):
    comp = StorageComponent(StorageSettings(cache_grace=0), "h1", "host1", None, lambda *a: None, nowhere)
    for name in ("bad", "good"):
        spec = PrimaryStorageSpec(uuid=name, name=name, type="LocalStorage", url=str(tmp_path / name))
        store = comp.stores[name] = comp._store(spec)
        folder = store.layout.image_dir(f"img-{name}")
        folder.mkdir(parents=True)
        (folder / "last-used").write_text("")
        os.utime(folder / "last-used", (time.time() - 60, time.time() - 60))
    (comp.stores["bad"].layout.images / ".trash").write_text("a file where the trash directory should be")
    assert await comp.collect() == ["img-good"]
    assert "storage bad: image cache of" in caplog.text


async def test_volumes_that_left_the_host_leave_nothing_behind(tmp_path):
    """A host's volumes (and storages) come and go by the thousand: what the component keeps per item goes with it."""
    comp = StorageComponent(StorageSettings(), "h1", "host1", None, lambda *a: None, nowhere)
    storages = {"s1": PrimaryStorageSpec(uuid="s1", name="s1", type="LocalStorage", url=str(tmp_path / "s1"))}
    await comp.apply(HostView(storages=storages))
    baseline = (len(comp._locks), len(comp.reports._last), len(comp.waiting))
    for i in range(1000):
        gone = StoredVolumeSpec(uuid=f"v{i}", storage_uuid="s1", size_bytes=1 << 20, deleted=True)
        lost = StoredVolumeSpec(uuid=f"w{i}", storage_uuid="detached", size_bytes=1 << 20)
        brief = PrimaryStorageSpec(uuid=f"t{i}", name="t", type="LocalStorage", url=str(tmp_path / "t"))
        with contextlib.suppress(StorageError):  # the volume on a storage not attached here
            await comp.apply(HostView(storages={**storages, brief.uuid: brief},
                                      volumes={gone.uuid: gone, lost.uuid: lost}))
        await comp.apply(HostView(storages=storages))
    assert (len(comp._locks), len(comp.reports._last), len(comp.waiting)) == baseline


async def test_a_held_storage_stays_attached_until_its_delete(tmp_path):
    comp = StorageComponent(StorageSettings(), "h1", "host1", None, lambda *a: None, nowhere)
    spec = PrimaryStorageSpec(uuid="s1", name="s1", type="LocalStorage", url=str(tmp_path / "s1"))
    await comp.apply(HostView(storages={"s1": spec}))
    store = comp.stores["s1"]
    await comp.apply(HostView(held={"storage/s1": Held("a type this agent does not know")}))
    assert comp.stores == {"s1": store}  # its VMs' volumes stay usable
    await comp.apply(HostView())
    assert comp.stores == {}


async def test_a_volume_whose_record_cannot_be_read_is_reported_and_the_others_converge(tmp_path):
    """A damaged volume.json (a disk error, a hand edit) is that volume's error, naming the file; it used to end
    the pass there (read again to report what the files are), and the host's other volumes were left unmade."""
    sent: dict[str, dict] = {}
    comp = StorageComponent(StorageSettings(), "h1", "host1", None,
                            lambda kind, ident, body: sent.__setitem__(ident, body), nowhere)
    storage = PrimaryStorageSpec(uuid="s1", name="s1", type="LocalStorage", url=str(tmp_path / "s1"))
    layout = comp._store(storage).layout
    volumes = {u: StoredVolumeSpec(uuid=u, storage_uuid="s1", size_bytes=1 << 20) for u in ("a", "b")}
    for uuid in volumes:
        layout.volume_dir(uuid).mkdir(parents=True)
        layout.volume_file(uuid, "f0").write_bytes(b"QFI\xfb")
        save(layout.record(uuid), VolumeRecord(uuid=uuid, storage_uuid="s1", files={"f0": None}, active="f0",
                                               size_bytes=1 << 20))
    layout.record("a").write_bytes(b'{"uuid": "a", "stor')
    with pytest.raises(StorageError, match="1 storage item"):
        await comp.apply(HostView(storages={"s1": storage}, volumes=volumes))
    assert comp.paths == {"b": layout.volume_file("b", "f0")}
    assert str(layout.record("a")) in sent["a"]["error"]
