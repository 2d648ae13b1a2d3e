"""Importing an image into Ceph backup storage (coordinator/domain/ceph/images.py) against a stand-in cephagent
on loopback: an import no agent took leaves no record; one an agent may have taken unanswered leaves the image
Failed, and deleting it removes it from the pool too (nothing kept there that no one sees); an image of a volume
made as another replica deletes its backup storage leaves neither a record nor a clone."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from coordinator.domain.ceph import images
from coordinator.domain.ceph.errors import AgentFailed, AgentUnauthorized
from coordinator.domain.ceph.records import MonRecord, StorageRecord, VolumeRecord, load_volume
from coordinator.domain.errors import MissingReference
from coordinator.etcd import keys
from coordinator.etcd.store import Txn

from ..memstore import MemoryStore
from .standin import FSID, settings

BS = StorageRecord(uuid="b1", name="bs1", kind="bs", zone="default", fsid=FSID, pools={"image": "imgs"},
                   mons=[MonRecord(host="127.0.0.1", mon_port=6789, ssh_port=22, ssh_username="root",
                                   ssh_password="x")], created_at=0)
URL = "http://198.18.0.9/a.qcow2?token=secret"


async def with_storage() -> MemoryStore:
    store = MemoryStore()
    await store.put(keys.ceph_storage("bs", BS.uuid), BS.model_dump())
    return store


async def image_records(store: MemoryStore) -> list[dict]:
    return [e.value for e in (await store.list(keys.IMAGES))[0]]


@pytest.mark.parametrize("answer, code, says", [
    ("hang up", "agent_unreachable", "no cephagent of Ceph backup storage bs1 answered: cephagent at "),
    ((500, "internal"), "internal", "internal at 127.0.0.1"),
], ids=["no answer", "its bug"])
async def test_an_import_an_agent_may_have_taken_unanswered_stays_failed_until_deleted_from_the_pool_too(
        stand_in, agent_calls, answer, code, says):
    port = await stand_in("127.0.0.1", import_image=answer)
    store = await with_storage()
    with pytest.raises(AgentFailed) as e:
        await images.start_import(store, settings(port), BS.uuid, "img1", URL, "auto")
    [rec] = await image_records(store)
    assert (e.value.status, e.value.code) == (502, code)
    assert e.value.message.startswith(says)
    assert e.value.message.endswith(f"; image img1 ({rec['uuid']}) is kept as Failed: delete it, which removes it "
                                    "from pool imgs too")
    assert rec["status"] == "Failed" and rec["reason"] == f"{code}: {e.value.message}"
    assert agent_calls == [("127.0.0.1", "POST", "/v1/images")]  # the agent has it
    await images.delete(store, settings(port), rec["uuid"])
    assert agent_calls[-1] == ("127.0.0.1", "DELETE", f"/v1/images/imgs/img-{rec['uuid']}")
    assert await image_records(store) == []


@pytest.mark.parametrize("answer, error", [((400, "invalid_url"), AgentFailed), ((401, "unauthorized"),
                                                                                   AgentUnauthorized)],
                         ids=["refused", "token refused"])
async def test_an_import_the_agent_refused_leaves_nothing(stand_in, agent_calls, answer, error):
    port = await stand_in("127.0.0.1", import_image=answer)
    store = await with_storage()
    with pytest.raises(error) as e:
        await images.start_import(store, settings(port), BS.uuid, "img1", URL, "auto")
    assert "kept" not in e.value.message
    assert await image_records(store) == [] and agent_calls == [("127.0.0.1", "POST", "/v1/images")]


@pytest.fixture
async def rbd() -> AsyncIterator[tuple[int, list[tuple[str, str]]]]:
    """A stand-in cephagent on 127.0.0.1 that does what an image of a volume asks (snapshot, clone, deletes); its
    port and the calls it was asked, in order."""
    calls: list[tuple[str, str]] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        calls.append((request.method, request.path))
        if request.method == "DELETE":
            return web.Response(status=204)
        if request.path.endswith("/snapshots"):
            return web.json_response({"name": (await request.json())["name"], "size": 1 << 30, "protected": True})
        return web.json_response({"pool": "p", "name": "n", "size": 1 << 30, "used": 0})

    app = web.Application()
    app.router.add_route("*", "/v1/{path:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield int(runner.addresses[0][1]), calls
    await runner.cleanup()


async def test_an_image_of_a_volume_made_as_its_backup_storage_is_deleted_leaves_no_clone(rbd):
    port, calls = rbd
    store = await with_storage()
    ps = BS.model_copy(update={"uuid": "p1", "name": "ps1", "kind": "ps"})
    vol = VolumeRecord(uuid="v1", name="data", primary_storage_uuid=ps.uuid, type="Data", pool="vols",
                       rbd_image="vol-v1", size=1 << 30, fsid=FSID, status="Ready", created_at=0)
    await store.put(keys.ceph_storage("ps", ps.uuid), ps.model_dump())
    await store.put(keys.volume(vol.uuid), vol.model_dump())
    store.meanwhile.append(Txn().delete(keys.ceph_storage("bs", BS.uuid)))  # on another replica, after it was read
    with pytest.raises(MissingReference, match="^backup storage b1 does not exist$") as e:
        await images.from_volume(store, settings(port), BS, vol.uuid, "img1", None)
    assert (e.value.status, e.value.field) == (400, "backup_storage_uuid")
    assert await image_records(store) == []
    [image] = [p.split("/")[4] for m, p in calls if m == "POST" and p.startswith("/v1/volumes/imgs/")]  # its base
    gone = [("DELETE", f"/v1/images/imgs/{image}"), ("DELETE", f"/v1/volumes/vols/vol-v1/snapshots/{image}")]
    assert [c for c in calls if c[0] == "DELETE"] == gone  # the clone, then the snapshot it was cloned from
    assert (await load_volume(store, vol.uuid))[0].snapshots == []
