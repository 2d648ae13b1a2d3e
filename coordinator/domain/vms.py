"""VM desired state in etcd: where a VM lives, read-modify-write with compare-and-swap, placement,
and the system tags (`userdata::`, `sshkey::`) rendered into the VM's desired object.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from agentkit.model import VmSpec, stream_key_vm
from coordinator.api.http import ApiError, not_found
from coordinator.etcd import keys
from coordinator.etcd.store import Entry, Store, Txn

RETRIES = 20


async def locate(store: Store, uuid: str) -> str:
    """The host a VM is placed on."""
    entry = await store.get(keys.vm_index(uuid))
    if entry is None:
        raise not_found("VM", uuid)
    return entry.value["host"]


async def load(store: Store, uuid: str) -> tuple[str, VmSpec, Entry]:
    host = await locate(store, uuid)
    entry = await store.get(keys.desired_for(host, stream_key_vm(uuid)))
    if entry is None:
        raise ApiError(409, "conflict", f"VM {uuid} is being changed, retry")
    return host, VmSpec.model_validate(entry.value), entry


async def update(store: Store, uuid: str, mutate: Callable[[VmSpec, Txn], None],
                 new_host: str | None = None) -> tuple[str, VmSpec]:
    """Apply `mutate` to the VM's desired object atomically (retrying on concurrent changes).

    `mutate` may add compares/ops to the transaction (tags, IPs) so that they commit together.
    With `new_host` the desired object moves to that host's view in the same transaction.
    """
    for _ in range(RETRIES):
        host, spec, entry = await load(store, uuid)
        txn = Txn().unchanged(entry.key, entry.mod_revision)
        mutate(spec, txn)
        spec.generation += 1
        spec = VmSpec.model_validate(spec.model_dump())
        target = new_host or host
        if target != host:
            txn.delete(entry.key).put(keys.vm_index(uuid), {"host": target})
        txn.put(keys.desired_for(target, stream_key_vm(uuid)), spec.model_dump(mode="json"))
        if await store.commit(txn) is not None:
            return target, spec
    raise ApiError(409, "conflict", f"VM {uuid} keeps changing concurrently, retry")


async def adopt(store: Store, host: str, uuid: str, generation: int, observed: str) -> bool:
    """Drift policy `adopt`: the state the user left a VM in becomes its desired state (a new generation).

    Only when the VM is still on `host` and its spec is still the generation the agent drifted from:
    any change made since (an API action, a migration) is a newer intent and wins.
    """
    try:
        vm_host, spec, entry = await load(store, uuid)
    except ApiError:
        return False
    state = observed if observed in ("Running", "Paused") else "Stopped"
    if vm_host != host or spec.generation != generation or spec.state == state:
        return False
    spec = spec.model_copy(update={"state": state, "generation": generation + 1})
    txn = Txn().unchanged(entry.key, entry.mod_revision).put(entry.key, spec.model_dump(mode="json"))
    return await store.commit(txn) is not None


async def place(store: Store, requested: str | None, connected: set[str]) -> str:
    """The explicit host if given (it must exist and be a KVM host), else the connected KVM host
    with the fewest VMs."""
    if requested:
        direct = await store.get(keys.host(requested))
        if direct and direct.value["kind"] == "kvm":
            return requested
    hosts, _ = await store.list(keys.HOSTS)
    kvm = {h.value["uuid"]: h.value for h in hosts if h.value["kind"] == "kvm"}
    if requested:
        for h in kvm.values():
            if requested in (h["uuid"], h["name"]):
                return h["uuid"]
        raise ApiError(400, "invalid", f"no KVM host {requested}", "host_uuid")
    candidates = [u for u in kvm if u in connected]
    if not candidates:
        raise ApiError(409, "no_host", "no connected KVM host to place the VM on", "host_uuid")
    counts = {u: await store.count(keys.desired_host(u) + "vm/") for u in candidates}
    return min(candidates, key=lambda u: (counts[u], u))


def connected_hosts(alive: list[Entry], timeout: float) -> set[str]:
    now = time.time()
    return {e.key[len(keys.ALIVE):] for e in alive if now - e.value.get("at", 0) < timeout}


# System tags ------------------------------------------------------------------------------------

TAG_TYPES = ("userdata", "sshkey")


def parse_tag(tag: str, field: str = "tag") -> tuple[str, str]:
    """`userdata::<content>` / `sshkey::<key>` (content minified with literal `\\n`, as in the seeds)."""
    kind, sep, content = tag.partition("::")
    if not sep or not content:
        raise ApiError(400, "invalid", f"a system tag has the form <type>::<content>, got {tag[:40]!r}", field)
    return kind, content


def apply_tags(spec: VmSpec, tags: list[str]) -> None:
    """Render the VM's userdata and ssh keys from its system tags."""
    spec.userdata = None
    spec.ssh_keys = {}
    for i, tag in enumerate(tags):
        kind, content = parse_tag(tag)
        if kind == "userdata" and spec.userdata is None:
            spec.userdata = content.replace("\\n", "\n")
        elif kind == "sshkey":
            key = content.strip()
            parts = key.split()
            name = parts[2] if len(parts) >= 3 else f"key-{i}"
            spec.ssh_keys[name] = key


def tag_key(resource: str, tag_uuid: str) -> str:
    return f"{keys.TAGS}{resource}/{tag_uuid}"


async def tags_of(store: Store, resource: str) -> list[Entry]:
    entries, _ = await store.list(f"{keys.TAGS}{resource}/")
    return sorted(entries, key=lambda e: e.create_revision)
