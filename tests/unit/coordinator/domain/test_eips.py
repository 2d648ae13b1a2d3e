"""EIPs: allocated on a public L3, attached to one NIC of a VM (on an in-memory store)."""

from __future__ import annotations

import pytest

from agentkit.errors import Conflict, InUse, NotFound
from agentkit.model import EipBinding, Service, stream_key_l3
from coordinator.domain import eips, ipam, vmrecords
from coordinator.etcd import keys
from coordinator.etcd.store import Txn

from .cloud import cloud, network, vm
from .memstore import MemoryStore


async def test_a_nic_holds_one_eip_a_second_is_refused_naming_the_first():
    store = await cloud()
    private = await network(store, services=(Service.EIP,))
    public = await network(store, "pub", "203.0.113.0/24", public=True)
    spec = await vm(store, l3_network_uuids=[private.uuid])
    first, second = [await eips.create(store, name, public.uuid, None) for name in ("first", "second")]
    await eips.attach(store, first.uuid, spec.uuid, None)
    with pytest.raises(InUse) as e:
        await eips.attach(store, second.uuid, spec.uuid, None)
    nic = spec.nics[0]
    assert (e.value.status, e.value.field) == (409, "nic_uuid")
    assert e.value.message == f"the default NIC of VM web has EIP first ({first.vip}); detach it first"
    assert (await vmrecords.load(store, spec.uuid))[1].nics[0].eip.uuid == first.uuid
    assert (await eips.load(store, second.uuid))[0].vm_uuid is None
    assert (await eips.attach(store, first.uuid, spec.uuid, nic.uuid)).nic_uuid == nic.uuid  # again: no change


async def test_an_eip_held_elsewhere_is_refused_naming_the_vm_and_the_nic_by_its_address():
    store = await cloud()
    private = await network(store, services=(Service.EIP,))
    other = await network(store, "other", "198.18.9.0/24", services=(Service.EIP,))
    public = await network(store, "pub", "203.0.113.0/24", public=True)
    web = await vm(store, l3_network_uuids=[private.uuid, other.uuid])
    db = await vm(store, "db", l3_network_uuids=[private.uuid])
    first, second = [await eips.create(store, name, public.uuid, None) for name in ("first", "second")]
    nic = web.nics[1]  # not the default NIC
    await eips.attach(store, first.uuid, web.uuid, nic.uuid)
    with pytest.raises(InUse) as e:
        await eips.attach(store, first.uuid, db.uuid, None)
    assert (e.value.code, e.value.field) == ("in_use", None)
    assert e.value.message == f"EIP first is attached to VM web ({web.uuid}); detach it first"
    with pytest.raises(InUse) as e:
        await eips.attach(store, second.uuid, web.uuid, nic.uuid)
    assert (e.value.code, e.value.field) == ("in_use", "nic_uuid")
    assert e.value.message == f"NIC {nic.ip} ({nic.uuid}) of VM web has EIP first ({first.vip}); detach it first"
    await store.put(keys.eip(second.uuid), second.model_copy(update={"vm_uuid": "v-gone"}).model_dump())
    with pytest.raises(InUse, match="^EIP second is attached to VM v-gone; detach it first$"):
        await eips.attach(store, second.uuid, db.uuid, None)


async def test_what_a_request_body_names_must_exist_a_400_naming_the_field():
    store = await cloud()
    public = await network(store, "pub", "203.0.113.0/24", public=True)
    eip = await eips.create(store, "e", public.uuid, None)
    for call, field in ((lambda: eips.create(store, "f", "no-such-l3", None), "public_l3_uuid"),
                        (lambda: eips.attach(store, eip.uuid, "no-such-vm", None), "vm_uuid")):
        with pytest.raises(NotFound) as e:
            await call()
        assert (e.value.status, e.value.code, e.value.field) == (400, "not_found", field)
    with pytest.raises(NotFound) as e:  # the EIP in the path
        await eips.attach(store, "no-such-eip", "no-such-vm", None)
    assert (e.value.status, e.value.field) == (404, None)


