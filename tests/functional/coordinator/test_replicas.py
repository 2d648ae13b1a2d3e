"""Several coordinator replicas on one etcd: CAS IPAM under concurrency, election failover."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import time

import aiohttp
import pytest

from coordinator.client import ApiClientError, Client
from testbed.coordinators import Coordinator
from testbed.ports import free_port

pytestmark = pytest.mark.real

ADDRESSES = (f"198.18.2.{i}" for i in itertools.count(2))  # a host's own: an address has one KVM host


@pytest.fixture(scope="module")
def replicas(run, etcd, token):
    cs = [Coordinator(run, etcd, token, name=f"rep-{i}", leader_ttl=2).start() for i in range(2)]
    yield cs
    for c in cs:
        c.stop()


async def host_and_net(api: Client, name: str, net: ipaddress.IPv4Network, addresses: int, **l3: object):
    """A host and an L3 whose range holds `addresses` addresses."""
    host = await api.post("/v1/hosts", {"name": f"{name}-host", "address": next(ADDRESSES)})
    l2 = await api.post("/v1/l2-networks", {"name": name, "physical_interface": f"eth-{name}"})
    return host, await api.post("/v1/l3-networks", {
        "name": name, "l2_uuid": l2["uuid"], "cidr": str(net), **l3,
        "ip_ranges": [{"start": str(net[10]), "end": str(net[9 + addresses])}]})


async def test_64_concurrent_creations_on_two_replicas(replicas, token, run):
    net = run.subnet()
    async with Client(replicas[0].url, token) as a, Client(replicas[1].url, token) as b:
        host, l3 = await host_and_net(a, "ipam", net, 64)

        async def create(i: int):
            api = (a, b)[i % 2]
            return await api.post("/v1/vms", {"name": f"vm{i}", "host_uuid": host["uuid"],
                                              "l3_network_uuids": [l3["uuid"]], "state": "Stopped"})
        vms = await asyncio.gather(*(create(i) for i in range(64)))
        ips = [v["spec"]["nics"][0]["ip"] for v in vms]
        assert len(set(ips)) == 64
        assert all(ipaddress.IPv4Address(ip) in net for ip in ips)
        with pytest.raises(ApiClientError) as e:
            await create(64)
        assert e.value.status == 409 and e.value.code == "ip_exhausted"
        assert "no free IP" in e.value.message


async def test_batches_on_two_replicas_are_all_or_none(replicas, token, run):
    net = run.subnet()
    async with Client(replicas[0].url, token) as a, Client(replicas[1].url, token) as b:
        host, l3 = await host_and_net(a, "batch", net, 50, services=["DHCP", "DNS"])
        body = {"host_uuid": host["uuid"], "l3_network_uuids": [l3["uuid"]], "state": "Stopped"}
        made = await asyncio.gather(*(api.post("/v1/vms/batch", {**body, "name": f"b{i}", "count": 12})
                                      for i, api in enumerate((a, b, a, b))))
        vms = [v for batch in made for v in batch["vms"]]
        assert len({v["spec"]["nics"][0]["ip"] for v in vms}) == 48
        assert [v["spec"]["name"] for v in made[0]["vms"]] == [f"b0-{i}" for i in range(1, 13)]
        with pytest.raises(ApiClientError) as e:  # 2 addresses left: none of the 3 is created
            await b.post("/v1/vms/batch", {**body, "name": "over", "count": 3})
        assert e.value.status == 409 and e.value.code == "ip_exhausted"
        assert not [v for v in (await a.get("/v1/vms"))["vms"] if v["spec"]["name"].startswith("over")]
        with pytest.raises(ApiClientError) as e:
            await a.post("/v1/vms/batch", {**body, "name": "big", "count": 100})
        assert e.value.status == 400 and e.value.field == "count" and "one transaction" in e.value.message
        with pytest.raises(ApiClientError) as e:
            await a.post("/v1/vms/batch", {**body, "name": "fix", "count": 2, "fixed_ips": {l3["uuid"]: str(net[60])}})
        assert e.value.status == 400 and e.value.field == "count"


async def _leader(api) -> str | None:
    return (await api.get("/v1/leader"))["leader"]


async def test_killing_the_leader_moves_background_work(replicas, token):
    async with Client(replicas[0].url, token) as a:
        deadline = time.monotonic() + 10
        while (await _leader(a)) is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        leader = await _leader(a)
    assert leader in ("rep-0", "rep-1")
    victim = replicas[0] if leader == "rep-0" else replicas[1]
    other = replicas[1] if victim is replicas[0] else replicas[0]
    killed_at = time.monotonic()
    victim.kill()
    async with Client(other.url, token) as b:
        while (await _leader(b)) != other.name:
            assert time.monotonic() - killed_at < 2 + 1.5, "no takeover within the lease TTL"
            await asyncio.sleep(0.05)
        took = time.monotonic() - killed_at
        health = await b.get("/health")
    assert health["leader"] is True
    assert took <= 3.5
    victim.start()


async def test_a_create_sent_again_with_its_idempotency_key_to_another_replica_creates_one_vm(replicas, token,
                                                                                               run):
    async with Client(replicas[0].url, token) as a, Client(replicas[1].url, token) as b:
        host = await a.post("/v1/hosts", {"name": "idem-host", "address": "198.18.0.10"})
        body = {"name": "idem", "host_uuid": host["uuid"], "state": "Stopped"}
        first = await a.post("/v1/vms", body, idempotency_key="req-1")
        again = await b.post("/v1/vms", body, idempotency_key="req-1")
        other = await b.post("/v1/vms", body, idempotency_key="req-2")
        assert first["uuid"] == again["uuid"] != other["uuid"]
        assert first["spec"] == again["spec"]
        named = [v for v in (await a.get("/v1/vms"))["vms"] if v["spec"]["name"] == "idem"]
        assert len(named) == 2
        with pytest.raises(ApiClientError) as e:
            await a.call("POST", "/v1/vms", body, idempotency_key="é" * 3)
        assert e.value.status == 400 and e.value.field == "Idempotency-Key"


async def test_the_client_moves_to_a_live_replica_only_for_calls_that_may_be_sent_twice(replicas, token):
    dead = f"http://127.0.0.1:{free_port()}"
    async with Client([dead, replicas[0].url], token) as api:
        assert (await api.get("/health"))["status"] == "ok"
        assert api.url == replicas[0].url and api.retries == 1
    async with Client(f"{dead},{replicas[0].url}", token) as api:
        with pytest.raises(aiohttp.ClientConnectionError):
            await api.post("/v1/l2-networks", {"name": "never", "physical_interface": "eth0"})
        created = await api.post("/v1/l2-networks", {"name": "once", "physical_interface": "eth0"}, idempotent=True)
        assert created["name"] == "once"
        await api.delete(f"/v1/l2-networks/{created['uuid']}")
