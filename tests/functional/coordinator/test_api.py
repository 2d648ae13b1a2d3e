"""The coordinator's REST API against a real etcd: resources, validation errors, tags, configs, and what a
guest's owner can put into the control plane (issue 13): user data capped at 16 KiB (413 naming the field),
a MAC unique on its L2, observed batches larger than one etcd transaction stored whole; NICs attached to
and detached from an existing VM (issue 17), what they hold claimed and released with the VM's spec; a deleted
host gone from the storage views, their capacity and etcd."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import time

import aiohttp
import pytest

from agentkit.model import stream_key_dns
from coordinator.client import ApiClientError, Client
from coordinator.etcd import keys
from coordinator.etcd.store import Store
from testbed.apiwait import until
from testbed.cloudinit import GUEST_KEY

pytestmark = pytest.mark.real

ADDRESSES = (f"198.18.2.{i}" for i in itertools.count(2))  # a host's own: an address has one KVM host


async def make_net(api, run, services=("DHCP", "DNS", "Userdata"), ranges=None, net=None, **l3):
    net = net or run.subnet()
    l2 = await api.post("/v1/l2-networks", {"name": "phys", "physical_interface": run.uplink()})
    body = {"name": "priv", "l2_uuid": l2["uuid"], "cidr": str(net), "gateway": str(net[1]),
            "ip_ranges": ranges or [{"start": str(net[10]), "end": str(net[200])}],
            "dns_servers": ["198.18.255.53"], "domain": "hs.test", "services": list(services), **l3}
    return l2, await api.post("/v1/l3-networks", body)


def free_fixed_ip(l3) -> str:
    """The first address of the L3's range, or the next one when its DHCP server took the first (the
    server's address is a random one of the range)."""
    first = ipaddress.IPv4Address(l3["ip_ranges"][0]["start"])
    return str(first + 1 if str(first) == l3.get("dhcp_address") else first)


async def make_host(api, name="host-a"):
    return await api.post("/v1/hosts", {"name": name, "address": next(ADDRESSES)})


async def test_auth_required(coordinator):
    async with Client(coordinator.url, "wrong-token") as bad:
        with pytest.raises(ApiClientError) as e:
            await bad.get("/v1/hosts")
    assert e.value.status == 401 and e.value.code == "unauthorized"


async def test_bad_input_is_4xx_naming_the_field(api, run):
    l2, _ = await make_net(api, run)
    with pytest.raises(ApiClientError) as e:
        await api.post("/v1/l3-networks", {"name": "x", "l2_uuid": l2["uuid"], "cidr": "198.18.0.0/33"})
    assert e.value.status == 400 and e.value.field == "cidr"
    with pytest.raises(ApiClientError) as e:
        await api.post("/v1/l3-networks", {"name": "x", "l2_uuid": "nope", "cidr": "198.18.9.0/24"})
    assert e.value.status == 400 and e.value.field == "l2_uuid"
    with pytest.raises(ApiClientError) as e:
        await api.call("POST", "/v1/vms", json=[1, 2])
    assert e.value.status == 400
    with pytest.raises(ApiClientError) as e:
        await api.put("/v1/global-configs/kvm/vm.cacheMode", {"value": "fast"})
    assert e.value.status == 400 and "writethrough" in e.value.message


async def test_dhcp_address_allocated_once_and_released(api, run):
    _, l3 = await make_net(api, run)
    assert l3["dhcp_address"] and l3["dhcp_address"] != l3["gateway"]
    l3 = await api.call("DELETE", f"/v1/l3-networks/{l3['uuid']}/services/DHCP")
    assert l3[1]["dhcp_address"] is None and "DHCP" not in l3[1]["services"]


