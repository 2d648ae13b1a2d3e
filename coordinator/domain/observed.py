"""Observed state from the agents: ordered, sequence-numbered events, checked and stored once.

Each event's body is checked against its kind's model (agentkit.model.OBSERVED_KINDS) before anything
is stored: what is stored is read by every API call that shows a VM, so a body that could not be read
back is refused here, where it is written, with a 400 naming it.
Events are stored in order, `TXN_EVENTS` at a time: each part in one transaction with the host's
high-water sequence (`/hs/oseq/<host>`), so a re-sent batch is acknowledged but stored once, and no
transaction passes etcd's default limit of 128 operations (`--max-txn-ops`) however large the batch
(agents send 100 events at a time; an older agent sent 500, and a host back from an outage has many).
Of several events about one object in a part only the newest is kept. A VM the agent reports as
drifted under the `adopt` policy gets its observed state as its new desired state (vmrecords.adopt), one
whose ISO install switched its boot order gets that order (vmrecords.installed); a volume it reports
deleted leaves its stream (filestorage.volumes.forget), a volume's copy it reports verified completes the
volume's migration (filestorage.migration.complete), and the steps of a live migration it reports
(`prepared`, `migrated`, `arrived`, `kept`) let the source start, move the VM once `migrated` and `arrived` are
in, or end a move called off (livemigration.note; those reports are not stored);
a host's health is logged as it changes (a warning naming what fails, info once it is healthy again).
These follow-ups run again when a batch is sent again (its answer was lost: the request may have failed
after the events were stored, before their follow-ups ran); each checks what it changes, so a second run
changes nothing.
A volume's report from a host it no longer lives on (the source of a migration removing its copy) is not
stored over its host's. Only events about the host's own objects are stored (owned.py); the others are
acknowledged and dropped, so an agent never resends them. So are those that come after their host's delete,
or after the delete of the storage, volume or NIC they report on (which takes its records: a report stored
after it would stay for good, a lease until its VM goes): each part holds only while the host's record exists
and each such object's is as read with the sequence (a NIC's: its address, still held by it).
"""

from __future__ import annotations

import logging

from pydantic import ValidationError

from agentkit.errors import Invalid
from agentkit.model import OBSERVED_KINDS, ObservedBatch, ObservedEvent
from coordinator.domain import livemigration, vmrecords
from coordinator.domain.filestorage import migration, volumes
from coordinator.domain.owned import Ref, owned
from coordinator.etcd import keys
from coordinator.etcd.cas import retry_cas
from coordinator.etcd.store import Entry, Store, Txn

log = logging.getLogger(__name__)
STEPS = ("prepared", "migrated", "arrived", "kept")  # a live migration's steps (VmObserved): followed up, not stored
Latest = dict[tuple[str, str], ObservedEvent]
TXN_EVENTS = 100  # events per transaction: at most this many puts plus the sequence's, within etcd's 128


def check(batch: ObservedBatch) -> None:
    """Invalid, naming the event and field, unless every body is what its kind's model says."""
    for i, ev in enumerate(batch.events):
        model = OBSERVED_KINDS.get(ev.kind)
        if model is None:
            raise Invalid(f"events.{i}.kind: unknown kind {ev.kind!r} (known: {', '.join(OBSERVED_KINDS)})",
                          field=f"events.{i}.kind")
        try:
            model.model_validate(ev.body)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(p) for p in (f"events.{i}.body", *err["loc"]))
            raise Invalid(f"{loc}: {err['msg']}", field=loc) from None


async def ingest(store: Store, host: str, batch: ObservedBatch) -> int:
    """Store the events not stored yet, in order; the highest sequence number stored for `host`."""
    check(batch)
    events = sorted(batch.events, key=lambda e: e.seq)
    allowed = await owned(store, host, events)
    acked = 0
    for part in [events[i:i + TXN_EVENTS] for i in range(0, len(events), TXN_EVENTS)] or [[]]:
        acked = await _store_part(store, host, part, allowed)
    return acked


