"""Schema versions, migrations once, and the guard of an older replica's writes, on an in-memory store."""

from __future__ import annotations

import pytest

from coordinator.domain import schema
from coordinator.domain.schemaguard import GuardedStore
from coordinator.etcd import keys
from coordinator.etcd.store import Store, Txn

from .memstore import MemoryStore


class Guarded(GuardedStore, MemoryStore):
    pass


def migration(version: int, runs: list[int]) -> schema.Migration:
    async def apply(store: Store) -> None:
        runs.append(version)
        await store.put(f"/hs/vm/m{version}", {"host": "h"})
    return schema.Migration(version, f"m{version}", ("/hs/vm/",), apply)


async def test_migrations_run_once_in_order_and_are_recorded():
    store, runs = MemoryStore(), []
    ms = [migration(2, runs), migration(3, runs)]
    schema.check(ms)
    assert await schema.migrate(store, ms, "r1") == ["m2", "m3"]
    assert await schema.migrate(store, ms, "r2") == []
    found = await schema.read(store)
    assert (found.version, found.names, runs) == (3, ["m2", "m3"], [2, 3])
    assert found.applied[0]["replica"] == "r1" and found.applied[0]["prefixes"] == ["/hs/vm/"]


async def test_a_new_cluster_records_its_schema():
    store = MemoryStore()
    assert await schema.migrate(store, [], "r1") == []
    assert (await schema.read(store)).version == schema.BASE and (await store.get(keys.SCHEMA)) is not None


def test_migrations_are_numbered_from_the_base():
    with pytest.raises(ValueError, match="expected 2"):
        schema.check([migration(3, [])])


async def test_an_older_replica_refuses_writes_the_migration_changed_and_makes_the_others():
    old = Guarded(known=schema.BASE)
    await old.load_schema()
    await old.put("/hs/vm/a", {"host": "h"})  # before the migration: allowed
    await schema.migrate(old, [migration(2, [])], "new")  # what the newer replica does, on the same data
    with pytest.raises(schema.SchemaNewer, match=r"knows data schema 1, the data is at 2 \(m2\).*/hs/vm/"):
        await old.put("/hs/vm/b", {"host": "h"})  # learnt at this write, from its compare on /hs/schema
    assert "/hs/vm/b" not in old.kv
    with pytest.raises(schema.SchemaNewer):
        await old.commit(Txn().delete("/hs/", prefix=True))  # a range over the changed prefix
    assert await old.put("/hs/l2/x", {"name": "x"}) > 0  # elsewhere it writes as before
    new = Guarded(known=2)
    new.kv, new.rev = old.kv, old.rev
    await new.load_schema()
    assert await new.put("/hs/vm/c", {"host": "h"}) > 0


async def test_a_failed_compare_of_the_callers_own_is_its_answer():
    store = Guarded(known=schema.BASE)
    await store.load_schema()
    await store.put("/hs/x", 1)
    assert await store.commit(Txn().unchanged("/hs/x", 999).put("/hs/x", 2)) is None


async def test_the_newest_replica_leads():
    store = MemoryStore()
    assert await schema.may_lead(store, 1)
    await store.put(keys.replica("new"), {"schema": 2, "version": "0.2.0"})
    assert not await schema.may_lead(store, 1) and await schema.may_lead(store, 2)
    await store.put(keys.SCHEMA, {"version": 3, "migrations": []})
    assert not await schema.may_lead(store, 2)
