"""An agent presenting host A's credential can neither read nor write anything of host B (issue 14).

Two registered hosts with a VM each, a TLS coordinator; host A's token is used against B's agent
endpoints, to report on B's VM and NIC, and to resume a stream from old revisions.
"""

from __future__ import annotations

import json
import time

import aiohttp
import pytest
from cryptography import x509

from agentkit import pki
from agentkit.tls import client_context

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
async def cloud(coordinator, run):
    async with coordinator.client() as api:
        hosts = [await api.post("/v1/hosts", {"name": f"iso-{n}", "address": f"198.18.7.{i + 2}"})
                 for i, n in enumerate("ab")]
        net = run.subnet()
        l2 = await api.post("/v1/l2-networks", {"name": "iso", "physical_interface": "eth1"})
        l3 = await api.post("/v1/l3-networks", {"name": "iso", "l2_uuid": l2["uuid"], "cidr": str(net),
                                                "services": ["DHCP"]})
        vms = [await api.post("/v1/vms", {"name": f"iso-vm-{i}", "host_uuid": h["uuid"], "state": "Stopped",
                                          "l3_network_uuids": [l3["uuid"]]}) for i, h in enumerate(hosts)]
    return hosts, vms


def session(coordinator, token: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(coordinator.url, headers={"Authorization": f"Bearer {token}"},
                                 connector=aiohttp.TCPConnector(ssl=client_context(coordinator.ca)))


async def test_host_a_cannot_use_host_b_agent_endpoints(coordinator, cloud):
    (a, b), _ = cloud
    key = pki.new_key()
    calls = [("POST", "connect", {}), ("POST", "heartbeat", None), ("GET", "stream", None),
             ("POST", "observed", {"events": []}), ("POST", "token/renew", None),
             ("POST", "certificate", {"csr": pki.request(key, "x").decode()})]
    async with session(coordinator, a["token"]) as s:
        for method, path, body in calls:
            async with s.request(method, f"/v1/hosts/{b['uuid']}/{path}", json=body) as r:
                assert r.status == 401, path
        for method, path in (("GET", "/v1/hosts"), ("GET", f"/v1/hosts/{b['uuid']}"), ("GET", "/v1/vms"),
                             ("POST", f"/v1/hosts/{b['uuid']}/token")):
            async with s.request(method, path, json={}) as r:
                assert r.status == 401, path
        async with s.post(f"/v1/hosts/{a['uuid']}/heartbeat") as r:
            assert r.status == 204  # its own


async def test_host_a_reports_only_on_its_own_vm_and_nics(coordinator, cloud, api):
    (a, _), (vm_a, vm_b) = cloud
    nic_b, nic_a = vm_b["spec"]["nics"][0], vm_a["spec"]["nics"][0]
    now = time.time()
    forged = {"state": "Running", "console": {"protocol": "vnc", "kinds": ["vnc"]}}  # B's tunnel would serve it
    events = [
        {"seq": 1, "kind": "vm", "id": vm_b["uuid"], "body": forged, "at": now},
        {"seq": 2, "kind": "lease", "id": nic_b["uuid"],
         "body": {"state": "bound", "vm_uuid": vm_b["uuid"], "l3_uuid": nic_b["l3_uuid"], "ip": nic_b["ip"],
                  "mac": nic_b["mac"]}, "at": now},
        {"seq": 3, "kind": "lease", "id": nic_b["uuid"],  # naming its own VM does not help
         "body": {"state": "bound", "vm_uuid": vm_a["uuid"], "l3_uuid": nic_b["l3_uuid"], "ip": nic_b["ip"],
                  "mac": nic_b["mac"]}, "at": now},
        {"seq": 4, "kind": "vm", "id": vm_a["uuid"], "body": {"state": "Running"}, "at": now},
        {"seq": 5, "kind": "lease", "id": nic_a["uuid"],
         "body": {"state": "bound", "vm_uuid": vm_a["uuid"], "l3_uuid": nic_a["l3_uuid"], "ip": nic_a["ip"],
                  "mac": nic_a["mac"]}, "at": now},
    ]
    async with session(coordinator, a["token"]) as s, s.post(f"/v1/hosts/{a['uuid']}/observed",
                                                              json={"events": events}) as r:
        assert r.status == 200 and (await r.json())["acked"] == 5  # acknowledged: never sent again
    theirs, ours = await api.get(f"/v1/vms/{vm_b['uuid']}"), await api.get(f"/v1/vms/{vm_a['uuid']}")
    assert theirs["observed"] is None and not theirs.get("leases")
    assert ours["observed"]["state"] == "Running" and nic_a["uuid"] in json.dumps(ours)
    with pytest.raises(Exception, match="409"):
        await api.post(f"/v1/vms/{vm_b['uuid']}/console", {})  # not through the forger's tunnel: not running
    assert f"host {a['uuid']} reported on 2 objects that are not its own" in warnings(coordinator)  # the forgery


async def test_host_a_reports_only_its_own_health(coordinator, cloud, api):
    (a, b), _ = cloud
    now = time.time()
    degraded = {"errors": {"bridges": "BridgeError: uplink eth9 not found"}}
    events = [{"seq": 11, "kind": "health", "id": a["uuid"], "body": degraded, "at": now},
              {"seq": 12, "kind": "health", "id": b["uuid"], "body": {"errors": {"eip": "forged"}}, "at": now}]
    async with session(coordinator, a["token"]) as s:
        async with s.post(f"/v1/hosts/{a['uuid']}/observed", json={"events": events}) as r:
            assert r.status == 200 and (await r.json())["acked"] == 12
        async with s.post(f"/v1/hosts/{a['uuid']}/heartbeat") as r:
            assert r.status == 204
    shown = await api.get(f"/v1/hosts/{a['uuid']}")
    assert shown["state"] == "Connected" and shown["health"] == {"status": "degraded", "at": now, **degraded}
    assert (await api.get(f"/v1/hosts/{b['uuid']}"))["health"] is None  # never reported: none shown
    listed = {h["uuid"]: h["health"] for h in (await api.get("/v1/hosts"))["hosts"]}
    assert listed[a["uuid"]]["status"] == "degraded" and listed[b["uuid"]] is None
    assert f"host {a['uuid']} reported on 1 objects that are not its own" in warnings(coordinator)
    assert f"host {a['uuid']}: its agent fails at bridges: BridgeError: uplink eth9 not found" in warnings(coordinator)


def warnings(coordinator) -> str:
    """The coordinator's warning lines, as an operator reads its log for what needs looking at."""
    log = coordinator.run.path(f"{coordinator.name}.log").read_text()
    return "\n".join(line for line in log.splitlines() if '"level": "warning"' in line)


async def test_late_reports_are_dropped_without_a_warning(coordinator, cloud, api):
    """An agent reports what it saw before the delete reached it, or (the old host of a VM that moved) that
    its copy is gone after the new host reported: both are dropped, and no warning cries wolf about a host
    reporting on what is not its own. A report that another host's VM is gone changes nothing either."""
    _, (_, vm_b) = cloud
    host = await api.post("/v1/hosts", {"name": "iso-race", "address": "198.18.7.9"})
    vm = await api.post("/v1/vms", {"name": "iso-race-vm", "host_uuid": host["uuid"], "state": "Stopped"})
    await api.delete(f"/v1/vms/{vm['uuid']}")
    events = [{"seq": 1, "kind": "vm", "id": vm["uuid"], "body": {"state": "Stopped"}, "at": time.time()},
              {"seq": 2, "kind": "vm", "id": vm_b["uuid"], "body": {"state": "Destroyed"}, "at": time.time()}]
    async with session(coordinator, host["token"]) as s, s.post(f"/v1/hosts/{host['uuid']}/observed",
                                                                 json={"events": events}) as r:
        assert r.status == 200 and (await r.json())["acked"] == 2
    assert host["uuid"] not in warnings(coordinator)
    assert (await api.get(f"/v1/vms/{vm_b['uuid']}"))["observed"] is None


async def first_line(coordinator, host: dict, since: int) -> dict | None:
    async with session(coordinator, host["token"]) as s, s.get(f"/v1/hosts/{host['uuid']}/stream",
                                                                params={"since": str(since)}) as r:
        assert r.status == 200
        line = await r.content.readline()
        return json.loads(line) if line else None


async def test_a_resumed_stream_never_carries_another_hosts_history(coordinator, cloud):
    (a, _), (vm_a, vm_b) = cloud
    for since in (0, 1, 2, 5):
        text = json.dumps(await first_line(coordinator, a, since))
        assert vm_b["uuid"] not in text, since
    assert vm_a["uuid"] in json.dumps(await first_line(coordinator, a, 0))


async def test_a_certificate_names_the_host_and_its_own_address_whatever_was_asked(coordinator, cloud):
    (a, b), _ = cloud
    key = pki.new_key()
    async with session(coordinator, a["token"]) as s, s.post(
            f"/v1/hosts/{a['uuid']}/certificate", json={"csr": pki.request(key, b["uuid"]).decode()}) as r:
        assert r.status == 200
        chain = x509.load_pem_x509_certificates((await r.json())["certificate"].encode())
    cert = chain[0]
    assert cert.subject.rfc4514_string() == f"CN={a['uuid']}"
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == [a["address"]]
    assert cert.public_key() == key.public_key()
