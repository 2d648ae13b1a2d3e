"""Importing an image into Ceph backup storage (coordinator/domain/ceph/images.py) against a stand-in cephagent
on loopback: an import no agent took leaves no record; one an agent may have taken unanswered leaves the image
Failed, and deleting it removes it from the pool too (nothing kept there that no one sees)."""

from __future__ import annotations

import pytest

from coordinator.domain.ceph import images
from coordinator.domain.ceph.errors import AgentFailed, AgentUnauthorized
from coordinator.domain.ceph.records import MonRecord, StorageRecord
from coordinator.etcd import keys

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
