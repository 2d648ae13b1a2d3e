"""The strict API (issue 14) against a real etcd and coordinator: each bad input the issue lists is a 4xx
naming what is wrong, in the one error envelope, and nothing of it is stored.

Every route of the OpenAPI document gets the generic shapes in test_fuzz.py; here each listed item has
its own test with the request that showed it.
"""

from __future__ import annotations

import itertools
import json
import secrets
import subprocess
import sys
from typing import Any

import aiohttp
import pytest

from coordinator.api.parse import MAX_BODY
from coordinator.client import ApiClientError, Client
from coordinator.domain import tags
from coordinator.domain.networks import MAX_RANGES
from coordinator.domain.vms import MAX_DATA_VOLUMES
from testbed.cloudinit import GUEST_KEY
from testbed.coordinators import Coordinator
from testbed.pki import TestPki

pytestmark = pytest.mark.real
Answer = tuple[int, Any]

ADDRESSES = (f"198.18.2.{i}" for i in itertools.count(2))  # a host's own: an address has one KVM host


class Raw:
    """Requests the API client would never send: raw bytes, odd headers, another token."""

    def __init__(self, session: aiohttp.ClientSession, url: str, token: str):
        self.session, self.url, self.token = session, url, token

    async def send(self, method: str, path: str, data: bytes | str | None = None, token: str | None = None,
                   headers: dict[str, str] | None = None, params: dict[str, str] | None = None) -> Answer:
        auth = {"Authorization": f"Bearer {token or self.token}"}
        async with self.session.request(method, self.url + path, data=data, params=params,
                                        headers={**auth, **(headers or {})}) as r:
            text = await r.text()
            return r.status, json.loads(text) if text else None

    async def json(self, method: str, path: str, body: object, token: str | None = None) -> Answer:
        return await self.send(method, path, json.dumps(body), token)


@pytest.fixture
async def raw(coordinator, token):
    async with aiohttp.ClientSession() as s:
        yield Raw(s, coordinator.url, token)


@pytest.fixture
async def spec(api) -> dict[str, Any]:
    return await api.get("/v1/openapi.json")


def operations(spec: dict[str, Any], with_body: bool | None = None) -> list[tuple[str, str]]:
    """(method, path with its parameters filled) of every route, optionally only those with(out) a body."""
    found = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if with_body is None or ("requestBody" in op) == with_body:
                filled = "/".join("x1" if seg.startswith("{") else seg for seg in path.split("/"))
                found.append((method.upper(), filled))
    return found


def error(answer: Answer, status: int, field: str | None = None, words: str = "") -> dict[str, Any]:
    got, body = answer
    assert got == status, body
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}, body
    assert field is None or body["error"]["field"] == field, body
    assert words in body["error"]["message"], body
    return body["error"]


async def host_with_token(api: Client, name: str) -> dict[str, Any]:
    """A registered KVM host (never connected: VMs placed on it explicitly are recorded all the same)."""
    return await api.post("/v1/hosts", {"name": f"{name}-{secrets.token_hex(3)}", "address": next(ADDRESSES)})


async def network(api: Client, run, name: str) -> dict[str, Any]:
    net = run.subnet()
    l2 = await api.post("/v1/l2-networks", {"name": name, "physical_interface": run.uplink()})
    return await api.post("/v1/l3-networks", {"name": name, "l2_uuid": l2["uuid"], "cidr": str(net)})


async def test_a_non_ascii_bearer_token_is_401_on_every_endpoint(raw, spec):
    for method, path in operations(spec):
        if path != "/health":
            error(await raw.send(method, path, token="é"), 401, words="bearer token")


@pytest.mark.parametrize("data, headers, words", [
    ("[" * 50_000 + "]" * 50_000, {}, "recursion limit"),
    ('{"x": ' + "9" * 5000 + "}", {}, "number out of range"),
    ("{}", {"Content-Type": "application/json; charset=abuse"}, "charset"),
])
async def test_unparseable_bodies_are_400_on_every_body_endpoint(raw, spec, data, headers, words):
    for method, path in operations(spec, with_body=True):
        error(await raw.send(method, path, data, headers=headers), 400, words=words)


