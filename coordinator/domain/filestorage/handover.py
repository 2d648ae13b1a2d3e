"""What becomes of a host's file volumes and storage records when the host is deleted (hosts.delete), in the
delete's transaction.

A LocalStorage volume lives on its host's disk: while one is there, or migrating to or from the host (its
only copy is there, or on its way there), the delete is refused (409 `in_use`, naming them). A
SharedMountPoint volume's files are on the shared filesystem, which every host attached to it reaches:
those the host works on go to another attached host whose agent reports the storage Ready (the smallest
uuid, so that replicas agree), as attaching one to a VM on another host moves it; with no such host the
delete is refused. Tombstones of deleted shared volumes whose files the host has not removed yet go along
(with no host to take them they go with the host, and the files stay, as a deleted storage's directory
does); a LocalStorage tombstone goes with the host, as its disk does.

The delete holds only while no volume item came to the host or changed there since it read them
(`Txn.none_changed_since`): a volume made there, or migrating there, meanwhile (on any replica) fails it,
and its retry refuses. Each volume moved is guarded on its record, its new host on that host's record.

What the host's agent reported of each storage (`storage/<storage>.<host>`) and what its LocalStorage volumes
reserved there (`/hs/psreserved/<storage>/<host>`, nothing once they are gone) go with the host (those one
transaction cannot hold beside it just before): a storage's view would still show the host, and a
SharedMountPoint count its reported size. A reservation changes only
with a volume item of the host, which the guard above covers.

The storages that name the host in their `host_uuids` name it no more, in the delete's last transaction, each
guarded on its record (deleted meanwhile, it is not written back), and no storage added since the delete read
them (one naming the host would keep it). A storage that names the host alone refuses the delete: naming no host,
it would be attached to every host, and one attached to none serves nothing (its volumes went before, as they
must); the operator deletes it first.
"""

from __future__ import annotations

from agentkit.errors import InUse
from agentkit.model import StoredVolumeSpec, stream_key_volume
from coordinator.domain.errors import SHOWN, first_few
from coordinator.domain.filestorage import capacity
from coordinator.domain.filestorage.records import FileStorageRecord, FileVolumeRecord, rehost
from coordinator.etcd import keys
from coordinator.etcd.store import Entry, Store, Txn

MOVES = 32  # shared volumes moved per transaction: 3 operations each, within etcd's 128 with the host's own
NAMING = 24  # storages that name the host, rewritten in its delete's last transaction: what the moves (or the
#              records' deletes, as many) and the host's own 8 operations leave of etcd's 128


async def hand_over(store: Store, txn: Txn, host: str, name: str) -> bool:
    """Refuse (InUse) while LocalStorage volumes are on host `host` (named `name`) or migrating to or from it;
    add to `txn` the move of the shared volumes it works on to other hosts, the guards, and the deletes of its
    storage records. False when more is left than one transaction holds: `txn` moves the first MOVES (and
    deletes what records fit beside them), to be committed on their own."""
    prefix = keys.desired_host(host) + "volume/"
    snap, read_at = await store.snapshot([prefix, keys.FILE_STORAGES])
    found = [(e, FileStorageRecord.model_validate(e.value)) for e in snap[keys.FILE_STORAGES]]
    storages = {ps.uuid: ps for _, ps in found}
    naming = [(e, ps) for e, ps in found if host in ps.host_uuids]
    local: list[str] = []
    shared: dict[str, list[tuple[Entry, StoredVolumeSpec]]] = {}
    for e in snap[prefix]:
        spec = StoredVolumeSpec.model_validate(e.value)
        ps = storages.get(spec.storage_uuid)
        if ps is not None and ps.type != "LocalStorage":
            shared.setdefault(ps.uuid, []).append((e, spec))
        elif ps is not None and not spec.deleted:
            local.append(spec.uuid)
    if local:
        raise InUse(f"host {name} has {len(local)} LocalStorage volume(s) on it or migrating to or from it: "
                    f"{await _named(store, local)}; delete or migrate them first")
    _detachable(name, [ps for _, ps in naming])
    moves: list[tuple[Entry, StoredVolumeSpec, Entry]] = []
    for uuid, items in shared.items():
        worker = await _worker(store, storages[uuid], host)
        live = [spec.uuid for _, spec in items if not spec.deleted]
        if worker is None and live:
            raise InUse(f"host {name} works on {len(live)} volume(s) of SharedMountPoint {storages[uuid].name} and "
                        f"no other host attached to it reports it Ready: {await _named(store, live)}; make it usable "
                        "on another host attached to it, or delete them, first")
        moves += [(e, spec, worker) for e, spec in items if worker is not None]
    txn.none_changed_since(prefix, read_at).none_created_since(keys.FILE_STORAGES, read_at)
    await _move(store, txn, host, moves[:MOVES])
    if len(moves) > MOVES:
        return False
    records = await _records(store, host)
    room = 3 * (MOVES - len(moves))  # what the moves leave of a transaction for the records' deletes
    for key in records[:room]:
        txn.delete(key)
    if len(records) > room:
        return False  # the rest go in the next transactions, the last one with the host
    for e, ps in naming:  # the host goes from their host_uuids with it
        kept = [h for h in ps.host_uuids if h != host]
        txn.unchanged(e.key, e.mod_revision).put(e.key, ps.model_copy(update={"host_uuids": kept}).model_dump())
    return True