async def test_vm_with_fixed_ip_tags_and_modes(api, run):
    host = await make_host(api, "host-tags")
    _, l3 = await make_net(api, run)
    fixed = free_fixed_ip(l3)
    vm = await api.post("/v1/vms", {"name": "web1", "host_uuid": host["uuid"], "l3_network_uuids": [l3["uuid"]],
                                    "fixed_ips": {l3["uuid"]: fixed}, "system_tags": ["userdata::a: 1\\nb: 2"]})
    assert vm["spec"]["nics"][0]["ip"] == fixed and vm["spec"]["userdata"] == "a: 1\nb: 2"
    with pytest.raises(ApiClientError) as e:
        await api.post("/v1/vms", {"name": "web2", "host_uuid": host["uuid"], "l3_network_uuids": [l3["uuid"]],
                                   "fixed_ips": {l3["uuid"]: fixed}})
    assert e.value.status == 409
    tags = await api.get("/v1/system-tags", resourceUuid=vm["uuid"], **{"tag~": "userdata%"})
    assert len(tags["tags"]) == 1
    await api.put(f"/v1/system-tags/{tags['tags'][0]['uuid']}", {"tag": "userdata::changed"})
    await api.post("/v1/system-tags", {"resource_uuid": vm["uuid"], "tag": f"sshkey::{GUEST_KEY} me@box"})
    with pytest.raises(ApiClientError) as e:  # misspelt: it would be kept and do nothing
        await api.post("/v1/system-tags", {"resource_uuid": vm["uuid"], "tag": "userdat::x: 1"})
    assert e.value.status == 400 and e.value.field == "tag" and "unknown system tag type 'userdat'" in e.value.message
    got = await api.get(f"/v1/vms/{vm['uuid']}")
    assert got["spec"]["userdata"] == "changed" and got["spec"]["ssh_keys"] == {"me@box": f"{GUEST_KEY} me@box"}
    got = await api.patch(f"/v1/vms/{vm['uuid']}", {"cache_mode": "writethrough"})
    assert got["spec"]["cache_mode"] == "writethrough"
    await api.delete(f"/v1/vms/{vm['uuid']}")
    with pytest.raises(ApiClientError) as e:
        await api.get(f"/v1/vms/{vm['uuid']}")
    assert e.value.status == 404
    assert (await api.get("/v1/system-tags", resourceUuid=vm["uuid"]))["tags"] == []


async def test_the_vms_of_one_host(api):
    a, b = await make_host(api, "host-list-a"), await make_host(api, "host-list-b")
    on_a = {(await api.post("/v1/vms", {"name": f"on-a-{i}", "host_uuid": a["uuid"], "state": "Stopped"}))["uuid"]
            for i in range(2)}
    on_b = (await api.post("/v1/vms", {"name": "on-b", "host_uuid": b["uuid"], "state": "Stopped"}))["uuid"]
    for ref in (a["uuid"], "host-list-a"):
        assert {vm["uuid"] for vm in (await api.get("/v1/vms", host_uuid=ref))["vms"]} == on_a
    assert {on_b, *on_a} <= {vm["uuid"] for vm in (await api.get("/v1/vms"))["vms"]}
    with pytest.raises(ApiClientError) as e:
        await api.get("/v1/vms", host_uuid="host-list-nobody")
    assert e.value.status == 400 and e.value.field == "host_uuid"


async def test_range_exhausted_is_409(api, run):
    host = await make_host(api, "host-small")
    net = run.subnet()
    _, l3 = await make_net(api, run, services=(), net=net, ranges=[{"start": str(net[10]), "end": str(net[11])}])
    for i in range(2):
        await api.post("/v1/vms", {"name": f"v{i}", "host_uuid": host["uuid"], "l3_network_uuids": [l3["uuid"]]})
    with pytest.raises(ApiClientError) as e:
        await api.post("/v1/vms", {"name": "v3", "host_uuid": host["uuid"], "l3_network_uuids": [l3["uuid"]]})
    assert e.value.status == 409 and e.value.code == "ip_exhausted"


async def test_openapi_served(api):
    spec = await api.get("/v1/openapi.json")
    assert "/v1/vms" in spec["paths"] and "post" in spec["paths"]["/v1/vms"]


async def refused(call, status: int, code: str, field: str) -> None:
    with pytest.raises(ApiClientError) as e:
        await call
    assert (e.value.status, e.value.code, e.value.field) == (status, code, field), e.value.message