async def test_values_over_etcds_request_limit_are_413_naming_the_limit(raw, api, run):
    host = await host_with_token(api, "big-host")
    l3 = await network(api, run, "big")
    vm = await api.post("/v1/vms", {"name": "big", "host_uuid": host["uuid"], "state": "Stopped"})
    huge = [
        ("POST", "/v1/system-tags", {"resource_uuid": vm["uuid"], "tag": "userdata::" + "a" * (7 << 20)}, None),
        ("PUT", f"/v1/vms/{vm['uuid']}/cdrom", {"iso_path": "/var/lib/hoststack/" + "a" * (3 << 20)}, None),
        ("POST", "/v1/vms", {"name": "k", "kernel": {"kernel": "k", "cmdline": "a" * (3 << 20)}}, None),
        ("POST", "/v1/l3-networks", {"name": "r", "l2_uuid": l3["l2_uuid"], "cidr": "198.19.0.0/16", "ip_ranges": [
            {"start": "198.19.0.1", "end": "198.19.0.1"}] * 60_000}, None),
        ("POST", f"/v1/hosts/{host['uuid']}/observed",
         {"events": [{"seq": 1, "kind": "vm", "id": "v1", "at": 1.0, "body": {"error": "e" * (7 << 20)}}]},
         host["token"]),
    ]
    for method, path, body, token in huge:
        error(await raw.json(method, path, body, token), 413, words=f"limit of {MAX_BODY} bytes")
    under_the_body_limit = [  # each over its field's own limit
        ("POST", "/v1/system-tags", {"resource_uuid": vm["uuid"], "tag": "userdata::" + "a" * (16 << 10 | 1)}, "tag",
         f"at most {tags.USERDATA_MAX}"),
        ("PUT", f"/v1/vms/{vm['uuid']}/cdrom", {"iso_path": "a" * 5000}, "iso_path", "at most 4096 characters"),
        ("POST", "/v1/l3-networks", {"name": "r", "l2_uuid": l3["l2_uuid"], "cidr": "198.19.0.0/16", "ip_ranges": [
            {"start": "198.19.0.1", "end": "198.19.0.1"}] * (MAX_RANGES + 1)}, "ip_ranges", f"at most {MAX_RANGES}"),
        ("POST", "/v1/vms", {"name": "t", "system_tags": ["sshkey::k"] * 40}, "system_tags", "at most 32 items"),
        ("POST", "/v1/vms", {"name": "t", "system_tags": ["userdata::" + "é" * 8000] * 8}, "system_tags",
         f"the limit is {tags.MAX_TOTAL} bytes"),
    ]
    for method, path, body, field, words in under_the_body_limit:
        error(await raw.json(method, path, body), 413, field, words)
    for _ in range(tags.MAX_TAGS):
        await api.post("/v1/system-tags", {"resource_uuid": vm["uuid"], "tag": f"sshkey::{GUEST_KEY}"})
    error(await raw.json("POST", "/v1/system-tags", {"resource_uuid": vm["uuid"], "tag": f"sshkey::{GUEST_KEY}"}),
          413, "tag", f"at most {tags.MAX_TAGS} system tags")


async def test_unknown_fields_are_400_naming_the_field_on_every_body_endpoint(raw, spec):
    for method, path in operations(spec, with_body=True):
        error(await raw.json(method, path, {"zz_unknown": 1}), 400, "zz_unknown", "unknown field")
    error(await raw.json("POST", "/v1/vms", {"name": "one-cpu", "cpus": 4}), 400, "cpus", "unknown field")


async def test_an_endpoint_without_a_body_takes_none(raw, spec):
    for method, path in operations(spec, with_body=False):
        if path != "/health" and method != "GET":
            error(await raw.json(method, path, {"force": True}), 400, words="takes no request body")


