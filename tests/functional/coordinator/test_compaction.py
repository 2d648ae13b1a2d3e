"""The elected replica keeps etcd compacted (coordinator/leader/compaction.py), against a real etcd: the
history is cut one interval behind; an agent resuming from a compacted revision at a replica whose own
history does not reach back that far (one started since) gets a fresh snapshot, and one resuming from a
recent revision gets the changes since."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from coordinator.client import Client
from coordinator.etcd.store import Compacted, Store
from testbed.coordinators import Coordinator

pytestmark = pytest.mark.real
INTERVAL = 1.0


async def first_line(url: str, token: str, since: int) -> dict:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as s, \
            s.get(url, params={"since": str(since)}) as r:
        assert r.status == 200
        return json.loads(await r.content.readline())


async def compacted(store: Store, revision: int) -> bool:
    try:
        async for _ in store.watch("/hs/", revision):
            return False
    except Compacted:
        return True
    return False


async def test_history_is_compacted_one_interval_behind_and_streams_resume_or_resnapshot(run, etcd, token):
    coordinator = Coordinator(run, etcd, token, name="coord-compact", leader_ttl=2, compact_interval=INTERVAL).start()
    store = Store(etcd.endpoint)
    await store.connect()
    try:
        async with Client(coordinator.url, token) as api:
            host = await api.post("/v1/hosts", {"name": "compacted-host", "address": "198.18.0.8"})
            old = await store.revision()
            for i in range(20):  # history a guest's lease reports would make
                await store.put("/hs/o/lease/nic-compaction", {"state": "released", "n": i})
            deadline = time.monotonic() + 20
            while not await asyncio.wait_for(compacted(store, old), 5):
                assert time.monotonic() < deadline, "etcd was never compacted"
                await asyncio.sleep(0.2)
            recent = await store.revision()
            assert not await asyncio.wait_for(compacted(store, recent), 5)  # within the last interval: kept
            fresh = Coordinator(run, etcd, token, name="coord-fresh", leader_ttl=2).start()
            try:  # its watch cache starts at today's revision: `old` is before it, and gone from etcd
                snap = await first_line(f"{fresh.url}/v1/hosts/{host['uuid']}/stream", host["token"], old)
            finally:
                fresh.stop()
            assert snap["type"] == "snapshot" and snap["rev"] >= recent
            url = f"{coordinator.url}/v1/hosts/{host['uuid']}/stream"
            await api.post("/v1/l2-networks", {"name": "after", "physical_interface": "eth1"})
            resumed = await first_line(url, host["token"], recent)
            assert resumed["type"] == "changes" and resumed["rev"] > recent
    finally:
        await store.close()
        coordinator.stop()
