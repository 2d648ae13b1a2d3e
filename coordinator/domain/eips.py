"""Elastic IPs: a VIP allocated from a public L3, attached to a VM NIC on an L3 with the `EIP` service.

The binding lives in the VM's desired object (`NicSpec.eip`), so it is applied on the VM's host and
follows the VM when it moves; the EIP record (`/hs/eip/<uuid>`) names the VM and NIC and changes in
the same transaction.
"""

from __future__ import annotations

import uuid as uuidlib

from pydantic import BaseModel

from agentkit.errors import Conflict, InUse, Invalid, NotFound
from agentkit.model import EipBinding, Service, VmSpec, stream_key_l3
from coordinator.domain import ipam, networks, vmrecords
from coordinator.domain.errors import IpInUse, MissingReference, NoService
from coordinator.etcd import keys
from coordinator.etcd.cas import retry_cas
from coordinator.etcd.store import Entry, Store, Txn


class Eip(BaseModel):
    uuid: str
    name: str
    vip: str
    public_l3_uuid: str
    vm_uuid: str | None = None
    nic_uuid: str | None = None


async def load(store: Store, uuid: str) -> tuple[Eip, Entry]:
    entry = await store.get(keys.eip(uuid))
    if entry is None:
        raise NotFound(what="EIP", ident=uuid)
    return Eip.model_validate(entry.value), entry


async def all_eips(store: Store) -> list[Eip]:
    entries, _ = await store.list(keys.EIPS)
    return [Eip.model_validate(e.value) for e in entries]


async def create(store: Store, name: str, public_l3_uuid: str, vip: str | None) -> Eip:
    """Allocate a VIP (`vip`, or any free one) on a public L3 network, guarded on the L3 as read (a delete
    of it meanwhile fails the claim, which then finds it gone)."""
    uuid = uuidlib.uuid4().hex

    async def attempt(_: int) -> Eip | None:
        l3, rev = await networks.load_l3(store, public_l3_uuid, field="public_l3_uuid")
        if not l3.public:
            raise Invalid(f"L3 network {l3.name} is not public", field="public_l3_uuid")
        if vip:
            ipam.check_fixed(l3, vip, "vip")
        eip = Eip(uuid=uuid, name=name, vip=vip or ipam.pick(l3, await ipam.taken(store, l3.uuid)),
                  public_l3_uuid=l3.uuid)
        txn = Txn().unchanged(keys.desired_all(stream_key_l3(l3.uuid)), rev)
        ipam.claim(txn, l3.uuid, eip.vip, {"eip": uuid}).put(keys.eip(uuid), eip.model_dump())
        if await store.commit(txn) is not None:
            return eip
        if vip and await store.get(keys.ipam(l3.uuid, vip)) is not None:
            raise IpInUse(f"{vip} is already in use", field="vip")
        return None
    return await retry_cas(attempt, f"VIP allocation on L3 network {public_l3_uuid}")


async def _check_free(store: Store, eip: Eip, vm_uuid: str) -> None:
    if eip.vm_uuid and eip.vm_uuid != vm_uuid:
        raise InUse(f"EIP {eip.name} is attached to {await vmrecords.title_of(store, eip.vm_uuid)}; detach it first")


async def _bind(store: Store, eip_uuid: str, vm_uuid: str, nic_uuid: str | None, attach: bool) -> Eip:
    """Bind to (or unbind from) a NIC of the VM: the VM's desired object and the EIP record together."""
    if attach:
        await _check_free(store, (await load(store, eip_uuid))[0], vm_uuid)
        try:
            await vmrecords.locate(store, vm_uuid)
        except NotFound as e:
            raise MissingReference(str(e), field="vm_uuid") from None
    result: list[Eip] = []

    async def mutate(spec: VmSpec, txn: Txn) -> None:
        eip, entry = await load(store, eip_uuid)
        nic = None
        if attach:
            await _check_free(store, eip, vm_uuid)
            nic = next((n for n in spec.nics if n.uuid == nic_uuid or (nic_uuid is None and n.default)), None)
            if nic is None:
                raise Invalid(f"VM {spec.name} has no NIC {nic_uuid}", field="nic_uuid")
            if nic.eip is not None and nic.eip.uuid != eip.uuid:  # one EIP per NIC: hosts apply only that one
                held = await store.get(keys.eip(nic.eip.uuid))
                name = held.value.get("name") if held is not None and isinstance(held.value, dict) else None
                which = "the default NIC" if nic.default else f"NIC {nic.ip} ({nic.uuid})"
                raise InUse(f"{which} of VM {spec.name} has EIP {name or nic.eip.uuid} ({nic.eip.vip}); detach it "
                            "first", field="nic_uuid")
            l3, _ = await networks.load_l3(store, nic.l3_uuid)
            if Service.EIP not in l3.services:
                raise NoService(f"L3 network {l3.name} has no EIP service", field="nic_uuid")
        new = eip.model_copy(update={"vm_uuid": vm_uuid if nic else None, "nic_uuid": nic.uuid if nic else None})
        for n in spec.nics:
            if n is nic:
                n.eip = EipBinding(uuid=eip.uuid, vip=eip.vip, public_l3_uuid=eip.public_l3_uuid)
            elif n.eip and n.eip.uuid == eip.uuid:
                n.eip = None
        txn.unchanged(entry.key, entry.mod_revision).put(entry.key, new.model_dump())
        result[:] = [new]
    await vmrecords.update(store, vm_uuid, mutate)
    return result[0]


async def attach(store: Store, eip_uuid: str, vm_uuid: str, nic_uuid: str | None) -> Eip:
    """Attach to a NIC (default: the VM's default NIC); the VM's host applies NAT and announces the VIP."""
    return await _bind(store, eip_uuid, vm_uuid, nic_uuid, True)


async def detach(store: Store, eip_uuid: str) -> Eip:
    """Detach from its VM (the host removes what it applied); a VM that is gone just frees the EIP, unless the
    EIP changed since it was read (attached to another VM on any replica: it is detached from that one)."""
    async def attempt(_: int) -> Eip | None:
        eip, entry = await load(store, eip_uuid)
        if not eip.vm_uuid:
            return eip
        try:
            return await _bind(store, eip.uuid, eip.vm_uuid, None, False)
        except NotFound:
            new = eip.model_copy(update={"vm_uuid": None, "nic_uuid": None})
            txn = Txn().unchanged(entry.key, entry.mod_revision).put(entry.key, new.model_dump())
            return new if await store.commit(txn) is not None else None
    return await retry_cas(attempt, f"EIP {eip_uuid}")


async def delete(store: Store, eip_uuid: str) -> None:
    """Delete an EIP (detached first) and release its VIP; one attached again since its detach (on any replica)
    is refused as changed, as one changed after this read."""
    eip, _ = await load(store, eip_uuid)
    if eip.vm_uuid:
        await detach(store, eip.uuid)
    eip, entry = await load(store, eip.uuid)
    if eip.vm_uuid:
        raise Conflict("EIP changed concurrently, retry")
    txn = Txn().unchanged(entry.key, entry.mod_revision).delete(entry.key)
    if await store.commit(ipam.release(txn, eip.public_l3_uuid, eip.vip)) is None:
        raise Conflict("EIP changed concurrently, retry")
