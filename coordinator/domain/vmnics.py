"""A VM's NICs after its creation: attach one on an L3, detach one (live when the VM runs).

Whatever a NIC holds is claimed or released in the transaction that writes the VM's new spec: its
address (ipam), its MAC on the L2 (macs), its DNS record, and on release its last lease and its EIP.
The host follows the spec: it plugs or unplugs the tap live and its flat services serve or forget the
NIC (DHCP reservation, DNS answers, anti-spoofing chain, metadata), since they derive from the NICs of
its VMs. `claim` and `release` are also what VM creation and destruction use (coordinator/domain/vms.py).
"""

from __future__ import annotations

import uuid as uuidlib

from agentkit.errors import Invalid, NotFound, TooLarge
from agentkit.model import L3Spec, NicSpec, Service, VmSpec, stream_key_dns, stream_key_l3
from coordinator.domain import ipam, macs, networks, vmrecords
from coordinator.domain.errors import InvalidState, IpInUse
from coordinator.etcd import keys
from coordinator.etcd.store import Store, Txn
from coordinator.etcd.waiting import wait_observed

MAX_NICS = 16


def claim(txn: Txn, vm_uuid: str, name: str, l3: L3Spec, nic: NicSpec) -> None:
    """The NIC's address and MAC taken (each fails the transaction if taken meanwhile), its DNS record
    written where the L3 answers names."""
    ipam.claim(txn, l3.uuid, nic.ip, {"vm": vm_uuid, "nic": nic.uuid})
    macs.claim(txn, l3.l2_uuid, nic.mac, {"vm": vm_uuid, "nic": nic.uuid})
    if Service.DNS in l3.services or Service.DHCP in l3.services:
        txn.put(keys.desired_all(stream_key_dns(l3.uuid, nic.uuid)), {"l3_uuid": l3.uuid, "name": name, "ip": nic.ip})


async def release(store: Store, txn: Txn, nic: NicSpec) -> None:
    """Everything the NIC holds given back in `txn`: address, MAC, DNS record, last lease, EIP binding."""
    ipam.release(txn, nic.l3_uuid, nic.ip)
    l3 = await store.get(keys.desired_all(stream_key_l3(nic.l3_uuid)))
    if l3 is not None and isinstance(l3.value, dict):
        await macs.release(store, txn, str(l3.value.get("l2_uuid")), nic.mac, nic.uuid)
    txn.delete(keys.desired_all(stream_key_dns(nic.l3_uuid, nic.uuid))).delete(keys.observed("lease", nic.uuid))
    if nic.eip:
        eip = await store.get(keys.eip(nic.eip.uuid))
        if eip and isinstance(eip.value, dict):
            txn.put(keys.eip(nic.eip.uuid), {**eip.value, "vm_uuid": None, "nic_uuid": None})


async def _l3(store: Store, l3_uuid: str) -> tuple[L3Spec, int]:
    entry = await store.get(keys.desired_all(stream_key_l3(l3_uuid)))
    if entry is None:
        raise Invalid(f"L3 network {l3_uuid} does not exist", field="l3_uuid")
    return L3Spec.model_validate(entry.value), entry.mod_revision


async def attach(store: Store, uuid: str, l3_uuid: str, ip: str | None = None, mac: str | None = None
                 ) -> tuple[str, VmSpec]:
    """A new NIC on `l3_uuid` (at `ip`, with `mac` when given, else the next free address and a random
    MAC), the VM's default one if it had none."""
    async def mutate(spec: VmSpec, txn: Txn) -> None:
        l3, l3_rev = await _l3(store, l3_uuid)
        if ip is not None:
            ipam.check_fixed(l3, ip, "ip")
        if any(n.l3_uuid == l3.uuid for n in spec.nics):
            raise InvalidState(f"VM {spec.name} already has a NIC on L3 network {l3.name}", field="l3_uuid")
        if len(spec.nics) >= MAX_NICS:
            raise TooLarge(f"VM {spec.name} has {MAX_NICS} NICs, the most a VM has", field="l3_uuid")
        taken = await ipam.taken(store, l3.uuid)
        if ip is not None and ip in taken:
            raise IpInUse(f"{ip} is already in use", field="ip")
        used = {n.device_index for n in spec.nics}
        nic = NicSpec(uuid=uuidlib.uuid4().hex, l3_uuid=l3.uuid, ip=ip or ipam.next_free(l3, None, taken)[0],
                      mac=await macs.pick(store, l3.l2_uuid, mac, True, field="mac"), default=not spec.nics,
                      device_index=next(i for i in range(MAX_NICS) if i not in used))
        txn.unchanged(keys.desired_all(stream_key_l3(l3.uuid)), l3_rev)
        claim(txn, spec.uuid, spec.name, l3, nic)
        spec.nics.append(nic)
    return await vmrecords.update(store, uuid, mutate)


async def detach(store: Store, uuid: str, ref: str) -> tuple[str, VmSpec]:
    """Remove a NIC (by its uuid, or the uuid of its L3: a VM has one NIC per L3) and release what it
    holds; the default moves to the first NIC left."""
    async def mutate(spec: VmSpec, txn: Txn) -> None:
        nic = next((n for n in spec.nics if ref in (n.uuid, n.l3_uuid)), None)
        if nic is None:
            raise NotFound(f"VM {spec.name} has no NIC {await _nic_title(store, ref)}")
        spec.nics.remove(nic)
        if nic.default and spec.nics:
            spec.nics[0].default = True
        await release(store, txn, nic)
    return await vmrecords.update(store, uuid, mutate)


async def _nic_title(store: Store, ref: str) -> str:
    """How a NIC a VM does not have is named: `on L3 network priv` where `ref` is an L3's uuid (the CLI
    sends the L3 a user named), else `ref` as given."""
    try:
        return f"on L3 network {(await networks.load_l3(store, ref))[0].name}"
    except NotFound:
        return ref


async def wait_lease(store: Store, nic_uuid: str, timeout: float) -> bool:
    """True once the NIC's host reports its address bound by DHCP (False after `timeout` seconds)."""
    return await wait_observed(store, keys.observed("lease", nic_uuid),
                               lambda v: isinstance(v, dict) and v.get("state") == "bound", timeout)
