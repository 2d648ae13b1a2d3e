"""The agent side of the protocol against real coordinators and etcd: stream resume across a
coordinator restart and an etcd compaction, and the observed journal's exactly-once delivery (the
journal on its own: tests/unit/agentkit/test_journal.py)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from agentkit import link as link_module
from agentkit.journal import Journal
from agentkit.link import Link, Presence
from agentkit.model import HostFacts, L2Spec
from coordinator.client import Client
from coordinator.etcd.store import Store

pytestmark = pytest.mark.real


class Recorder:
    def __init__(self):
        self.revs: list[int] = []
        self.state: dict = {}
        self.snapshots = 0

    async def __call__(self, state: dict, rev: int) -> None:
        self.revs.append(rev)
        self.state = dict(state)


async def until(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def desired_now(etcd, host: str) -> dict:
    store = Store(etcd.endpoint)
    await store.connect()
    try:
        snap, _ = await store.snapshot(["/hs/d/all/", f"/hs/d/host/{host}/"])
        out = {e.key.split("/hs/d/all/")[-1]: e.value for e in snap["/hs/d/all/"]}
        out.update({e.key.split(f"/hs/d/host/{host}/")[-1]: e.value for e in snap[f"/hs/d/host/{host}/"]})
        return out
    finally:
        await store.close()


def dumped(state: dict) -> dict:
    return {k: v.model_dump(mode="json") if hasattr(v, "model_dump") else v for k, v in state.items()}


async def test_stream_resumes_after_restart_and_compaction(coordinator, etcd, token, tmp_path):
    async with Client(coordinator.url, token) as api:
        host = await api.post("/v1/hosts", {"name": "stream-host", "address": "198.18.0.3"})
        rec = Recorder()
        link = Link(coordinator.url, host["uuid"], host["token"], Journal(tmp_path / "j"), HostFacts, rec)
        task = asyncio.create_task(link.run())
        try:
            l2 = await api.post("/v1/l2-networks", {"name": "s1", "physical_interface": "eth1"})
            await until(lambda: f"l2/{l2['uuid']}" in rec.state)
            assert isinstance(rec.state[f"l2/{l2['uuid']}"], L2Spec)

            coordinator.stop()                     # restart: changes made while it is down
            await until(lambda: not link.connected)
            coordinator.start()
            await api.post("/v1/l2-networks", {"name": "s2", "physical_interface": "eth2"})
            await until(lambda: len([k for k in rec.state if k.startswith("l2/")]) >= 2, timeout=15)

            coordinator.stop()                     # compaction: the agent's revision is gone
            store = Store(etcd.endpoint)
            await store.connect()
            await store.put("/hs/d/all/config/kvm.vm.cacheMode", "writeback")
            await store.delete(f"/hs/d/all/l2/{l2['uuid']}")
            _, rev = await store.list("/hs/")
            await store.compact(rev)
            await store.close()
            coordinator.start()
            await until(lambda: rec.state.get("config/kvm.vm.cacheMode") == "writeback", timeout=15)
            assert dumped(rec.state) == await desired_now(etcd, host["uuid"])
            assert f"l2/{l2['uuid']}" not in rec.state
            assert rec.revs == sorted(set(rec.revs)), "a revision was applied twice or out of order"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_observed_batches_stored_once(coordinator, token, tmp_path):
    async with Client(coordinator.url, token) as api:
        host = await api.post("/v1/hosts", {"name": "obs-host", "address": "198.18.0.4"})
        vm = (await api.post("/v1/vms", {"name": "obs-vm", "host_uuid": host["uuid"], "state": "Stopped"}))["uuid"]
        journal = Journal(tmp_path / "j")
        for state in ("Stopped", "Running", "Paused", "Crashed", "Stopped"):  # a host reports on its own VMs only
            journal.append("vm", vm, {"state": state})
        await journal.flush()
        body = {"events": [e.model_dump() for e in journal.batch()]}
        url = f"{coordinator.url}/v1/hosts/{host['uuid']}/observed"
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {host['token']}"}) as s:
            acks = []
            for _ in range(2):                      # the first ack is "lost": the agent re-sends
                async with s.post(url, json=body) as r:
                    assert r.status == 200
                    acks.append((await r.json())["acked"])
            await journal.ack(acks[-1])
            e = journal.append("vm", vm, {"state": "Running"})
            async with s.post(url, json={"events": [*body["events"], e.model_dump()]}) as r:
                assert (await r.json())["acked"] == 6
        assert acks == [5, 5]
        assert journal.pending == [] or journal.pending == [e]
        stored = Store(coordinator.etcd.endpoint)
        await stored.connect()
        obs = await stored.get(f"/hs/o/vm/{vm}")
        seq = await stored.get(f"/hs/oseq/{host['uuid']}")
        await stored.close()
        assert obs.value["state"] == "Running" and obs.value["seq"] == 6 and seq.value == 6


async def test_a_line_past_aiohttps_readline_limit_reaches_the_agent(coordinator, etcd, token, tmp_path):
    """A 600 KiB desired item (what one user-data tag was) in a change and in the next snapshot: the
    link applies both and keeps running (it used to die on aiohttp's LineTooLong, 512 KiB)."""
    big = "u" * (600 * 1024)
    async with Client(coordinator.url, token) as api:
        host = await api.post("/v1/hosts", {"name": "big-line-host", "address": "198.18.0.5"})
    store = Store(etcd.endpoint)
    await store.connect()
    try:
        for restart in (False, True):
            rec, key = Recorder(), f"config/big{int(restart)}"
            link = Link(coordinator.url, host["uuid"], host["token"], Journal(tmp_path / "j"), HostFacts, rec)
            task = asyncio.create_task(link.run())
            try:
                await until(lambda rec=rec: rec.revs, timeout=10)
                await store.put(f"/hs/d/all/{key}", big)
                await until(lambda rec=rec, key=key: rec.state.get(key) == big, timeout=15)
                assert not task.done() and (not restart or rec.state.get("config/big0") == big)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    finally:
        await store.delete("/hs/d/all/config/big0")
        await store.delete("/hs/d/all/config/big1")
        await store.close()


async def test_the_coordinator_shows_how_far_an_agents_clock_is_off_its_own(coordinator, token, tmp_path,
                                                                             monkeypatch):
    """An agent whose clock runs ten minutes ahead: its host shows it (the tickets it checks allow five)."""
    real = link_module.formatdate
    monkeypatch.setattr(link_module, "formatdate", lambda **kw: real(time.time() + 600, **kw))
    async with Client(coordinator.url, token) as api:
        host = await api.post("/v1/hosts", {"name": "skewed-host", "address": "198.18.0.6"})
        assert (await api.get(f"/v1/hosts/{host['uuid']}"))["clock_offset"] is None
        presence = Presence(coordinator.url, host["uuid"], host["token"], HostFacts)
        task = asyncio.create_task(presence.run())
        try:
            await until(lambda: presence.connected)
            shown = (await api.get(f"/v1/hosts/{host['uuid']}"))["clock_offset"]
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert 598 <= shown <= 601