async def test_user_data_is_capped_at_16_kib(api, run):
    host = await make_host(api, "host-userdata")
    _, l3 = await make_net(api, run)
    vm = {"host_uuid": host["uuid"], "l3_network_uuids": [l3["uuid"]], "state": "Stopped"}
    ok = await api.post("/v1/vms", {**vm, "name": "edge", "system_tags": ["userdata::" + "x" * 16384]})
    assert len(ok["spec"]["userdata"]) == 16384
    await refused(api.post("/v1/vms", {**vm, "name": "big", "system_tags": ["userdata::" + "x" * 600 * 1024]}),
                  413, "too_large", "system_tags")
    await refused(api.post("/v1/system-tags", {"resource_uuid": ok["uuid"], "tag": "userdata::" + "y" * 16385}),
                  413, "too_large", "tag")
    tag = (await api.get("/v1/system-tags", resourceUuid=ok["uuid"]))["tags"][0]
    await refused(api.put(f"/v1/system-tags/{tag['uuid']}", {"tag": "userdata::" + "z" * 20000}),
                  413, "too_large", "tag")
    assert (await api.get(f"/v1/vms/{ok['uuid']}"))["spec"]["userdata"] == "x" * 16384


async def test_a_mac_is_unique_on_its_l2(api, run):
    host = await make_host(api, "host-macs")
    l2, l3a = await make_net(api, run, services=())
    net = run.subnet()
    l3b = await api.post("/v1/l3-networks", {"name": "second", "l2_uuid": l2["uuid"], "cidr": str(net),
                                             "ip_ranges": [{"start": str(net[10]), "end": str(net[20])}]})
    _, elsewhere = await make_net(api, run, services=())
    mac = "52:54:00:13:00:01"

    def vm(name: str, *l3s: dict, macs: dict) -> dict:
        return {"name": name, "host_uuid": host["uuid"], "state": "Stopped",
                "l3_network_uuids": [l3["uuid"] for l3 in l3s], "fixed_macs": macs}

    first = await api.post("/v1/vms", vm("first", l3a, macs={l3a["uuid"]: mac}))
    await refused(api.post("/v1/vms", vm("same-l3", l3a, macs={l3a["uuid"]: mac})), 409, "mac_in_use", "fixed_macs")
    await refused(api.post("/v1/vms", vm("same-l2", l3b, macs={l3b["uuid"]: mac})), 409, "mac_in_use", "fixed_macs")
    two = "52:54:00:13:00:02"
    await refused(api.post("/v1/vms", vm("twice", l3a, l3b, macs={l3a["uuid"]: two, l3b["uuid"]: two})),
                  409, "mac_in_use", "fixed_macs")
    await api.post("/v1/vms", vm("other-l2", elsewhere, macs={elsewhere["uuid"]: mac}))  # no L2 in common
    await refused(api.post("/v1/vms", vm("multicast", l3a, macs={l3a["uuid"]: "01:00:5e:00:00:01"})),
                  400, "invalid", "fixed_macs")
    randoms = [await api.post("/v1/vms", vm(f"r{i}", l3a, l3b, macs={})) for i in range(3)]
    assert len({n["mac"] for v in randoms for n in v["spec"]["nics"]} | {mac}) == 7
    await api.delete(f"/v1/vms/{first['uuid']}")
    again = await api.post("/v1/vms", vm("again", l3b, macs={l3b["uuid"]: mac}))  # freed with its VM
    assert again["spec"]["nics"][0]["mac"] == mac


async def test_an_observed_batch_larger_than_an_etcd_transaction_is_stored(coordinator, token):
    """500 events about 500 objects (an older agent's batch; a host back from an outage): etcd takes at most
    128 operations per transaction, the coordinator stores them in parts and acknowledges all."""
    async with Client(coordinator.url, token) as api:
        host = await api.post("/v1/hosts", {"name": "host-observed", "address": "198.18.0.7"})
    events = [{"seq": i + 1, "kind": "lease", "id": f"nic-{i:03d}", "at": 1.0,
               "body": {"state": "bound", "vm_uuid": "v", "ip": "198.18.0.9", "mac": "52:54:00:00:00:09",
                        "l3_uuid": "l3"}} for i in range(500)]
    url = f"{coordinator.url}/v1/hosts/{host['uuid']}/observed"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {host['token']}"}) as s:
        for _ in range(2):  # the re-send is acknowledged, stored once
            async with s.post(url, json={"events": events}) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["acked"] == 500