async def test_an_eip_allocated_while_its_l3_is_deleted_is_refused_and_claims_nothing():
    store = await cloud()
    public = await network(store, "pub", "203.0.113.0/24", public=True)
    store.meanwhile.append(Txn().delete(keys.desired_all(stream_key_l3(public.uuid))))  # after it was read
    with pytest.raises(NotFound) as e:
        await eips.create(store, "late", public.uuid, None)
    assert (e.value.status, e.value.field) == (400, "public_l3_uuid")
    assert await ipam.taken(store, public.uuid) == set() and await eips.all_eips(store) == []


async def test_an_eip_of_a_vm_gone_attached_elsewhere_meanwhile_is_detached_from_there_record_and_nic_alike():
    store = await cloud()
    private = await network(store, services=(Service.EIP,))
    public = await network(store, "pub", "203.0.113.0/24", public=True)
    db = await vm(store, "db", l3_network_uuids=[private.uuid])
    eip = (await eips.create(store, "e", public.uuid, None)).model_copy(update={"vm_uuid": "v-gone"})
    await store.put(keys.eip(eip.uuid), eip.model_dump())
    _, spec, entry = await vmrecords.load(store, db.uuid)  # another replica frees it and attaches it to db
    spec.nics[0].eip = EipBinding(uuid=eip.uuid, vip=eip.vip, public_l3_uuid=public.uuid)
    store.meanwhile.append(Txn().put(entry.key, spec.model_dump(mode="json")).put(
        keys.eip(eip.uuid), eip.model_copy(update={"vm_uuid": db.uuid, "nic_uuid": spec.nics[0].uuid}).model_dump()))
    assert (await eips.detach(store, eip.uuid)).vm_uuid is None  # after it found v-gone gone
    assert (await eips.load(store, eip.uuid))[0].vm_uuid is None
    assert (await vmrecords.load(store, db.uuid))[1].nics[0].eip is None


async def test_an_eip_of_a_vm_gone_deleted_meanwhile_stays_deleted():
    store = await cloud()
    public = await network(store, "pub", "203.0.113.0/24", public=True)
    eip = (await eips.create(store, "e", public.uuid, None)).model_copy(update={"vm_uuid": "v-gone"})
    await store.put(keys.eip(eip.uuid), eip.model_dump())
    store.meanwhile.append(ipam.release(Txn().delete(keys.eip(eip.uuid)), public.uuid, eip.vip))
    with pytest.raises(NotFound):
        await eips.detach(store, eip.uuid)  # after it found v-gone gone
    assert await eips.all_eips(store) == []


async def test_an_eip_attached_again_between_its_detach_and_its_delete_is_kept_on_its_nic(monkeypatch):
    store = await cloud()
    private = await network(store, services=(Service.EIP,))
    public = await network(store, "pub", "203.0.113.0/24", public=True)
    web, db = [await vm(store, name, l3_network_uuids=[private.uuid]) for name in ("web", "db")]
    eip = await eips.create(store, "e", public.uuid, None)
    await eips.attach(store, eip.uuid, web.uuid, None)
    detach = eips.detach

    async def detached_then_attached_elsewhere(store_: MemoryStore, eip_uuid: str) -> eips.Eip:
        done = await detach(store_, eip_uuid)
        await eips.attach(store, eip_uuid, db.uuid, None)  # on another replica, before the delete reads again
        return done
    monkeypatch.setattr(eips, "detach", detached_then_attached_elsewhere)
    with pytest.raises(Conflict):
        await eips.delete(store, eip.uuid)
    assert (await eips.load(store, eip.uuid))[0].vm_uuid == db.uuid
    assert (await vmrecords.load(store, db.uuid))[1].nics[0].eip.vip == eip.vip
    assert await ipam.taken(store, public.uuid) == {eip.vip}
