"""The data's schema version in etcd, the migrations that raise it, and the writes an older replica refuses.

`/hs/schema` holds the version the data is at and each migration applied to reach it, with the key
prefixes whose format it changed. Code knows the versions up to `BASE + len(migrations)`. Rules:

- Migrations run on the elected replica only (`coordinator/leader/migrate.py`), one at a time, each
  recorded by a compare-and-swap on `/hs/schema`, so each is applied once; each must also be safe to
  run again (a leader that dies half way leaves it to the next one).
- A migration only adds what older code can read past (new fields, new keys), so older replicas keep
  reading during a rolling upgrade. What it changes, they may no longer write: `SchemaGuard` refuses
  their writes under the prefixes of migrations they do not know (409 `schema_newer`) instead of
  writing records in the old format among the new ones.
- Every write carries a compare on `/hs/schema`'s revision as the replica last read it, so a replica
  learns of a migration at its next write, never after a write it should have refused.
- A replica older than the data does not lead; the newest replica leads (leader/election.py asks
  `may_lead`), so a new replica gets to run its migrations. A replica newer than the data waits for its
  migrations before it serves (coordinator/app.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agentkit.errors import Conflict
from coordinator.etcd import keys
from coordinator.etcd.store import Store, Txn

log = logging.getLogger(__name__)
BASE = 1  # the data as written before any migration existed (and a new cluster)


class SchemaNewer(Conflict):
    code = "schema_newer"


@dataclass(frozen=True)
class Migration:
    version: int  # the schema version the data is at once it ran
    name: str
    prefixes: tuple[str, ...]  # key prefixes whose format it changes: older replicas stop writing there
    apply: Callable[[Store], Awaitable[None]]  # safe to run again


@dataclass(frozen=True)
class Schema:
    version: int
    applied: tuple[dict[str, Any], ...] = ()  # {"version", "name", "prefixes", "at", "replica"} per migration
    revision: int = 0  # /hs/schema's mod revision (0: absent)

    def refused(self, known: int) -> tuple[str, ...]:
        """The prefixes a replica that knows versions up to `known` must not write."""
        return tuple(p for m in self.applied if int(m["version"]) > known for p in m["prefixes"])

    @property
    def names(self) -> list[str]:
        return [str(m["name"]) for m in self.applied]


def known(migrations: Sequence[Migration]) -> int:
    """The newest schema version code with these migrations understands."""
    return BASE + len(migrations)


def check(migrations: Sequence[Migration]) -> None:
    """Migrations are numbered BASE+1, BASE+2, ... in order (a bug otherwise)."""
    for i, m in enumerate(migrations):
        if m.version != BASE + 1 + i:
            raise ValueError(f"migration {m.name} has version {m.version}, expected {BASE + 1 + i}")


async def read(store: Store) -> Schema:
    entry = await store.get(keys.SCHEMA)
    if entry is None or not isinstance(entry.value, dict):
        return Schema(BASE)
    v = entry.value
    return Schema(int(v.get("version", BASE)), tuple(v.get("migrations", ())), entry.mod_revision)


async def migrate(store: Store, migrations: Sequence[Migration], replica: str) -> list[str]:
    """Apply the migrations the data lacks, in order, each recorded once; the names of those applied now."""
    found, done = await read(store), list[str]()
    if found.revision == 0:  # a new cluster (or data from before versions): record where it stands
        await _record(store, found, [], found.version)
        found = await read(store)
    for m in migrations:
        if m.version <= found.version:
            continue
        log.info("schema migration %s (to version %d) starts", m.name, m.version)
        await m.apply(store)
        step = {"version": m.version, "name": m.name, "prefixes": list(m.prefixes), "at": time.time(),
                "replica": replica}
        if not await _record(store, found, [*found.applied, step], m.version):
            log.warning("schema changed while %s ran; the elected replica looks again", m.name)
            return done
        log.info("schema migration %s applied: data at version %d", m.name, m.version)
        done.append(m.name)
        found = await read(store)
    return done


async def _record(store: Store, found: Schema, applied: list[dict[str, Any]], version: int) -> bool:
    txn = Txn().unchanged(keys.SCHEMA, found.revision).put(keys.SCHEMA, {"version": version, "migrations": applied})
    return await store.commit(txn) is not None


async def may_lead(store: Store, known_version: int) -> bool:
    """Whether a replica that knows `known_version` should lead: the data is not newer than it knows, and no
    running replica knows more (the newest leads, so it runs its migrations)."""
    snap, _ = await store.snapshot([keys.SCHEMA, keys.REPLICAS])
    schema = next((e.value for e in snap[keys.SCHEMA] if e.key == keys.SCHEMA), None)
    if isinstance(schema, dict) and int(schema.get("version", BASE)) > known_version:
        return False
    return all(not isinstance(e.value, dict) or int(e.value.get("schema", BASE)) <= known_version
               for e in snap[keys.REPLICAS])