async def test_attach_claims_and_detach_releases_address_mac_and_dns_record(api, run, etcd):
    host = await make_host(api, "host-nics")
    l2, first = await make_net(api, run)
    _, second = await make_net(api, run)
    vm = await api.post("/v1/vms", {"name": "two-nics", "host_uuid": host["uuid"], "state": "Stopped",
                                    "l3_network_uuids": [first["uuid"]]})
    fixed = free_fixed_ip(second)
    got = await api.post(f"/v1/vms/{vm['uuid']}/nics", {"l3_uuid": second["uuid"], "ip": fixed,
                                                        "mac": "fa:16:3e:12:34:56"})
    nic = got["spec"]["nics"][1]
    assert (nic["ip"], nic["mac"], nic["default"], nic["device_index"]) == (fixed, "fa:16:3e:12:34:56", False, 1)
    assert got["spec"]["generation"] == vm["spec"]["generation"] + 1
    held = [keys.ipam(second["uuid"], fixed), keys.mac(second["l2_uuid"], nic["mac"]),
            keys.desired_all(stream_key_dns(second["uuid"], nic["uuid"]))]
    store = Store(etcd.endpoint)
    await store.connect()
    try:
        for key in held[:2]:
            assert (await store.get(key)).value == {"vm": vm["uuid"], "nic": nic["uuid"]}
        assert (await store.get(held[2])).value == {"l3_uuid": second["uuid"], "name": "two-nics", "ip": fixed}

        for body, status, field in (({"l3_uuid": second["uuid"]}, 409, "l3_uuid"),    # one NIC per L3
                                    ({"l3_uuid": "missing"}, 400, "l3_uuid")):
            with pytest.raises(ApiClientError) as e:
                await api.post(f"/v1/vms/{vm['uuid']}/nics", body)
            assert (e.value.status, e.value.field) == (status, field)
        other = await api.post("/v1/vms", {"name": "other", "host_uuid": host["uuid"], "state": "Stopped",
                                           "l3_network_uuids": [first["uuid"]]})
        for body, status, field in (({"l3_uuid": second["uuid"], "ip": fixed}, 409, "ip"),   # taken
                                    ({"l3_uuid": second["uuid"], "ip": "203.0.113.9"}, 400, "ip")):  # outside
            with pytest.raises(ApiClientError) as e:
                await api.post(f"/v1/vms/{other['uuid']}/nics", body)
            assert (e.value.status, e.value.field) == (status, field)

        got = await api.delete(f"/v1/vms/{vm['uuid']}/nics/{first['uuid']}")  # by its L3: the default moves
        assert [(n["uuid"], n["default"]) for n in got["spec"]["nics"]] == [(nic["uuid"], True)]
        got = await api.delete(f"/v1/vms/{vm['uuid']}/nics/{nic['uuid']}")   # by its own uuid
        assert got["spec"]["nics"] == []
        for key in held:
            assert await store.get(key) is None, key
        with pytest.raises(ApiClientError) as e:
            await api.delete(f"/v1/vms/{vm['uuid']}/nics/{nic['uuid']}")
        assert e.value.status == 404
        got = await api.post(f"/v1/vms/{other['uuid']}/nics", {"l3_uuid": second["uuid"], "ip": fixed})
        assert got["spec"]["nics"][1]["ip"] == fixed  # released: free again
    finally:
        await store.close()


async def test_an_l3_in_use_is_kept_and_the_refusal_names_what_holds_its_addresses(api, run):
    host = await make_host(api, "host-inuse")
    _, l3 = await make_net(api, run)
    _, public = await make_net(api, run, services=(), public=True)
    vms = [await api.post("/v1/vms", {"name": f"holder{i}", "host_uuid": host["uuid"], "state": "Stopped",
                                      "l3_network_uuids": [l3["uuid"]]}) for i in range(7)]
    eip = await api.post("/v1/eips", {"name": "held-eip", "public_l3_uuid": public["uuid"]})
    with pytest.raises(ApiClientError) as e:
        await api.delete(f"/v1/l3-networks/{l3['uuid']}")
    ips = sorted(vm["spec"]["nics"][0]["ip"] for vm in vms)
    by_ip = {vm["spec"]["nics"][0]["ip"]: vm["spec"]["name"] for vm in vms}
    assert e.value.status == 409 and e.value.message == (
        f"L3 network priv still has 7 addresses in use: {', '.join(f'{ip} (VM {by_ip[ip]})' for ip in ips[:5])} and 2 "
        "more; delete those VMs and EIPs or detach their NICs first")
    with pytest.raises(ApiClientError) as e:
        await api.delete(f"/v1/l3-networks/{public['uuid']}")
    assert e.value.message.startswith(f"L3 network priv still has 1 address in use: {eip['vip']} (EIP held-eip); ")
    for vm in vms:
        await api.delete(f"/v1/vms/{vm['uuid']}")
    await api.delete(f"/v1/eips/{eip['uuid']}")
    for net in (l3, public):
        await api.delete(f"/v1/l3-networks/{net['uuid']}")
    assert {n["uuid"] for n in (await api.get("/v1/l3-networks"))["l3_networks"]}.isdisjoint({l3["uuid"],
                                                                                             public["uuid"]})


