"""The storage component's checker: a storage whose filesystem fails is logged and tried again, not a crash."""

from __future__ import annotations

import os
import time

from agentkit.model import PrimaryStorageSpec
from kvmagent.storage.component import StorageComponent
from kvmagent.storage.settings import StorageSettings


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
