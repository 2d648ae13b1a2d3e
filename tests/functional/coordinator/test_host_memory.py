"""Placement counts memory (coordinator/domain/hostmemory.py): a VM goes only where it fits, a host asked
for by name refuses what it cannot hold, a stopped VM's start asks again, the figures are in `GET
/v1/capacity`, and both global configs move them. Against a real etcd, hosts connected through the API with
the facts an agent reports."""

from __future__ import annotations

import asyncio
import itertools
import secrets

import pytest

from coordinator.client import ApiClientError, Client
from testbed.coordinators import Coordinator

pytestmark = pytest.mark.real

ADDRESSES = (f"198.18.2.{i}" for i in itertools.count(2))  # a host's own: an address has one KVM host


@pytest.fixture(scope="module")
def coordinator(run, etcd, token):
    """Hosts stay Connected for the whole module after one connect."""
    c = Coordinator(run, etcd, token, name="coord-mem", heartbeat_timeout=600).start()
    yield c
    c.stop()


async def connected_host(api: Client, coordinator: Coordinator, name: str, memory_mb: int) -> dict:
    host = await api.post("/v1/hosts", {"name": f"{name}-{secrets.token_hex(3)}", "address": next(ADDRESSES)})
    async with Client(coordinator.url, host["token"]) as agent:
        await agent.post(f"/v1/hosts/{host['uuid']}/connect", {"hostname": name, "cpus": 4, "memory_mb": memory_mb})
    return host


async def vm(api: Client, name: str, memory_mb: int, **more) -> dict:
    return await api.post("/v1/vms", {"name": name, "memory_mb": memory_mb, **more})


async def refused(call, words: str) -> None:
    with pytest.raises(ApiClientError) as e:
        await call
    assert (e.value.status, e.value.code, e.value.field) == (409, "insufficient_capacity", "memory_mb"), e.value
    assert words in e.value.message, e.value.message


async def capacity(api: Client, host: dict) -> dict:
    found = [h for h in (await api.get("/v1/capacity"))["hosts"] if h["host_uuid"] == host["uuid"]]
    assert len(found) == 1
    return found[0]


async def test_a_vm_goes_where_its_memory_fits_and_a_start_asks_again(api, coordinator):
    small = await connected_host(api, coordinator, "small", 2048)  # 1536 MiB for VMs (512 kept for the host)
    big = await connected_host(api, coordinator, "big", 4096)  # 3584
    assert await capacity(api, small) == {
        "host_uuid": small["uuid"], "host_name": small["name"], "state": "Connected", "total_mb": 2048,
        "reserved_mb": 512, "over_provisioning": 1.0, "capacity_mb": 1536, "allocated_mb": 0, "available_mb": 1536,
        "vms": 0}
    await vm(api, "first", 256, host_uuid=big["uuid"])
    # the fewest VMs is the small host, where 3000 MiB cannot fit
    assert (await vm(api, "large", 3000))["host_uuid"] == big["uuid"]
    assert (await vm(api, "medium", 1000))["host_uuid"] == small["uuid"]  # 328 MiB left on the big one
    await refused(vm(api, "huge", 2000), f"no connected KVM host has 2000 MiB of memory available for the VM; the "
                  f"most is on host {small['name']}: 536 MiB available of 1536 MiB")
    await refused(vm(api, "there", 1000, host_uuid=big["name"]), f"host {big['name']} cannot take 1000 MiB")
    assert (await capacity(api, big))["allocated_mb"] == 3256

    parked = await vm(api, "parked", 1000, host_uuid=big["uuid"], state="Stopped")  # holds nothing while stopped
    assert (await capacity(api, big))["allocated_mb"] == 3256
    start = {"action": "start"}
    await refused(api.post(f"/v1/vms/{parked['uuid']}/actions", start), f"host {big['name']} cannot take 1000 MiB")
    large = [v for v in (await api.get("/v1/vms"))["vms"] if v["spec"]["name"] == "large"][0]
    await api.post(f"/v1/vms/{large['uuid']}/actions", {"action": "stop"})
    await api.post(f"/v1/vms/{parked['uuid']}/actions", start)
    assert (await capacity(api, big))["allocated_mb"] == 1256
    # the large one's memory went to the parked one: it cannot start again there
    await refused(api.post(f"/v1/vms/{large['uuid']}/actions", start), "cannot take 3000 MiB")

    # both configs move the figures (and so where VMs fit)
    await api.put("/v1/global-configs/mevoco/overProvisioning.memory", {"value": "2"})
    await api.put("/v1/global-configs/kvm/reservedMemory", {"value": "0"})
    assert (await capacity(api, small))["capacity_mb"] == 4096
    assert (await vm(api, "huge", 2000))["host_uuid"] == small["uuid"]
    for name, value in (("mevoco/overProvisioning.memory", "0"), ("kvm/reservedMemory", "-1")):
        with pytest.raises(ApiClientError) as e:
            await api.put(f"/v1/global-configs/{name}", {"value": value})
        assert e.value.status == 400 and e.value.field == "value"


async def test_concurrent_placements_never_promise_a_hosts_memory_twice(api, coordinator):
    """Eight creations of a VM only one of which fits, all at once: exactly one is made, on whichever path
    (the host named, or placement), and a stopped VM's starts race alike."""
    await api.put("/v1/global-configs/mevoco/overProvisioning.memory", {"value": "1"})  # as the configs' defaults
    await api.put("/v1/global-configs/kvm/reservedMemory", {"value": "512"})
    one = await connected_host(api, coordinator, "one", 1536)  # 1024 MiB for VMs
    tries = [vm(api, f"race{i}", 1000, host_uuid=one["uuid"]) for i in range(8)]
    made = [r for r in await asyncio.gather(*tries, return_exceptions=True) if not isinstance(r, Exception)]
    assert len(made) == 1 and (await capacity(api, one))["allocated_mb"] == 1000
    await api.post(f"/v1/vms/{made[0]['uuid']}/actions", {"action": "stop"})
    parked = [await vm(api, f"parked{i}", 1000, host_uuid=one["uuid"], state="Stopped") for i in range(4)]
    starts = [api.post(f"/v1/vms/{p['uuid']}/actions", {"action": "start"}) for p in [made[0], *parked]]
    started = [r for r in await asyncio.gather(*starts, return_exceptions=True) if not isinstance(r, Exception)]
    assert len(started) == 1 and (await capacity(api, one))["allocated_mb"] == 1000