async def test_a_vm_on_a_disconnected_host_shows_state_unknown_with_what_was_last_reported(api, coordinator):
    host = await make_host(api, "host-gone")
    vm = await api.post("/v1/vms", {"name": "on-gone", "host_uuid": host["uuid"]})
    async with Client(coordinator.url, host["token"]) as agent:
        await agent.post(f"/v1/hosts/{host['uuid']}/connect", {"hostname": "gone"})
        event = {"seq": 1, "kind": "vm", "id": vm["uuid"], "body": {"state": "Running"}, "at": time.time()}
        await agent.post(f"/v1/hosts/{host['uuid']}/observed", {"events": [event]})

        async def shown() -> tuple[dict, dict]:
            listed = [v for v in (await api.get("/v1/vms"))["vms"] if v["uuid"] == vm["uuid"]]
            return (await api.get(f"/v1/vms/{vm['uuid']}"))["observed"], listed[0]["observed"]

        assert [o["state"] for o in await shown()] == ["Running", "Running"]
        for _ in range(100):  # the test coordinator's heartbeat timeout is 3 s
            if (await api.get(f"/v1/hosts/{host['uuid']}"))["state"] == "Disconnected":
                break
            await asyncio.sleep(0.1)
        assert [(o["state"], o["reported_state"]) for o in await shown()] == [("Unknown", "Running")] * 2
        answer = await api.post(f"/v1/vms/{vm['uuid']}/actions", {"action": "stop"})  # an action's answer too
        assert (answer["spec"]["state"], answer["observed"]["state"]) == ("Stopped", "Unknown")
        await api.post(f"/v1/vms/{vm['uuid']}/actions", {"action": "start"})
        await agent.post(f"/v1/hosts/{host['uuid']}/connect", {"hostname": "gone"})  # back: its report stands
        assert [o["state"] for o in await shown()] == ["Running", "Running"]
        assert "reported_state" not in (await shown())[0]


