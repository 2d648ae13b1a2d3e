"""A watch across a restore from a backup: etcd comes back at a revision below the ones the watch handed
out, and the watch says so (`Rewound`) instead of waiting for revisions it has seen. A member that is
merely down for a moment and comes back with its data resumes the watch without a word."""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import pytest

from coordinator.etcd.errors import Rewound
from coordinator.etcd.store import Store
from testbed.etcd import Etcd

pytestmark = pytest.mark.real


async def watch_into(store: Store, prefix: str, start: int, into: list[object]) -> None:
    async for batch in store.watch(prefix, start):
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
