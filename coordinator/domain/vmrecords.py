"""VM desired state in etcd: where a VM lives (`/hs/vm/<uuid>` → host) and its desired object in that
host's view, changed by compare-and-swap so that concurrent writers (API calls on any replica, tag and
EIP updates, drift adoption) never lose each other's changes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from agentkit.errors import Conflict, NotFound
from agentkit.model import BootDevice, VmSpec, stream_key_vm
from coordinator.etcd import keys
from coordinator.etcd.cas import retry_cas
from coordinator.etcd.store import Entry, Store, Txn

Mutation = Callable[[VmSpec, Txn], Awaitable[None]]
LOAD_TRIES = 3  # moves of one VM in the moment between two reads: more is not a reader's to chase


def host_of(index: object) -> str:
    """The host of a VM index record (`{"host": <uuid>}`)."""
    host = index.get("host") if isinstance(index, dict) else None
    if not isinstance(host, str):
        raise ValueError(f"not a VM index record: {index!r}")
    return host


async def locate(store: Store, uuid: str) -> str:
    """The host a VM is placed on."""
    entry = await store.get(keys.vm_index(uuid))
    if entry is None:
        raise NotFound(what="VM", ident=uuid)
    return host_of(entry.value)


def title(spec: VmSpec) -> str:
    """How messages name a VM they refer to: `VM web-1 (<uuid>)` (two VMs may share a name)."""
    return f"VM {spec.name} ({spec.uuid})"


async def title_of(store: Store, uuid: str) -> str:
    """The `title` of a VM a record refers to, read for an error message (so never on a path that
    succeeds); `VM <uuid>` when it is gone or moving meanwhile."""
    try:
        return title((await load(store, uuid))[1])
    except (NotFound, Conflict):
        return f"VM {uuid}"


async def load(store: Store, uuid: str) -> tuple[str, VmSpec, Entry]:
    """The VM's host, desired object and its entry (to guard a write on it).

    Two reads, the index first: a migration or a delete committed between them is seen by reading the
    index again (NotFound once the VM is gone), so that no reader is refused because of a writer."""
    host = await locate(store, uuid)
    for _ in range(LOAD_TRIES):
        entry = await store.get(keys.desired_for(host, stream_key_vm(uuid)))
        if entry is not None:
            return host, VmSpec.model_validate(entry.value), entry
        if (now := await locate(store, uuid)) == host:
            break
        host = now
    raise Conflict(f"VM {uuid} is being changed, retry")


async def update(store: Store, uuid: str, mutate: Mutation, new_host: str | None = None) -> tuple[str, VmSpec]:
    """Apply `mutate` to the VM's desired object atomically, as a new generation.

    `mutate` may read what it depends on and add compares and ops to the transaction (tags, IPs, the
    EIP record) so that they commit together; on a concurrent change all of it is redone. With
    `new_host` the desired object moves to that host's view in the same transaction.
    """
    async def attempt(_: int) -> tuple[str, VmSpec] | None:
        host, spec, entry = await load(store, uuid)
        txn = Txn().unchanged(entry.key, entry.mod_revision)
        await mutate(spec, txn)
        spec.generation += 1
        spec = VmSpec.model_validate(spec.model_dump())
        target = new_host or host
        if target != host:
            txn.delete(entry.key).put(keys.vm_index(uuid), {"host": target})
        txn.put(keys.desired_for(target, stream_key_vm(uuid)), spec.model_dump(mode="json"))
        return (target, spec) if await store.commit(txn) is not None else None
    return await retry_cas(attempt, f"VM {uuid}")


async def _report_back(store: Store, host: str, uuid: str, generation: int, update: dict[str, object]) -> bool:
    """Write what a host reported (`update`) as the VM's next generation: only while the VM is still on
    `host` at the generation the host acted on; any change made since (an API action, a migration) is a
    newer intent and wins."""
    try:
        vm_host, spec, entry = await load(store, uuid)
    except (NotFound, Conflict):
        return False
    if vm_host != host or spec.generation != generation or all(getattr(spec, k) == v for k, v in update.items()):
        return False
    spec = spec.model_copy(update={**update, "generation": generation + 1})
    txn = Txn().unchanged(entry.key, entry.mod_revision).put(entry.key, spec.model_dump(mode="json"))
    return await store.commit(txn) is not None


async def installed(store: Store, host: str, uuid: str, generation: int, order: object) -> bool:
    """An ISO install rebooted and its host switched the VM to HardDisk first: that order becomes the desired
    one, so the API shows it and a later SetVmBootOrder is a change the host sees."""
    try:
        boot = [BootDevice(d) for d in order] if isinstance(order, list) else []
    except ValueError:
        return False
    return bool(boot) and await _report_back(store, host, uuid, generation, {"boot_order": boot})


async def adopt(store: Store, host: str, uuid: str, generation: int, observed: str) -> bool:
    """Drift policy `adopt`: the state the user left a VM in becomes its desired state (a new generation)."""
    state = observed if observed in ("Running", "Paused") else "Stopped"
    return await _report_back(store, host, uuid, generation, {"state": state})