async def test_a_deleted_host_leaves_nothing_in_the_storage_views_their_capacity_or_etcd(api, coordinator, store):
    """Each host's agent reports a LocalStorage and a SharedMountPoint, the first host the larger one; a volume
    made on it and deleted leaves its LocalStorage reservation (0 bytes); the leader logged its state."""
    gib = 1 << 30
    a, b = await make_host(api, "host-del-a"), await make_host(api, "host-del-b")
    local = await api.post("/v1/primary-storage", {"name": "ls-del", "type": "LocalStorage", "url": "/ls-del"})
    smp = await api.post("/v1/primary-storage", {"name": "smp-del", "type": "SharedMountPoint", "url": "/smp-del"})

    async def report(host: dict, total: int) -> None:
        events = [{"seq": i + 1, "kind": "storage", "id": f"{ps['uuid']}.{host['uuid']}", "at": time.time(),
                   "body": {"storage_uuid": ps["uuid"], "type": ps["type"], "url": ps["url"], "state": "Ready",
                            "capacity": {"total": total, "available": total, "used": 0}}}
                  for i, ps in enumerate((local, smp))]
        async with Client(coordinator.url, host["token"]) as agent:
            await agent.post(f"/v1/hosts/{host['uuid']}/connect", {"hostname": host["name"]})
            await agent.post(f"/v1/hosts/{host['uuid']}/observed", {"events": events})
    await report(a, 2 * gib)
    await report(b, gib)
    vol = await api.post("/v1/volumes", {"name": "on-a", "primary_storage_uuid": "ls-del", "size": gib,
                                         "host_uuid": a["uuid"]})
    await api.delete(f"/v1/volumes/{vol['uuid']}")
    shown = await api.get(f"/v1/primary-storage/{local['uuid']}")
    assert sorted(shown["hosts"]) == sorted([a["uuid"], b["uuid"]]) and shown["hosts"][a["uuid"]]["reserved"] == 0
    await until(lambda: store.get(keys.host_state(a["uuid"])), lambda e: e is not None)

    await api.delete(f"/v1/hosts/{a['uuid']}")
    for ps in (await api.get("/v1/primary-storage"))["primary_storages"]:
        if ps["uuid"] in (local["uuid"], smp["uuid"]):
            assert list(ps["hosts"]) == [b["uuid"]] and ps["reserved"] == 0
    await report(b, gib)  # connected again (the heartbeat timeout is 3 s)
    with pytest.raises(ApiClientError) as e:  # b's 1 GiB, not the deleted host's 2 GiB
        await api.post("/v1/volumes", {"name": "big", "primary_storage_uuid": "smp-del", "size": 3 * gib // 2})
    assert e.value.code == "insufficient_capacity" and f"of 1 GiB left (capacity {gib} bytes" in e.value.message
    entries, _ = await store.list(keys.ROOT, keys_only=True)
    assert [x.key for x in entries if a["uuid"] in x.key] == []
    for ps in (local, smp):
        await api.delete(f"/v1/primary-storage/{ps['uuid']}")


async def test_a_deleted_volume_or_storage_leaves_nothing_in_etcd_and_a_late_report_brings_nothing_back(
        api, coordinator, store):
    """A host's agent reports a LocalStorage and a volume on it; each is deleted, and the agent reports on it
    once more after its delete (what it saw before the delete reached it)."""
    host = await make_host(api, "host-orphans")
    ps = await api.post("/v1/primary-storage", {"name": "ls-orphans", "type": "LocalStorage", "url": "/ls-orphans"})
    seq = 0

    async def report(kind: str, ident: str, body: dict) -> int:
        nonlocal seq
        seq += 1
        event = {"seq": seq, "kind": kind, "id": ident, "at": time.time(), "body": body}
        async with Client(coordinator.url, host["token"]) as agent:
            await agent.post(f"/v1/hosts/{host['uuid']}/connect", {"hostname": host["name"]})
            return int((await agent.post(f"/v1/hosts/{host['uuid']}/observed", {"events": [event]}))["acked"])

    async def naming(ident: str) -> list[str]:
        entries, _ = await store.list(keys.ROOT, keys_only=True)
        return [x.key for x in entries if ident in x.key]

    storage = {"storage_uuid": ps["uuid"], "type": "LocalStorage", "url": ps["url"], "state": "Ready",
               "capacity": {"total": 1 << 40, "available": 1 << 40, "used": 0}}
    await report("storage", f"{ps['uuid']}.{host['uuid']}", storage)
    vol = await api.post("/v1/volumes", {"name": "orphan", "primary_storage_uuid": ps["uuid"], "size": 1 << 30,
                                         "host_uuid": host["uuid"]})
    ready = {"storage_uuid": ps["uuid"], "state": "Ready", "path": f"/ls-orphans/{vol['uuid']}", "used": 0}
    await report("volume", vol["uuid"], ready)
    assert (await api.get(f"/v1/volumes/{vol['uuid']}"))["status"] == "Ready"
    await api.delete(f"/v1/volumes/{vol['uuid']}")
    assert await report("volume", vol["uuid"], ready) == seq  # acknowledged: the agent does not send it again
    assert await naming(vol["uuid"]) == [keys.desired_for(host["uuid"], f"volume/{vol['uuid']}")]  # tombstone
    await report("volume", vol["uuid"], {"storage_uuid": ps["uuid"], "state": "Deleted"})  # its files gone
    assert await naming(vol["uuid"]) == []

    await api.delete(f"/v1/primary-storage/{ps['uuid']}")
    assert await naming(ps["uuid"]) == []
    assert await report("storage", f"{ps['uuid']}.{host['uuid']}", storage) == seq
    assert await naming(ps["uuid"]) == []
    await api.delete(f"/v1/hosts/{host['uuid']}")