def _detachable(name: str, naming: list[FileStorageRecord]) -> None:
    """Refuse (InUse) the delete of host `name` while a storage names it alone (naming none, it would be attached to
    every host), or more storages name it than its last transaction rewrites (NAMING)."""
    alone = [f"{s.name} ({s.uuid})" for s in naming if len(s.host_uuids) == 1]
    if alone:
        raise InUse(f"host {name} is the only host {len(alone)} primary storage(s) are attached to: "
                    f"{first_few(alone[:SHOWN], len(alone))}; delete them first (a storage that names no host is "
                    "attached to every host)")
    if len(naming) > NAMING:
        shown = [f"{s.name} ({s.uuid})" for s in naming[:SHOWN]]
        raise InUse(f"host {name} is named by {len(naming)} primary storages, more than its delete detaches at once "
                    f"({NAMING}): {first_few(shown, len(naming))}; delete some of them first")


async def _records(store: Store, host: str) -> list[str]:
    """The keys of the host's reports on storages and of its LocalStorage reservations (every storage's, a
    deleted one's reports too)."""
    reports = keys.observed("storage", "")
    snap, _ = await store.snapshot([reports, keys.RESERVED], keys_only=True)
    return ([e.key for e in snap[reports] if e.key.endswith(f".{host}")]
            + [e.key for e in snap[keys.RESERVED] if e.key.endswith(f"/{host}")])


async def _worker(store: Store, ps: FileStorageRecord, host: str) -> Entry | None:
    """The record of the host that takes over `host`'s volumes of `ps`: attached to it, its agent reporting
    it Ready, the smallest uuid; None when there is none."""
    ready = [h for h, body in (await capacity.reports(store, ps.uuid)).items() if body.get("state") == "Ready"]
    for other in sorted(h for h in ready if h != host and ps.attached(h)):
        entry = await store.get(keys.host(other))
        if entry is not None:  # not a report a deleted host left
            return entry
    return None


async def _move(store: Store, txn: Txn, host: str, moves: list[tuple[Entry, StoredVolumeSpec, Entry]]) -> None:
    """Each volume's item to its new host, in `txn`; a volume deleted or moved since it was read stays out
    (its tombstone fails the guard on the host's items; one moved is not the host's any more)."""
    records = await store.get_many([keys.file_volume(spec.uuid) for _, spec, _ in moves if not spec.deleted])
    found = {e.key[len(keys.FILE_VOLUMES):]: e for e in records if e is not None}
    guarded: set[str] = set()
    for item, spec, worker in moves:
        new = worker.key[len(keys.HOSTS):]
        if new not in guarded:
            txn.unchanged(worker.key, worker.mod_revision)
            guarded.add(new)
        if spec.deleted:
            txn.delete(item.key).put(keys.desired_for(new, stream_key_volume(spec.uuid)), item.value)
        elif (entry := found.get(spec.uuid)) is not None:
            rec = FileVolumeRecord.model_validate(entry.value)
            if rec.host_uuid == host:
                rehost(txn, rec, entry, new)


async def _named(store: Store, uuids: list[str]) -> str:
    """The first few of volumes `uuids`, by name and uuid (and where they migrate), and how many more."""
    shown = []
    for uuid, entry in zip(uuids, await store.get_many([keys.file_volume(u) for u in uuids[:SHOWN]]), strict=False):
        rec = FileVolumeRecord.model_validate(entry.value) if entry is not None else None
        moving = f", migrating from host {rec.host_uuid} to {rec.migration.target}" if rec and rec.migration else ""
        shown.append(f"{rec.name} ({uuid}{moving})" if rec else uuid)
    return first_few(shown, len(uuids))