@pytest.mark.parametrize("path, body, field", [
    ("/v1/vms", {"name": "v", "cpu": "4"}, "cpu"),
    ("/v1/vms", {"name": "v", "cpu": 4.0}, "cpu"),
    ("/v1/l2-networks", {"name": "v", "physical_interface": "eth0", "vlan": True}, "vlan"),
    ("/v1/l3-networks", {"name": "v", "l2_uuid": "x", "cidr": "198.18.0.0/24", "mtu": "1500"}, "mtu"),
    ("/v1/l3-networks", {"name": "v", "l2_uuid": "x", "cidr": "198.18.0.0/24", "public": "true"}, "public"),
])
async def test_values_are_not_coerced(raw, path, body, field):
    error(await raw.json("POST", path, body), 400, field)


async def test_numbers_are_finite_and_the_deploy_log_stays_json(raw, api):
    host = await host_with_token(api, "nan-host")
    path = f"/v1/hosts/{host['uuid']}/deploy-log"
    entry = '{"host": "h", "task": "t", "phase": "after", "duration_ms": %s}'
    for number in ("NaN", "Infinity", "-Infinity"):
        error(await raw.send("POST", path, entry % number), 400, words="not JSON")
    error(await raw.send("POST", path, entry % "1e999"), 400, "duration_ms", "finite")
    assert (await raw.send("POST", path, entry % "12.5"))[0] == 204
    async with raw.session.get(raw.url + path, headers={"Authorization": f"Bearer {raw.token}"}) as r:
        text = await r.text()

    def no_constants(name: str) -> None:
        raise AssertionError(f"the deploy log serves {name}, which is not JSON")
    assert json.loads(text, parse_constant=no_constants)["entries"][-1]["duration_ms"] == 12.5


async def test_macs_are_unicast_and_unique_on_their_l2(api, raw, run):
    host = await host_with_token(api, "mac-host")
    l3, other = await network(api, run, "mac-a"), await network(api, run, "mac-b")

    def vm(name: str, l3_uuid: str, mac: str) -> dict[str, Any]:
        return {"name": name, "host_uuid": host["uuid"], "state": "Stopped", "l3_network_uuids": [l3_uuid],
                "fixed_macs": {l3_uuid: mac}}
    for mac in ("ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01", "33:33:00:00:00:01", "00:00:00:00:00:00"):
        error(await raw.json("POST", "/v1/vms", vm("m", l3["uuid"], mac)), 400, "fixed_macs")
    first = await api.post("/v1/vms", vm("m1", l3["uuid"], "52:54:00:00:00:01"))
    error(await raw.json("POST", "/v1/vms", vm("m2", l3["uuid"], "52:54:00:00:00:01")), 409, "fixed_macs",
          "already used")
    await api.post("/v1/vms", vm("m3", other["uuid"], "52:54:00:00:00:01"))  # another L2: another segment
    await api.delete(f"/v1/vms/{first['uuid']}")
    await api.post("/v1/vms", vm("m4", l3["uuid"], "52:54:00:00:00:01"))  # freed with its VM


@pytest.mark.parametrize("name", ["..", ".", "eth0:1", "-eth0", "eth0/1", "a" * 16])
async def test_interface_names_are_linux_device_names(raw, name):
    error(await raw.json("POST", "/v1/l2-networks", {"name": "i", "physical_interface": name}), 400,
          "physical_interface")


async def test_host_facts_are_not_negative(raw, api):
    host = await host_with_token(api, "facts-host")
    for fact in ("cpus", "memory_mb", "free_memory_mb"):
        error(await raw.json("POST", f"/v1/hosts/{host['uuid']}/connect", {fact: -1}, host["token"]), 400, fact)
    assert (await api.get(f"/v1/hosts/{host['uuid']}"))["facts"] is None


async def test_a_host_cannot_be_named_after_a_uuid(raw, api):
    host = await host_with_token(api, "named-host")
    error(await raw.json("POST", "/v1/hosts", {"name": host["uuid"], "address": "198.18.0.3"}), 400, "name",
          "looks like a uuid")
    assert (await api.get(f"/v1/hosts/{host['uuid']}"))["name"] == host["name"]