async def _store_part(store: Store, host: str, events: list[ObservedEvent], allowed: set[Ref]) -> int:
    """Store `events` (in order, at most TXN_EVENTS) not stored yet, of them only those about `allowed`
    objects (the newest of each), then run the follow-ups of each, in order; the host's sequence afterwards.

    The follow-ups run for the events stored before too: a part is sent again only when its answer did
    not arrive, and the request that stored it may have failed (or its replica died) after the sequence
    commit, before or during them. Each follow-up is idempotent (it checks what it changes)."""
    seq_key = keys.observed_seq(host)
    latest: Latest = {(ev.kind, ev.id): ev for ev in events if (ev.kind, ev.id) in allowed}
    records = {ref: key for ref, ev in latest.items() if (key := _record_of(ev)) is not None}

    async def attempt(_: int) -> int | None:
        entry, host_entry, *found = await store.get_many([seq_key, keys.host(host), *records.values()])
        if host_entry is None:  # deleted since the agent's request was let in: nothing of it is stored
            log.debug("host %s was deleted: its %d observed events are dropped", host, len(events))
            return events[-1].seq if events else 0
        objects = {ref: e for ref, e in zip(records, found, strict=True) if _of(ref, e)}  # the others: deleted
        last = entry.value if entry and isinstance(entry.value, int) else 0
        fresh = [e for e in events if e.seq > last]
        if not fresh:
            return last
        txn = Txn().unchanged(seq_key, entry.mod_revision if entry else 0).exists(host_entry.key)
        for (kind, ident), ev in latest.items():
            if ev.seq <= last:  # stored already
                continue
            obj = objects.get((kind, ident))
            if (kind, ident) in records and obj is None:  # a report that came after its object's delete
                log.debug("host %s reported on %s/%s, deleted meanwhile: not stored", host, kind, ident)
                continue
            if kind == "volume" and ev.body.get("state") == "Deleted" and _moved_away(host, obj):
                continue
            if obj is not None:
                txn.unchanged(obj.key, obj.mod_revision)
            if kind == "vm" and any(ev.body.get(step) for step in STEPS):  # a live migration's steps:
                continue  # the target reports the VM once it is its own
            txn.put(keys.observed(kind, ident), {**ev.body, "host": host, "at": ev.at, "seq": ev.seq})
        txn.put(seq_key, fresh[-1].seq)
        return fresh[-1].seq if await store.commit(txn) is not None else None
    acked = await retry_cas(attempt, f"the observed sequence of host {host}")
    for ev in events:  # each event's, not only the newest's of its object: a live migration's step followed
        if (ev.kind, ev.id) in allowed:  # by a state report of the same VM in one part is still a step
            await _follow_up(store, host, ev.kind, ev.id, ev)
    return acked


async def _follow_up(store: Store, host: str, kind: str, ident: str, ev: ObservedEvent) -> None:
    """What an event changes besides its observed record."""
    generation = ev.body.get("generation")
    if kind == "vm" and ev.body.get("prepared"):
        await livemigration.note(store, host, ident, str(ev.body["prepared"]), "prepared")
    elif kind == "vm" and ev.body.get("migrated"):
        await livemigration.note(store, host, ident, str(ev.body["migrated"]), "released")
    elif kind == "vm" and ev.body.get("arrived"):
        await livemigration.note(store, host, ident, str(ev.body["arrived"]), "arrived")
    elif kind == "vm" and ev.body.get("kept"):
        drifted = generation if ev.body.get("drift") and isinstance(generation, int) else None
        await livemigration.note(store, host, ident, str(ev.body["kept"]), "kept", str(ev.body.get("state")), drifted)
    elif kind == "vm" and ev.body.get("drift") and isinstance(generation, int):
        await vmrecords.adopt(store, host, ident, generation, str(ev.body.get("state")))
    elif kind == "vm" and ev.body.get("installed") and isinstance(generation, int):
        await vmrecords.installed(store, host, ident, generation, ev.body.get("boot_order"))
    elif kind == "volume" and ev.body.get("state") == "Deleted":
        await volumes.forget(store, host, ident)
    elif kind == "migration" and ev.body.get("state") == "Verified":
        await migration.complete(store, host, ident, str(ev.body.get("id")))
    elif kind == "health":  # sent when it changes: each is news for whoever reads the log (a re-sent one too)
        errors = ev.body.get("errors") or {}
        if errors:
            log.warning("host %s: its agent fails at %s", host, "; ".join(f"{c}: {e}" for c, e in errors.items()))
        else:
            log.info("host %s: its agent is healthy", host)


def _record_of(ev: ObservedEvent) -> str | None:
    """The key of the object a report is about, where its observed record must not outlive it: the object's
    delete takes the record (storages.delete, volumes.release, vmnics.release: a NIC's address), so a report
    stored after it would stay (a lease, until its VM is deleted)."""
    if ev.kind == "storage":
        return keys.file_storage(ev.id.rpartition(".")[0])
    if ev.kind in ("volume", "migration"):
        return keys.file_volume(ev.id)
    if ev.kind == "lease":
        return keys.ipam(str(ev.body.get("l3_uuid")), str(ev.body.get("ip")))
    return None


def _of(ref: Ref, entry: Entry | None) -> bool:
    """Is `entry` the record of the object `ref` (a lease's: its NIC's address, held by that NIC)?"""
    if entry is None:
        return False
    return ref[0] != "lease" or (isinstance(entry.value, dict) and entry.value.get("nic") == ref[1])


def _moved_away(host: str, volume: Entry | None) -> bool:
    """Does the volume (its record) live on another host than `host` now?"""
    return volume is not None and isinstance(volume.value, dict) and volume.value.get("host_uuid") != host
