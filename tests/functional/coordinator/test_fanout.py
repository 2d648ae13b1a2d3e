"""Host streams served by each replica's watch cache, against real etcd and two real replicas: DNS records
only where their L3 is, a resume on the other replica gets the diff (also when that replica has not seen
the agent's revision yet), and a consumer that stops reading is cut off and resumes to the right state."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import aiohttp
import pytest

from coordinator.client import Client
from coordinator.etcd.store import Store
from testbed.coordinators import Coordinator

pytestmark = pytest.mark.real
BUFFER = 64 << 10


@pytest.fixture(scope="module")
def replicas(run, etcd, token):
    cs = [Coordinator(run, etcd, token, name=f"fan-{i}", stream_buffer=BUFFER).start() for i in range(2)]
    yield cs
    for c in cs:
        c.stop()


class Agent:
    """A host stream read as agentkit.link reads it: the view as a dict, the revision, the lines seen."""

    def __init__(self, url: str, host: dict, since: int = 0, view: dict | None = None, rcvbuf: int | None = None):
        self.url, self.host, self.rev, self.view = url, host, since, dict(view or {})
        self.docs: list[dict] = []
        self.ended = asyncio.Event()
        self._session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {host['token']}"},
                                              connector=aiohttp.TCPConnector(socket_factory=_small(rcvbuf)))
        self._resp: aiohttp.ClientResponse | None = None

    async def open(self) -> Agent:
        self._resp = await self._session.get(f"{self.url}/v1/hosts/{self.host['uuid']}/stream",
                                             params={"since": str(self.rev)})
        assert self._resp.status == 200
        return self

    async def follow(self) -> None:
        assert self._resp is not None
        async for line in self._resp.content:
            doc = json.loads(line)
            self.docs.append(doc)
            if doc["type"] == "snapshot":
                self.view = dict(doc["items"])
            elif doc["type"] == "changes":
                for k in doc["deletes"]:
                    self.view.pop(k, None)
                self.view.update(doc["puts"])
            self.rev = doc["rev"]
        self.ended.set()

    async def until(self, cond, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond(self.view):
            assert time.monotonic() < deadline, f"stream of {self.host['name']} never got there: {self.docs[-3:]}"
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        if self._resp is not None:
            self._resp.close()
        await self._session.close()


def _small(rcvbuf: int | None):
    """A socket factory giving a fixed receive buffer (no autotuning: the kernel holds little for a slow reader)."""
    def make(addr: tuple) -> socket.socket:
        family, kind, proto, _, _ = addr
        sock = socket.socket(family, kind, proto)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        return sock
    return make


async def following(agent: Agent) -> tuple[Agent, asyncio.Task]:
    await agent.open()
    return agent, asyncio.create_task(agent.follow())


async def stop(agent: Agent, task: asyncio.Task) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await agent.close()


async def network(api: Client, run, name: str) -> dict:
    l2 = await api.post("/v1/l2-networks", {"name": name, "physical_interface": run.uplink()})
    net = run.subnet()
    return await api.post("/v1/l3-networks", {"name": name, "l2_uuid": l2["uuid"], "cidr": str(net),
                                              "services": ["DHCP", "DNS"]})


async def vm(api: Client, host: dict, l3: dict, name: str) -> dict:
    return await api.post("/v1/vms", {"name": name, "host_uuid": host["uuid"], "state": "Stopped",
                                      "l3_network_uuids": [l3["uuid"]]})


def dns_of(view: dict) -> set[str]:
    return {v["name"] for k, v in view.items() if k.startswith("dns/")}


async def test_dns_records_reach_only_the_hosts_with_their_l3(replicas, token, run):
    async with Client(replicas[0].url, token) as api:
        h1 = await api.post("/v1/hosts", {"name": "dns-h1", "address": "198.18.1.1"})
        h2 = await api.post("/v1/hosts", {"name": "dns-h2", "address": "198.18.1.2"})
        a, b = await network(api, run, "dns-a"), await network(api, run, "dns-b")
        s1, t1 = await following(Agent(replicas[0].url, h1))
        s2, t2 = await following(Agent(replicas[1].url, h2))
        try:
            await vm(api, h1, a, "a1")
            await vm(api, h2, b, "b1")
            await s1.until(lambda v: dns_of(v) == {"a1"})
            await s2.until(lambda v: dns_of(v) == {"b1"})
            lines_before = len(s2.docs)
            moved = await vm(api, h2, a, "a2")  # h2 gets L3 a: its records come with the VM, in one line
            await s2.until(lambda v: dns_of(v) == {"a1", "a2", "b1"})
            came = [d for d in s2.docs[lines_before:] if d["type"] == "changes"]
            assert len(came) == 1 and f"vm/{moved['uuid']}" in came[0]["puts"]
            await s1.until(lambda v: dns_of(v) == {"a1", "a2"})
            await api.delete(f"/v1/vms/{moved['uuid']}")
            await s2.until(lambda v: dns_of(v) == {"b1"} and f"vm/{moved['uuid']}" not in v)
            await s1.until(lambda v: dns_of(v) == {"a1"})
            assert all(f"l3/{n['uuid']}" in s.view for n in (a, b) for s in (s1, s2))  # L3s go everywhere
        finally:
            await stop(s1, t1)
            await stop(s2, t2)


async def test_a_resume_on_the_other_replica_is_the_diff_since_the_agents_revision(replicas, token, run, etcd):
    async with Client(replicas[0].url, token) as api:
        host = await api.post("/v1/hosts", {"name": "resume-h", "address": "198.18.1.3"})
        l3 = await network(api, run, "resume")
        first = await vm(api, host, l3, "r1")
        agent, task = await following(Agent(replicas[0].url, host))
        await agent.until(lambda v: f"vm/{first['uuid']}" in v)
        await stop(agent, task)
        second = await vm(api, host, l3, "r2")
        await api.delete(f"/v1/vms/{first['uuid']}")
        resumed, task = await following(Agent(replicas[1].url, host, agent.rev, agent.view))
        try:
            await resumed.until(lambda v: f"vm/{second['uuid']}" in v and f"vm/{first['uuid']}" not in v)
            assert [d["type"] for d in resumed.docs] == ["changes"]
            assert set(resumed.docs[0]["deletes"]) >= {f"vm/{first['uuid']}"}
            assert resumed.view == await desired_view(etcd, host["uuid"], {l3["uuid"]})
        finally:
            await stop(resumed, task)


async def test_an_agent_ahead_of_the_replica_gets_no_snapshot(run, etcd, token, replicas):
    """A replica listed at its start only; writes outside the desired state since then leave its cache at an
    older revision than a newer replica's. An agent coming from that one is brought up to date by a listing."""
    async with Client(replicas[0].url, token) as api:
        host = await api.post("/v1/hosts", {"name": "ahead-h", "address": "198.18.1.4"})
        await api.post(f"/v1/hosts/{host['uuid']}/heartbeat")  # revisions outside /hs/d/
        late = Coordinator(run, etcd, token, name="fan-late").start()
        try:
            agent, task = await following(Agent(late.url, host))
            await agent.until(lambda v: agent.rev > 0)
            await stop(agent, task)
            t0 = time.monotonic()
            resumed, task = await following(Agent(replicas[0].url, host, agent.rev, agent.view))
            await asyncio.sleep(1.5)
            assert not [d for d in resumed.docs if d["type"] == "snapshot"]
            l3 = await network(api, run, "ahead")
            await resumed.until(lambda v: f"l3/{l3['uuid']}" in v)
            assert time.monotonic() - t0 < 10
            await stop(resumed, task)
        finally:
            late.stop()


