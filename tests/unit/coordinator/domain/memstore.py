"""The Store the domain code uses, on a dict: etcd's revisions, and its compares on one key or on a prefix's
range (each key in it must hold; an empty range compares as one absent key), puts and (range) deletes.

`meanwhile` holds transactions of another writer: each lands just before the next commit is judged, to
play the race between a read and the commit that depends on it. Leases never expire; revoking one deletes
the keys put under it.
"""

from __future__ import annotations

import builtins
import json
import operator
from typing import Any

from aetcd import rpc

from coordinator.etcd.store import Entry, Store, Txn

_RESULTS = {rpc.Compare.EQUAL: operator.eq, rpc.Compare.NOT_EQUAL: operator.ne, rpc.Compare.LESS: operator.lt,
            rpc.Compare.GREATER: operator.gt}


class MemoryStore(Store):
    def __init__(self, **_: Any) -> None:
        self.rev = 1
        self.kv: dict[str, Entry] = {}
        self.commits = 0
        self.leases = 0
        self.meanwhile: builtins.list[Txn] = []

    async def get(self, key: str) -> Entry | None:
        return self.kv.get(key)

    async def get_many(self, keys: builtins.list[str]) -> builtins.list[Entry | None]:
        return [self.kv.get(k) for k in keys]

    async def snapshot(self, prefixes: builtins.list[str], keys_only: bool = False
                       ) -> tuple[dict[str, builtins.list[Entry]], int]:
        return {p: [e for k, e in sorted(self.kv.items()) if k.startswith(p)] for p in prefixes}, self.rev

    async def count(self, prefix: str) -> int:
        return sum(1 for k in self.kv if k.startswith(prefix))

    def _range(self, key: bytes, range_end: bytes) -> builtins.list[Entry | None]:
        if not range_end:
            return [self.kv.get(key.decode())]
        found: builtins.list[Entry | None] = [e for k, e in sorted(self.kv.items()) if key <= k.encode() < range_end]
        return found or [None]

    def _holds(self, c: rpc.Compare) -> bool:
        create = c.target == rpc.Compare.CREATE
        want = c.create_revision if create else c.mod_revision
        return all(_RESULTS[c.result]((e.create_revision if create else e.mod_revision) if e else 0, want)
                   for e in self._range(c.key, c.range_end))

    def _apply(self, txn: Txn) -> int | None:
        if not all(self._holds(c) for c in txn.compares):
            return None
        self.rev += 1
        for op in txn.ops:
            if op.WhichOneof("request") == "request_put":
                key, old = op.request_put.key.decode(), self.kv.get(op.request_put.key.decode())
                self.kv[key] = Entry(key, json.loads(op.request_put.value), self.rev,
                                     old.create_revision if old else self.rev, op.request_put.lease)
            else:
                d = op.request_delete_range
                for e in self._range(d.key, d.range_end):
                    if e is not None:
                        del self.kv[e.key]
        return self.rev

    async def grant(self, ttl: int) -> int:
        self.leases += 1
        return self.leases

    async def revoke(self, lease_id: int) -> None:
        held = [k for k, e in self.kv.items() if e.lease == lease_id]
        if held:
            self.rev += 1
            for k in held:
                del self.kv[k]

    async def commit(self, txn: Txn) -> int | None:
        self.commits += 1
        while self.meanwhile:
            self._apply(self.meanwhile.pop(0))
        return self._apply(txn)


class Counting(MemoryStore):
    """Refuses a transaction larger than etcd takes (--max-txn-ops 128), as etcd would."""

    async def commit(self, txn: Txn) -> int | None:
        assert len(txn.ops) <= 128 and len(txn.compares) <= 128
        return await super().commit(txn)
