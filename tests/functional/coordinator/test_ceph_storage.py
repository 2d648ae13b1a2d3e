"""Ceph backup and primary storage through the coordinator API, against a real one-node cluster, a real
cephagent process and a real coordinator on etcd: adding, the pool rule, mons, the one-cluster rules,
capacity, and credentials that never leave the coordinator in clear."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web
from pydantic import SecretStr

from agentkit import __version__
from agentkit.model import stream_key_ceph_secret
from coordinator.client import ApiClientError
from coordinator.domain import credentials
from coordinator.etcd import keys
from coordinator.etcd.store import Store
from testbed.ceph import CephCluster
from testbed.coordinators import secret_key

pytestmark = pytest.mark.real
PASSWORD = "Pa55:w@rd-s3cr3t"
MiB = 1 << 20


@pytest.fixture(scope="module")
def coordinator(ceph_coordinator):
    return ceph_coordinator


def mon_url(ceph: CephCluster, mon: str = "a", host: str = "127.0.0.1") -> str:
    port = ceph.mons[mon].v1_port if mon in ceph.mons else 6789
    return f"root:{PASSWORD}@{host}:22/?monPort={port}"


def pools_of(ceph: CephCluster) -> list[str]:
    return json.loads(ceph.mon_command("osd pool ls"))


async def etcd_values(etcd, prefix: str = "/hs/") -> dict[str, object]:
    store = Store(etcd.endpoint)
    await store.connect()
    try:
        entries, _ = await store.list(prefix)
        return {e.key: e.value for e in entries}
    finally:
        await store.close()


async def expect_error(coro, status: int, code: str, field: str | None = None) -> ApiClientError:
    with pytest.raises(ApiClientError) as e:
        await coro
    assert (e.value.status, e.value.code) == (status, code), e.value
    if field is not None:
        assert e.value.field == field, e.value
    assert PASSWORD not in e.value.message and "w@rd" not in e.value.message
    return e.value


async def test_add_backup_and_primary_storage(api, ceph, etcd):
    ceph.mon_command("osd pool create", pool="hs-existing-root")
    bs = await api.post("/v1/ceph-backup-storage", {"name": "bs1", "monUrls": [mon_url(ceph)]})
    assert bs["type"] == "CephBackupStorage" and bs["fsid"] == ceph.fsid and bs["status"] == "Connected"
    assert bs["mons"][0]["url"] == f"root:***@127.0.0.1:22/?monPort={ceph.mons['a'].v1_port}"
    assert bs["mons"][0]["in_quorum"] and bs["mons"][0]["mon_name"] == "a"
    assert [p["role"] for p in bs["pools"]] == ["image"] and bs["pools"][0]["name"] in pools_of(ceph)
    ps = await api.post("/v1/ceph-primary-storage", {"name": "ps1", "zone": "default", "monUrls": mon_url(ceph),
                                                     "rootVolumePoolName": "hs-existing-root"})
    pools = {p["role"]: p["name"] for p in ps["pools"]}
    assert pools["rootVolume"] == "hs-existing-root"
    assert {pools["imageCache"], pools["dataVolume"]} <= set(pools_of(ceph))
    assert ps["capacity"]["total"] > 0 and ps["health"].startswith("HEALTH_")
    secret = (await etcd_values(etcd, keys.desired_all(stream_key_ceph_secret(ceph.fsid))))
    item = secret[keys.desired_all(stream_key_ceph_secret(ceph.fsid))]
    key = json.loads(ceph.mon_command("auth get-key", entity="client.hsvms"))["key"]
    assert item == {"uuid": ps["secret_uuid"], "user": "hsvms", "key": key, "fsid": ceph.fsid}
    assert PASSWORD not in json.dumps([bs, ps]) and "w@rd" not in json.dumps([bs, ps])
    by_name = await api.get("/v1/ceph-primary-storage/ps1")
    assert by_name["uuid"] == ps["uuid"] and by_name["mons"][0]["status"] == "Connected"
    await expect_error(api.post("/v1/ceph-backup-storage", {"name": "bs1", "monUrls": [mon_url(ceph)]}),
                       409, "already_exists", "name")


async def test_named_pool_missing_leaves_nothing_behind(api, ceph, etcd):
    pools_before, etcd_before = set(pools_of(ceph)), await etcd_values(etcd, keys.CEPH)
    err = await expect_error(api.post("/v1/ceph-primary-storage", {
        "name": "ps-missing", "monUrls": [mon_url(ceph)], "rootVolumePoolName": "hs-existing-root",
        "dataVolumePoolName": "no-such-pool"}), 400, "pool_not_found", "data_volume_pool_name")
    assert "'no-such-pool' does not exist" in err.message
    await expect_error(api.post("/v1/ceph-backup-storage", {"name": "bs-missing", "monUrls": [mon_url(ceph)],
                                                            "poolName": "nope"}), 400, "pool_not_found", "pool_name")
    assert set(pools_of(ceph)) == pools_before
    assert await etcd_values(etcd, keys.CEPH) == etcd_before
    names = [s["name"] for s in (await api.get("/v1/ceph-primary-storage", live="false"))["primary_storages"]]
    assert "ps-missing" not in names
    # the name was only reserved while adding: it is free again
    await expect_error(api.post("/v1/ceph-backup-storage", {"name": "bs-missing", "monUrls": [mon_url(ceph)],
                                                            "poolName": "nope"}), 400, "pool_not_found")


async def test_bad_mon_urls_are_client_errors(api, ceph):
    err = await expect_error(api.post("/v1/ceph-backup-storage", {
        "name": "bad", "monUrls": [mon_url(ceph), f"root:{PASSWORD}@127.0.0.1:notaport"]}),
        400, "invalid_mon_url", "mon_urls")
    assert "mon_urls[1]" in err.message and "ssh_port" in err.message
    err = await expect_error(api.post("/v1/ceph-backup-storage", {"name": "bad", "monUrls": "127.0.0.1"}),
                             400, "invalid_mon_url", "mon_urls")
    err = await expect_error(api.post("/v1/ceph-backup-storage", {
        "name": "bad", "monUrls": [f"root:{PASSWORD}@127.0.0.3/?monPort=6789"]}), 400, "agent_unreachable", "mon_urls")
    assert "root:***@127.0.0.3:22/?monPort=6789" in err.message
    await expect_error(api.get("/v1/ceph-backup-storage/nope"), 404, "not_found")


@pytest.mark.parametrize("kind", ["backup", "primary"])
async def test_add_and_remove_a_mon(api, ceph, kind):
    """The same against a second real mon for both kinds of Ceph storage (primary storage: issue 16)."""
    path = f"/v1/ceph-{kind}-storage"
    storage = await api.post(path, {"name": f"{kind[0]}s-mons", "monUrls": [mon_url(ceph)]})
    mon_b = ceph.add_mon("b")
    try:
        out = await api.post(f"{path}/{storage['uuid']}/mons", {"monUrls": [mon_url(ceph, "b")]})
        assert [(m["mon_name"], m["status"], m["in_quorum"]) for m in out["mons"]] == \
            [("a", "Connected", True), ("b", "Connected", True)]
        await expect_error(api.post(f"{path}/{storage['uuid']}/mons",
                                    {"monUrls": [mon_url(ceph, "b")]}), 409, "already_exists", "mon_urls")
    finally:
        ceph.remove_mon("b")
    shown = await api.get(f"{path}/{storage['uuid']}")
    assert shown["mons"][1]["status"] == "Disconnected" and shown["status"] == "Connected"
    assert f"127.0.0.1:{mon_b.v1_port}" in shown["mons"][1]["reason"]
    await expect_error(api.delete(f"{path}/{storage['uuid']}/mons", monHostnames="127.0.0.9"),
                       400, "not_found", "mon_hostnames")
    out = await api.delete(f"{path}/{kind[0]}s-mons/mons", monHostnames=f"127.0.0.1:{mon_b.v1_port}")
    assert [m["mon_port"] for m in out["mons"]] == [ceph.mons["a"].v1_port]
    await expect_error(api.delete(f"{path}/{storage['uuid']}/mons", monHostnames="127.0.0.1"),
                       409, "last_mon", "mon_hostnames")
    await api.delete(f"{path}/{storage['uuid']}")


async def test_requests_take_snake_case_or_the_seeds_camel_case(api, ceph, etcd):
    """Answers and new records are snake_case; requests may use the seeds' camelCase names, and records an
    earlier version stored in camelCase still load."""
    ceph.mon_command("osd pool create", pool="hs-snake")
    bs = await api.post("/v1/ceph-backup-storage", {"name": "bs-snake", "mon_urls": [mon_url(ceph)],
                                                    "pool_name": "hs-snake", "zone": "snake"})
    assert bs["pools"] == [{**bs["pools"][0], "role": "image", "name": "hs-snake"}] and bs["mons"][0]["in_quorum"]
    await expect_error(api.delete(f"/v1/ceph-backup-storage/{bs['uuid']}/mons", mon_hostnames="127.0.0.9"),
                       400, "not_found", "mon_hostnames")
    stored = (await etcd_values(etcd, keys.ceph_storage("bs", bs["uuid"])))[keys.ceph_storage("bs", bs["uuid"])]
    assert {"created_at", "mons"} <= set(stored) and {"mon_port", "ssh_password"} <= set(stored["mons"][0])
    legacy = {"uuid": "c" * 32, "name": "bs-legacy", "kind": "bs", "zone": "snake", "fsid": stored["fsid"],
              "pools": stored["pools"], "createdAt": 1.0, "mons": [{
                  "host": "127.0.0.1", "monPort": ceph.mons["a"].v1_port, "sshPort": 22, "sshUsername": "root",
                  "sshPassword": stored["mons"][0]["ssh_password"]}]}
    store = Store(etcd.endpoint)
    await store.connect()
    try:
        await store.put(keys.ceph_storage("bs", legacy["uuid"]), legacy)
    finally:
        await store.close()
    shown = await api.get(f"/v1/ceph-backup-storage/{legacy['uuid']}")
    assert (shown["created_at"], shown["mons"][0]["mon_port"], shown["mons"][0]["status"]) == \
        (1.0, ceph.mons["a"].v1_port, "Connected")
    for uuid in (legacy["uuid"], bs["uuid"]):
        await api.delete(f"/v1/ceph-backup-storage/{uuid}")


@pytest.fixture
async def other_cluster(cephagent):
    """A stand-in cephagent of another cluster on 127.0.0.2 (same agent port as the real one)."""
    fsid = "00000000-1111-2222-3333-444444444444"
    info = {"fsid": fsid, "health": {"status": "HEALTH_OK"}, "capacity": {"total": 1, "available": 1, "used": 0},
            "mons": [{"name": "z", "rank": 0, "addr": "127.0.0.2:6789", "addrs": ["127.0.0.2:6789"],
                      "in_quorum": True}], "pools": []}

    async def cluster_info(_request: web.Request) -> web.Response:
        return web.json_response(info)
    app = web.Application()
    app.router.add_get("/v1/cluster", cluster_info)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.2", cephagent.port).start()
    yield fsid
    await runner.cleanup()


async def test_fsid_mismatch_names_the_odd_mon(api, ceph, other_cluster, etcd):
    before = await etcd_values(etcd, keys.CEPH)
    odd = f"root:{PASSWORD}@127.0.0.2/?monPort=6789"
    body = {"name": "bs-two", "monUrls": [mon_url(ceph), odd]}
    err = await expect_error(api.post("/v1/ceph-backup-storage", body), 409, "fsid_mismatch", "mon_urls")
    assert f"mon root:***@127.0.0.2:22/?monPort=6789 reports fsid {other_cluster}" in err.message
    assert ceph.fsid in err.message
    bs = (await api.get("/v1/ceph-backup-storage/bs1", live="false"))
    err = await expect_error(api.post(f"/v1/ceph-backup-storage/{bs['uuid']}/mons", {"monUrls": [odd]}),
                             409, "fsid_mismatch", "mon_urls")
    # a primary storage of another cluster in the zone of bs1: backup storage works only with its own cluster
    err = await expect_error(api.post("/v1/ceph-primary-storage", {"name": "ps-other", "monUrls": [odd]}),
                             409, "cluster_mismatch", "mon_urls")
    assert "works only with Ceph primary storage in the same Ceph cluster" in err.message and "bs1" in err.message
    assert await etcd_values(etcd, keys.CEPH) == before


async def test_capacity_follows_writes(api, ceph):
    bs = await api.get("/v1/ceph-backup-storage/bs1")
    pool = bs["pools"][0]
    ioctx = ceph.admin.open_ioctx(pool["name"])
    try:
        for i in range(4):
            ioctx.write_full(f"filler-{i}", bytes([i + 1]) * (4 * MiB))
        for _ in range(100):
            now = await api.get("/v1/ceph-backup-storage/bs1")
            if (now["pools"][0]["stored"] >= pool["stored"] + 16 * MiB
                    and now["capacity"]["available"] < bs["capacity"]["available"]):  # the two figures lag apart
                break
            await asyncio.sleep(0.2)
        else:
            pytest.fail(f"pool usage did not grow: {now['pools'][0]}")
        assert now["pools"][0]["objects"] >= pool["objects"] + 4
        assert now["capacity"]["available"] < bs["capacity"]["available"]
    finally:
        for i in range(4):
            ioctx.remove_object(f"filler-{i}")
        ioctx.close()


async def test_credentials_are_never_returned_nor_stored_in_clear(api, etcd, token):
    answers = [await api.get("/v1/ceph-backup-storage"), await api.get("/v1/ceph-primary-storage"),
               await api.get("/v1/ceph-backup-storage/bs1"), await api.get("/v1/openapi.json")]
    text = json.dumps(answers)
    assert "bs1" in text and "root:***@" in text
    assert PASSWORD not in text and "w@rd" not in text
    stored = await etcd_values(etcd)
    assert all(PASSWORD not in json.dumps(v) and "w@rd" not in json.dumps(v) for v in stored.values())
    bs = next(v for k, v in stored.items() if k.startswith(keys.ceph_storages("bs")) and v["name"] == "bs1")
    assert credentials.decrypt(SecretStr(secret_key(token)), bs["mons"][0]["ssh_password"]) == PASSWORD


async def test_delete_primary_storage_withdraws_the_secret(api, ceph, etcd):
    key = keys.desired_all(stream_key_ceph_secret(ceph.fsid))
    ps2 = await api.post("/v1/ceph-primary-storage", {"name": "ps2", "monUrls": [mon_url(ceph)]})
    await api.delete(f"/v1/ceph-primary-storage/{ps2['uuid']}")
    assert key in await etcd_values(etcd, key)  # ps1 still uses the cluster
    await api.delete("/v1/ceph-primary-storage/ps1")
    assert await etcd_values(etcd, key) == {}
    await expect_error(api.get("/v1/ceph-primary-storage/ps1"), 404, "not_found")


async def test_a_ceph_host_is_connected_while_its_cephagent_answers(api, cephagent):
    """cephagents never dial the coordinator: the leader asks their /health; the answer is the heartbeat."""
    host = await api.post("/v1/hosts", {"name": "mon-live", "address": "127.0.0.1", "kind": "ceph"})
    gone = await api.post("/v1/hosts", {"name": "mon-gone", "address": "127.0.0.2", "kind": "ceph"})
    for _ in range(60):
        seen = await api.get(f"/v1/hosts/{host['uuid']}")
        if seen["state"] == "Connected":
            break
        await asyncio.sleep(0.25)
    assert (seen["state"], seen["agent_version"]) == ("Connected", __version__)
    assert (await api.get(f"/v1/hosts/{gone['uuid']}"))["state"] == "Disconnected"