async def test_a_malformed_lease_is_refused_where_it_is_written(raw, api, run):
    host = await host_with_token(api, "lease-host")
    l3 = await network(api, run, "lease")
    vm = await api.post("/v1/vms", {"name": "leased", "host_uuid": host["uuid"], "state": "Stopped",
                                    "l3_network_uuids": [l3["uuid"]]})
    nic = vm["spec"]["nics"][0]
    observed = f"/v1/hosts/{host['uuid']}/observed"
    lease = {"state": "bound", "vm_uuid": vm["uuid"], "l3_uuid": l3["uuid"], "mac": nic["mac"], "ip": nic["ip"]}
    for seq, (body, field) in enumerate([({"state": "bound"}, "events.0.body.vm_uuid"),
                                         ({**lease, "at": "now"}, "events.0.body.at"),
                                         ({**lease, "state": "stolen"}, "events.0.body.state")], 1):
        event = {"seq": seq, "kind": "lease", "id": nic["uuid"], "body": body, "at": 1.0}
        error(await raw.json("POST", observed, {"events": [event]}, host["token"]), 400, field)
    error(await raw.json("POST", observed, {"events": [{"seq": 1, "kind": "vm", "id": "a/b", "body": {}, "at": 1}]},
                         host["token"]), 400, "events.0.id")
    assert (await api.get("/v1/vms"))["vms"]
    event = {"seq": 1, "kind": "lease", "id": nic["uuid"], "body": lease, "at": 1.0}
    assert (await raw.json("POST", observed, {"events": [event]}, host["token"]))[0] == 200
    shown = next(v for v in (await api.get("/v1/vms"))["vms"] if v["uuid"] == vm["uuid"])
    assert shown["leases"][nic["uuid"]]["ip"] == nic["ip"]


async def test_a_vm_has_at_most_16_data_volumes(raw, api):
    host = await host_with_token(api, "vols-host")
    disks = [{"kind": "file", "path": f"v/d{i}.qcow2"} for i in range(MAX_DATA_VOLUMES)]
    vm = await api.post("/v1/vms", {"name": "vols", "host_uuid": host["uuid"], "state": "Stopped",
                                    "data_volumes": disks})
    error(await raw.json("POST", f"/v1/vms/{vm['uuid']}/volumes", {"disk": {"kind": "file", "path": "v/x.qcow2"}}),
          413, "disk", f"{MAX_DATA_VOLUMES} data volumes")
    error(await raw.json("POST", "/v1/vms", {"name": "v", "data_volumes": [*disks, disks[0]]}), 413, "data_volumes")


async def test_a_batch_of_many_objects_is_stored_whole(raw, api):
    host = await host_with_token(api, "busy-host")
    events = [{"seq": i, "kind": "vm", "id": f"v{i}", "body": {"state": "Running"}, "at": 1.0} for i in range(1, 301)]
    assert await raw.json("POST", f"/v1/hosts/{host['uuid']}/observed", {"events": events}, host["token"]) == (
        200, {"acked": 300})


@pytest.mark.parametrize("address", ["$(reboot);id", "../../etc/passwd", "127.0.0.256", "-oProxyCommand=id",
                                     "host name", "a;b", "fe80::1%eth0"])
async def test_a_host_address_is_an_ip_or_a_dns_name(raw, address):
    error(await raw.json("POST", "/v1/hosts", {"name": "addr", "address": address}), 400, "address",
          "neither an IP address nor a DNS name")


@pytest.mark.parametrize("ssh, field", [({"key_file": "-oProxyCommand=id"}, "ssh.key_file"),
                                        ({"key_file": "relative/key"}, "ssh.key_file"),
                                        ({"user": "-oProxyCommand=id"}, "ssh.user")])
async def test_ssh_credentials_cannot_carry_options(raw, ssh, field):
    error(await raw.json("POST", "/v1/hosts", {"name": "ssh", "address": "198.18.0.5", "ssh": ssh}), 400, field)


