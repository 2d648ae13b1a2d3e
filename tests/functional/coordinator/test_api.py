"""The coordinator's REST API against a real etcd: resources, validation errors, tags, configs."""

from __future__ import annotations

import pytest

from coordinator.client import ApiClientError, Client

pytestmark = pytest.mark.real


async def make_net(api, run, services=("DHCP", "DNS", "Userdata"), ranges=None, net=None, **l3):
    net = net or run.subnet()
    l2 = await api.post("/v1/l2-networks", {"name": "phys", "physical_interface": "eth0"})
    body = {"name": "priv", "l2_uuid": l2["uuid"], "cidr": str(net), "gateway": str(net[1]),
            "ip_ranges": ranges or [{"start": str(net[10]), "end": str(net[200])}],
            "dns_servers": ["198.18.255.53"], "domain": "hs.test", "services": list(services), **l3}
    return l2, await api.post("/v1/l3-networks", body)


async def make_host(api, name="host-a"):
    return await api.post("/v1/hosts", {"name": name, "address": "198.18.0.2"})


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
    fixed = l3["ip_ranges"][0]["start"]
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
    await api.post("/v1/system-tags", {"resource_uuid": vm["uuid"], "tag": "sshkey::ssh-ed25519 AAAA me@box"})
    got = await api.get(f"/v1/vms/{vm['uuid']}")
    assert got["spec"]["userdata"] == "changed" and got["spec"]["ssh_keys"] == {"me@box": "ssh-ed25519 AAAA me@box"}
    got = await api.patch(f"/v1/vms/{vm['uuid']}", {"cache_mode": "writethrough"})
    assert got["spec"]["cache_mode"] == "writethrough"
    await api.delete(f"/v1/vms/{vm['uuid']}")
    with pytest.raises(ApiClientError) as e:
        await api.get(f"/v1/vms/{vm['uuid']}")
    assert e.value.status == 404
    assert (await api.get("/v1/system-tags", resourceUuid=vm["uuid"]))["tags"] == []


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
