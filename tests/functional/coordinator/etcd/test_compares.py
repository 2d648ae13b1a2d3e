"""The transaction builder's compares on a prefix, on a real etcd: etcd holds a compare on a range for each
key in it and for an empty range as for one absent key (what host and L3 network deletes rely on)."""

from __future__ import annotations

import pytest

from coordinator.etcd.store import Txn

pytestmark = pytest.mark.real
P = "/hs/compares/"
OUT = "/hs/compares-out"  # beside P, outside its range


async def test_absent_on_a_prefix_holds_while_no_key_is_under_it(store):
    await store.put(OUT, 0)
    assert await store.commit(Txn().absent(P + "a/", prefix=True).put(P + "b", 1)) is not None
    await store.put(P + "a/x", 1)
    assert await store.commit(Txn().absent(P + "a/", prefix=True).put(P + "b", 2)) is None
    await store.delete(P + "a/x")
    assert await store.commit(Txn().absent(P + "a/", prefix=True).put(P + "b", 3)) is not None
    assert (await store.get(P + "b")).value == 3


async def test_none_created_since_fails_on_a_key_created_after_the_read_only(store):
    await store.put(P + "c/old", 1)
    _, read_at = await store.list(P + "c/")
    await store.put(P + "c/old", 2)  # changed, not created
    await store.delete(P + "c/gone")
    assert await store.commit(Txn().none_created_since(P + "c/", read_at).put(OUT, 1)) is not None
    assert await store.commit(Txn().none_created_since(P + "empty/", read_at).put(OUT, 2)) is not None
    await store.put(P + "c/new", 1)
    assert await store.commit(Txn().none_created_since(P + "c/", read_at).put(OUT, 3)) is None
    assert (await store.get(OUT)).value == 2


async def test_none_changed_since_fails_on_a_key_created_or_rewritten_after_the_read_only(store):
    await store.put(P + "m/old", 1)
    _, read_at = await store.list(P + "m/")
    await store.delete(P + "m/gone")
    assert await store.commit(Txn().none_changed_since(P + "m/", read_at).put(OUT, 1)) is not None
    assert await store.commit(Txn().none_changed_since(P + "empty/", read_at).put(OUT, 2)) is not None
    await store.put(P + "m/old", 2)  # rewritten, not created
    assert await store.commit(Txn().none_changed_since(P + "m/", read_at).put(OUT, 3)) is None
    _, read_at = await store.list(P + "m/")
    await store.put(P + "m/new", 1)
    assert await store.commit(Txn().none_changed_since(P + "m/", read_at).put(OUT, 4)) is None
    assert (await store.get(OUT)).value == 2