def test_the_cli_takes_a_bare_host_and_port_and_names_a_bad_url(run, etcd, token):
    tls = Coordinator(run, etcd, token, name="coord-bare-url", pki=TestPki(run)).start()  # bare HOST:PORT is https
    try:
        def hs(url: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "coordinator.cli", "--url", url, f"--token={token}",
                                   f"--ca={tls.ca}", "l2", "list"], capture_output=True, text=True, timeout=30)
        ok = hs(tls.url.removeprefix("https://"))
    finally:
        tls.stop()
    assert ok.returncode == 0 and "physical_interface" in ok.stdout, ok.stderr
    for bad in ("http://[::1", "http://127.0.0.1:99999", "ftp://127.0.0.1"):
        p = hs(bad)
        assert p.returncode == 1 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr


async def test_a_stream_revision_from_the_future_gets_a_snapshot(raw, api):
    """The watch cache (coordinator/fanout/hub.py) waits briefly for a revision it has not seen, then
    answers with a snapshot: a revision the store never reached (a restored etcd) is not resumed from."""
    host = await host_with_token(api, "stream-host")
    path = f"/v1/hosts/{host['uuid']}/stream"
    for since in ("1000000000000", "0"):
        async with raw.session.get(raw.url + path, params={"since": since},
                                   headers={"Authorization": f"Bearer {host['token']}"}) as r:
            assert r.status == 200 and json.loads(await r.content.readline())["type"] == "snapshot"
    for since in ("-1", "x", "1e3", "9" * 30):
        error(await raw.send("GET", path, token=host["token"], params={"since": since}), 400, "since")


async def test_a_tag_query_reads_brackets_literally(api):
    host = await host_with_token(api, "tag-host")
    vm = await api.post("/v1/vms", {"name": "tagged", "host_uuid": host["uuid"], "state": "Stopped",
                                    "system_tags": ["userdata::[foo,bar]: 1", "userdata::f: 2"]})
    found = await api.get("/v1/system-tags", resourceUuid=vm["uuid"], **{"tag~": "userdata::[foo,bar]%"})
    assert [t["tag"] for t in found["tags"]] == ["userdata::[foo,bar]: 1"]
    found = await api.get("/v1/system-tags", resourceUuid=vm["uuid"], **{"tag~": "userdata::[f]%"})
    assert found["tags"] == []


@pytest.mark.parametrize("body, field", [
    ({"kernel": {"kernel": "../../../../etc/shadow"}}, "kernel.kernel"),
    ({"kernel": {"kernel": "/etc/shadow"}}, "kernel.kernel"),
    ({"kernel": {"kernel": "k", "initrd": "/boot/../etc/shadow"}}, "kernel.initrd"),
    ({"iso_path": "/etc/shadow"}, "iso_path"),
    ({"root_volume": {"kind": "file", "path": "../../../../etc/shadow"}}, "root_volume.path"),
    ({"root_volume": {"kind": "file", "path": "r.qcow2", "backing": "/etc/shadow"}}, "root_volume.backing"),
    ({"data_volumes": [{"kind": "file", "path": "/var/lib/hoststack//x"}]}, "data_volumes.0.path"),
])
async def test_disk_iso_and_kernel_paths_are_confined(raw, api, body, field):
    host = await host_with_token(api, "path-host")
    error(await raw.json("POST", "/v1/vms", {"name": "p", "host_uuid": host["uuid"], **body}), 400, field)


async def test_a_path_inside_the_roots_is_taken(api, coordinator):
    host = await host_with_token(api, "path-ok")
    root = coordinator.env()["HS_COORDINATOR_FILE_ROOTS"].split(",")[0]
    vm = await api.post("/v1/vms", {"name": "p", "host_uuid": host["uuid"], "state": "Stopped",
                                    "kernel": {"kernel": f"{root}/vmlinux"}, "iso_path": f"{root}/a.iso",
                                    "root_volume": {"kind": "file", "path": "p/root.qcow2"}})
    assert vm["spec"]["kernel"]["kernel"] == f"{root}/vmlinux"
    with pytest.raises(ApiClientError) as e:
        await api.put(f"/v1/vms/{vm['uuid']}/cdrom", {"iso_path": "/etc/shadow"})
    assert (e.value.status, e.value.field) == (400, "iso_path")
