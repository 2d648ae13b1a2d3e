"""A replica's writes checked against the data's schema (the rules are in `schema.py`).

Every transaction gets one more compare: `/hs/schema` is still at the revision this replica last read.
When that compare fails, the guard reads the schema again and either refuses the write (it touches what
a migration this replica does not know changed) or sends it once more. A write under such a prefix is
refused before it is sent.
"""

from __future__ import annotations

from typing import Any

from coordinator.domain.schema import BASE, Schema, SchemaNewer, read
from coordinator.etcd import keys
from coordinator.etcd.store import Store, Txn


def _ranges(txn: Txn) -> list[tuple[str, bool]]:
    """(key, is a prefix range) of every write in `txn`."""
    out = []
    for op in txn.ops:
        kind = str(op.WhichOneof("request"))
        req: Any = getattr(op, kind)
        out.append((bytes(req.key).decode(), kind == "request_delete_range" and bool(req.range_end)))
    return out


class GuardedStore(Store):
    def __init__(self, *args: Any, known: int, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.known = known
        self.schema = Schema(BASE)  # as last read

    async def load_schema(self) -> Schema:
        self.schema = await read(self)
        return self.schema

    def _refuse(self, txn: Txn) -> None:
        refused = self.schema.refused(self.known)
        for key, is_range in _ranges(txn):
            hit = next((p for p in refused if key.startswith(p) or (is_range and p.startswith(key))), None)
            if hit is not None:
                raise SchemaNewer(f"this coordinator replica knows data schema {self.known}, the data is at "
                                  f"{self.schema.version} ({', '.join(self.schema.names)}): it does not write "
                                  f"{hit}…; an upgraded replica does")

    async def commit(self, txn: Txn) -> int | None:
        for _ in range(2):
            self._refuse(txn)
            seen = self.schema.revision
            guarded = Txn(list(txn.compares), list(txn.ops)).unchanged(keys.SCHEMA, seen)
            rev = await super().commit(guarded)
            if rev is not None:
                if any(k == keys.SCHEMA for k, _ in _ranges(txn)):
                    await self.load_schema()
                return rev
            if (await self.load_schema()).revision == seen:
                return None  # one of the caller's own compares failed
        return None

