"""What a host may report observed state about: its own objects, never another host's.

A host reports on `vm/<uuid>` only while the VM is placed on it (its desired object is in the host's
view), or after it left when the last report on it was this host's own (the VM was deleted or moved
away: its old host reports it gone); on `volume/<uuid>` by the same rule; on `migration/<volume>` (a
volume's copy) only while the volume is in its view (the migration's target). It reports `lease/<nic>` only
for a NIC of a VM placed on it, `storage/<storage>.<host>` only with its own uuid last, and `health/<host>`
(its agent's) only with its own uuid. Any other
kind is refused until `RULES` gives it an owner rule. Without this, host B could write the observed
state of host A's VM, e.g. point an operator's console at an address of B's choosing.

The rule reads at most two keys per object a batch names, in read transactions within etcd's
128-operation limit. The log tells refusals apart: a report on another host's object is a warning; one on an
object deleted meanwhile (an agent reporting what it saw before the delete reached it, which a busy cloud
does all day; one read more tells) or that says the host has it no more (the old host of a VM that moved,
reporting its copy gone after the new host reported: harmless whoever sends it) only a debug line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from agentkit.model import ObservedEvent, VmSpec, stream_key_vm, stream_key_volume
from coordinator.etcd import keys
from coordinator.etcd.store import Store

log = logging.getLogger(__name__)
READS_PER_TXN = 100
GONE = ("Destroyed", "Deleted")  # what a VM's and a volume's report says once the host has it no more
Ref = tuple[str, str]  # (kind, id) of an observed object


async def _read(store: Store, wanted: Iterable[str]) -> dict[str, object]:
    """The values of the keys in `wanted` that exist (several per read transaction)."""
    keys_ = sorted(set(wanted))
    found: dict[str, object] = {}
    for i in range(0, len(keys_), READS_PER_TXN):
        part = keys_[i:i + READS_PER_TXN]
        snap, _ = await store.snapshot(part)
        found.update({e.key: e.value for k in part for e in snap[k] if e.key == k})
    return found


def _desired_of(ev: ObservedEvent) -> str | None:
    """The stream key of the desired object an event is about (a lease: its VM's), if any."""
    if ev.kind == "vm":
        return stream_key_vm(ev.id)
    if ev.kind in ("volume", "migration"):  # a migration's copy: reported by the target it is in the view of
        return stream_key_volume(ev.id)
    vm = ev.body.get("vm_uuid") if ev.kind == "lease" else None
    return stream_key_vm(vm) if isinstance(vm, str) else None


async def owned(store: Store, host: str, events: list[ObservedEvent]) -> set[Ref]:
    """The objects of `events` that `host` may report on (the others are logged once per batch)."""
    desired = {k: keys.desired_for(host, k) for ev in events if (k := _desired_of(ev)) is not None}
    last = {(ev.kind, ev.id): keys.observed(ev.kind, ev.id) for ev in events if ev.kind in ("vm", "volume")}
    found = await _read(store, [*desired.values(), *last.values()])
    allowed: set[Ref] = set()
    refused: set[Ref] = set()
    for ev in events:
        ref = (ev.kind, ev.id)
        if _owns(host, ev, found.get(desired.get(_desired_of(ev) or "", "")), found.get(last.get(ref, ""))):
            allowed.add(ref)
        else:
            refused.add(ref)
    if refused:
        removals = refused & {(ev.kind, ev.id) for ev in events if ev.body.get("state") in GONE}
        late = removals | await _deleted(store, refused - removals, events)
        for level, refs, what in ((logging.WARNING, refused - late, "that are not its own"),
                                  (logging.DEBUG, late, "it no longer has, deleted or moved meanwhile")):
            if refs:
                log.log(level, "host %s reported on %d objects %s, ignored: %s", host, len(refs), what,
                        ", ".join(f"{k}/{i}" for k, i in sorted(refs)[:5]))
    return allowed


async def _deleted(store: Store, refused: set[Ref], events: list[ObservedEvent]) -> set[Ref]:
    """The refused objects that exist no more (a VM, a lease's VM, a volume)."""
    vm_of = {(ev.kind, ev.id): ev.id if ev.kind == "vm" else ev.body.get("vm_uuid") for ev in events
             if ev.kind in ("vm", "lease")}
    records: dict[Ref, list[str]] = {}
    for ref in refused:
        if isinstance(vm := vm_of.get(ref), str):
            records[ref] = [keys.vm_index(vm)]
        elif ref[0] == "volume":
            records[ref] = [keys.volume(ref[1]), keys.file_volume(ref[1])]
    found = await _read(store, [k for ks in records.values() for k in ks])
    return {ref for ref, ks in records.items() if not any(k in found for k in ks)}


def _placed(host: str, ev: ObservedEvent, desired: object, last: object) -> bool:
    return desired is not None or (isinstance(last, dict) and last.get("host") == host)


def _lease(host: str, ev: ObservedEvent, desired: object, last: object) -> bool:
    return isinstance(desired, dict) and any(nic.uuid == ev.id for nic in VmSpec.model_validate(desired).nics)


def _in_view(host: str, ev: ObservedEvent, desired: object, last: object) -> bool:
    return desired is not None


def _storage(host: str, ev: ObservedEvent, desired: object, last: object) -> bool:
    return ev.id.endswith(f".{host}")


def _itself(host: str, ev: ObservedEvent, desired: object, last: object) -> bool:
    return ev.id == host


# kind -> rule(host, event, the desired object it is about, the last report on it): may the host report it?
RULES: dict[str, Callable[[str, ObservedEvent, object, object], bool]] = {
    "vm": _placed, "volume": _placed, "lease": _lease, "storage": _storage, "migration": _in_view,
    "health": _itself}


def _owns(host: str, ev: ObservedEvent, desired: object, last: object) -> bool:
    rule = RULES.get(ev.kind)
    return rule is not None and rule(host, ev, desired, last)
