"""The transaction builder: compares that must all hold, then puts and deletes applied together.

Values are JSON (sorted keys, compact), so that the same value always has the same bytes: the write
path (writes.py) recognises a transaction that committed by the bytes it put.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from aetcd import rpc, utils


@dataclass
class Txn:
    """Compare-and-swap transaction builder: all compares must hold for the ops to apply."""

    compares: list[rpc.Compare] = field(default_factory=list)
    ops: list[rpc.RequestOp] = field(default_factory=list)

    def absent(self, key: str, prefix: bool = False) -> Txn:
        """`key` does not exist; with `prefix`, no key under it does (etcd holds a compare on a range for
        each key in it, and for an empty range as for one absent key)."""
        self.compares.append(_compare(key, rpc.Compare.CREATE, rpc.Compare.EQUAL, prefix, create_revision=0))
        return self

    def exists(self, key: str) -> Txn:
        """`key` exists (the object a write is about was not deleted since it was read)."""
        self.compares.append(_compare(key, rpc.Compare.CREATE, rpc.Compare.GREATER, create_revision=0))
        return self

    def none_created_since(self, prefix: str, revision: int) -> Txn:
        """No key under `prefix` was created after `revision`: what a read at `revision` found there is all
        there is (keys deleted since aside)."""
        self.compares.append(_compare(prefix, rpc.Compare.CREATE, rpc.Compare.LESS, True,
                                      create_revision=revision + 1))
        return self

    def none_changed_since(self, prefix: str, revision: int) -> Txn:
        """No key under `prefix` was written after `revision`, created or rewritten: each key a read at
        `revision` found there is as it was (keys deleted since aside)."""
        self.compares.append(_compare(prefix, rpc.Compare.MOD, rpc.Compare.LESS, True, mod_revision=revision + 1))
        return self

    def unchanged(self, key: str, mod_revision: int) -> Txn:
        """The key still has `mod_revision` (0 means: still absent)."""
        if mod_revision == 0:
            return self.absent(key)
        self.compares.append(_compare(key, rpc.Compare.MOD, rpc.Compare.EQUAL, mod_revision=mod_revision))
        return self

    def put(self, key: str, value: object, lease: int = 0) -> Txn:
        req = rpc.PutRequest(key=key.encode(), value=dump(value), lease=lease)
        self.ops.append(rpc.RequestOp(request_put=req))
        return self

    def delete(self, key: str, prefix: bool = False) -> Txn:
        req = rpc.DeleteRangeRequest(key=key.encode())
        if prefix:
            req.range_end = utils.prefix_range_end(key.encode())
        self.ops.append(rpc.RequestOp(request_delete_range=req))
        return self

    def puts(self) -> list[rpc.PutRequest]:
        return [op.request_put for op in self.ops if op.WhichOneof("request") == "request_put"]

    def deletes(self) -> list[rpc.DeleteRangeRequest]:
        return [op.request_delete_range for op in self.ops if op.WhichOneof("request") == "request_delete_range"]


def _compare(key: str, target: int, result: int, prefix: bool = False, **kw: int) -> rpc.Compare:
    c = rpc.Compare(key=key.encode(), target=target, result=result)
    if prefix:
        c.range_end = utils.prefix_range_end(key.encode())
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def dump(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
