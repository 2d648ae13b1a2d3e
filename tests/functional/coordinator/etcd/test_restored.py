"""A watch across a restore from a backup: etcd comes back at a revision below the ones the watch handed
out, and the watch says so (`Rewound`) instead of waiting for revisions it has seen; restored as `hs-ctl
restore` does it (sealed with a new timeline), and written past those revisions before the watch is back,
the watch still says so. A member that is merely down for a moment and comes back with its data resumes
the watch without a word."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import subprocess

import pytest

from coordinator.ctl import restore
from coordinator.ctl.settings import CtlSettings
from coordinator.etcd import timeline
from coordinator.etcd.errors import Rewound
from coordinator.etcd.store import Store
from testbed.etcd import Etcd

pytestmark = pytest.mark.real


async def watch_into(store: Store, prefix: str, start: int, into: list[object], on: str | None = None) -> None:
    async for batch in store.watch(prefix, start, on):
        into.extend(ch.value for ch in batch)  # type: ignore[misc]


async def until(cond, timeout: float = 10) -> None:  # noqa: ANN001
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.05)


@pytest.fixture
async def member(run):
    etcd = Etcd(run, name="rw").start()
    store = Store(etcd.config())
    await store.connect()
    yield etcd, store
    await store.close()
    etcd.stop()


async def test_a_restarted_member_resumes_the_watch(member):
    etcd, store = member
    start = await store.put("/rw/r/0", 0)
    seen: list[object] = []
    watcher = asyncio.create_task(watch_into(store, "/rw/r/", start, seen))
    await until(lambda: seen == [0])
    etcd.stop()
    etcd.start()
    await store.put("/rw/r/1", 1)
    await until(lambda: seen == [0, 1])
    assert not watcher.done()
    watcher.cancel()


async def test_a_watch_across_a_restore_says_etcd_went_back(run, member):
    etcd, store = member
    start = await store.put("/rw/k/0", 0)
    backup = run.path("rw.db")
    subprocess.run(["etcdctl", f"--endpoints={etcd.url}", "snapshot", "save", str(backup)], check=True,
                   capture_output=True, timeout=60)  # as hs-ctl backup takes it
    seen: list[object] = []
    watcher = asyncio.create_task(watch_into(store, "/rw/k/", start, seen))
    for i in range(1, 4):
        await store.put(f"/rw/k/{i}", i)
    await until(lambda: seen == [0, 1, 2, 3])
    etcd.stop()
    data = run.path("rw-data")
    shutil.rmtree(data)
    subprocess.run(["etcdctl", "snapshot", "restore", str(backup), "--data-dir", str(data), "--name", etcd.name,
                    "--initial-cluster", etcd.initial_cluster, "--initial-advertise-peer-urls", etcd.peer_url],
                   check=True, capture_output=True, timeout=60)
    etcd.start()
    with pytest.raises(Rewound, match=r"etcd is at revision \d+, behind revision \d+ the watch handed out"):
        async with asyncio.timeout(15):
            await watcher
    entries, rev = await store.list("/rw/k/")
    assert [e.value for e in entries] == [0] and rev < start + 3


async def test_a_watch_across_a_sealed_restore_that_passed_its_revision_says_the_data_is_another(run, member):
    """Restored by hs-ctl's own steps, the restored data written past the watch's revision before etcd is
    back: not behind, but on another timeline."""
    etcd, store = member
    await store.put("/rw/t/0", 0)
    backup = run.path("rw.db")
    subprocess.run(["etcdctl", f"--endpoints={etcd.url}", "snapshot", "save", str(backup)], check=True,
                   capture_output=True, timeout=60)
    listed = await store.listing("/rw/t/")
    assert listed.timeline == timeline.ORIGINAL
    seen: list[object] = []
    watcher = asyncio.create_task(watch_into(store, "/rw/t/", listed.revision + 1, seen, listed.timeline))
    for i in range(1, 4):
        await store.put(f"/rw/t/{i}", i)
    await until(lambda: seen == [1, 2, 3])
    etcd.stop()
    cfg = run.path("rw-etcd.json")
    data = run.path("rw-data")
    cfg.write_text(json.dumps({"name": etcd.name, "data-dir": str(data), "initial-cluster": etcd.initial_cluster,
                               "initial-advertise-peer-urls": etcd.peer_url}))
    s, m = CtlSettings(etcd_config=cfg, coordinator_config=run.path("none.toml")), restore.Member.load(cfg)
    shutil.rmtree(data)
    restore.unpack(s, backup, m, data)
    sealed = restore.seal(s, backup, m, data, dt.datetime.now(dt.UTC))
    with restore.alone(s, m, data) as endpoint:  # the restored data's own writes, past the watch's revision
        for i in range(8):
            subprocess.run(["etcdctl", f"--endpoints={endpoint}", "put", "/rw/other", str(i)], check=True,
                           capture_output=True, timeout=30)
    etcd.start()
    assert await store.revision() > listed.revision + 3
    with pytest.raises(Rewound, match=rf"etcd's data is from another restore: timeline '{sealed}', the watch "
                                      r"started on 'original'"):
        async with asyncio.timeout(15):
            await watcher
    again = await store.listing("/rw/t/")
    assert [e.value for e in again.entries] == [0] and again.timeline == sealed