async def test_a_consumer_that_stops_reading_is_cut_off_and_resumes(replicas, token, etcd):
    async with Client(replicas[0].url, token) as api:
        host = await api.post("/v1/hosts", {"name": "slow-h", "address": "198.18.1.5"})
    slow = await Agent(replicas[0].url, host, rcvbuf=4096).open()
    store = Store(etcd.endpoint)
    await store.connect()
    try:
        for i in range(200):  # far more than the buffer, the socket buffers and the client's read buffer
            await store.put(f"/hs/d/all/config/bench.big{i % 7}", "x" * 30_000 + str(i))
        await asyncio.wait_for(slow.follow(), 30)  # reads what was sent, then the end of the stream
        assert slow.ended.is_set() and slow.rev < (await store.list("/hs/d/"))[1]
        resumed, task = await following(Agent(replicas[0].url, host, slow.rev, slow.view))
        want = await desired_view(etcd, host["uuid"], set())
        await resumed.until(lambda v: v == want)
        assert [d["type"] for d in resumed.docs][:1] == ["changes"]
        await stop(resumed, task)
    finally:
        await slow.close()
        await store.close()


async def test_a_replica_that_stops_ends_its_streams_cleanly(run, etcd, token):
    """SIGTERM with streams open: each ends as a stream ends (its last chunk sent), so agents resume elsewhere
    at once and see no broken response, and the replica's log has no traceback. Before, aiohttp's shutdown
    cancelled the stream handlers after its timeout: every agent read a truncated response, and racing that
    cancellation aiohttp logged an unhandled InvalidStateError."""
    replica = Coordinator(run, etcd, token, name="fan-stop").start()
    async with Client(replica.url, token) as api:
        hosts = [await api.post("/v1/hosts", {"name": f"stop-h{i}", "address": f"198.18.1.{20 + i}"})
                 for i in range(8)]
    agents = [await following(Agent(replica.url, h)) for h in hosts]
    try:
        for agent, _ in agents:
            await agent.until(lambda v: bool(v))
        t0 = time.monotonic()
        stopping = asyncio.create_task(asyncio.to_thread(replica.stop))
        ended = await asyncio.gather(*(task for _, task in agents), return_exceptions=True)
        streams_ended = time.monotonic() - t0  # the process's own exit after it is not part of this
        await stopping
        assert ended == [None] * len(agents), ended  # no ClientPayloadError: each stream ended whole
        assert streams_ended < 1.5  # not after the server's shutdown timeout (2 s)
        log = run.path("fan-stop.log").read_text()
        assert "Traceback" not in log and '"level": "error"' not in log, log[-3000:]
    finally:
        for agent, task in agents:
            await stop(agent, task)


async def desired_view(etcd, host: str, l3s: set[str]) -> dict:
    """The host's view read from etcd directly: cluster-wide items, its own, the DNS records of `l3s`."""
    store = Store(etcd.endpoint)
    await store.connect()
    try:
        snap, _ = await store.snapshot(["/hs/d/all/", f"/hs/d/host/{host}/"])
    finally:
        await store.close()
    out = {e.key.removeprefix("/hs/d/all/"): e.value for e in snap["/hs/d/all/"]}
    out = {k: v for k, v in out.items() if not k.startswith("dns/") or k.split("/")[1] in l3s}
    out.update({e.key.removeprefix(f"/hs/d/host/{host}/"): e.value for e in snap[f"/hs/d/host/{host}/"]})
    return out
