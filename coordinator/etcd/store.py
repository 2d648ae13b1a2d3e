"""The only module that talks to etcd (through aetcd).

Narrow on purpose: JSON values, atomic multi-key transactions with compare-on-revision, consistent
multi-prefix snapshots, revision-batched watches that resume from revision+1, and leases with a
keepalive task. An aetcd upgrade touches this file only.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aetcd
from aetcd import rpc, utils
from aetcd.exceptions import ClientError, RevisionCompactedError

from agentkit.errors import Unavailable

log = logging.getLogger(__name__)

__all__ = ["Store", "Txn", "Entry", "Change", "Compacted", "StoreUnavailable"]
# Whatever aetcd or grpc raise when etcd cannot answer: aetcd maps RPC errors to ClientError only in its
# own methods; the raw stubs raise grpc's errors, a closed channel grpc's BaseError, a stuck call TimeoutError.
_ETCD_ERRORS = (ClientError, rpc.RpcError, rpc.BaseError, TimeoutError, OSError)


class Compacted(Exception):
    """The requested revision is gone; callers start again from a snapshot."""

    def __init__(self, compact_revision: int):
        super().__init__(f"revision compacted below {compact_revision}")
        self.compact_revision = compact_revision


class StoreUnavailable(Unavailable):
    """etcd could not be reached or did not answer in time: retry later (the API answers 503)."""


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """Every etcd client failure leaves this module as StoreUnavailable (translated at the boundary)."""
    try:
        yield
    except RevisionCompactedError as e:
        raise Compacted(e.compacted_revision) from e
    except _ETCD_ERRORS as e:
        raise StoreUnavailable(f"etcd {what} failed: {e}") from e


@dataclass(frozen=True)
class Entry:
    key: str
    value: object
    mod_revision: int
    create_revision: int
    lease: int = 0


@dataclass(frozen=True)
class Change:
    key: str
    value: object | None  # None: deleted
    revision: int
    prev: object | None = None


@dataclass
class Txn:
    """Compare-and-swap transaction builder: all compares must hold for the ops to apply."""

    compares: list[rpc.Compare] = field(default_factory=list)
    ops: list[rpc.RequestOp] = field(default_factory=list)

    def absent(self, key: str) -> Txn:
        self.compares.append(_compare(key, rpc.Compare.CREATE, rpc.Compare.EQUAL, create_revision=0))
        return self

    def unchanged(self, key: str, mod_revision: int) -> Txn:
        """The key still has `mod_revision` (0 means: still absent)."""
        if mod_revision == 0:
            return self.absent(key)
        self.compares.append(_compare(key, rpc.Compare.MOD, rpc.Compare.EQUAL, mod_revision=mod_revision))
        return self

    def put(self, key: str, value: object, lease: int = 0) -> Txn:
        req = rpc.PutRequest(key=key.encode(), value=_dump(value), lease=lease)
        self.ops.append(rpc.RequestOp(request_put=req))
        return self

    def delete(self, key: str, prefix: bool = False) -> Txn:
        req = rpc.DeleteRangeRequest(key=key.encode())
        if prefix:
            req.range_end = utils.prefix_range_end(key.encode())
        self.ops.append(rpc.RequestOp(request_delete_range=req))
        return self


def _compare(key: str, target: int, result: int, **kw: int) -> rpc.Compare:
    c = rpc.Compare(key=key.encode(), target=target, result=result)
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def _dump(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def _load(raw: bytes) -> object:
    return json.loads(raw) if raw else None


def _entry(kv: Any) -> Entry:
    return Entry(kv.key.decode(), _load(kv.value), kv.mod_revision, kv.create_revision, kv.lease)


class Store:
    """An etcd connection for one coordinator process."""

    def __init__(self, endpoint: str, timeout: float = 5.0):
        host, _, port = endpoint.rpartition(":")
        self._client = aetcd.Client(host=host or "127.0.0.1", port=int(port), timeout=timeout)
        self._connected = False

    async def connect(self) -> None:
        with _translated("connect"):
            await self._client.connect()
        self._connected = True

    async def close(self) -> None:
        if self._connected:
            await self._client.close()
            self._connected = False

    async def _call(self, method: str, request: Any) -> Any:
        with _translated(method):
            return await getattr(self._client.kvstub, method)(request, timeout=self._client._timeout,
                                                              metadata=self._client.metadata)

    async def get(self, key: str) -> Entry | None:
        resp = await self._call("Range", rpc.RangeRequest(key=key.encode()))
        return _entry(resp.kvs[0]) if resp.kvs else None

    async def list(self, prefix: str, keys_only: bool = False) -> tuple[Entries, int]:
        """Entries under `prefix` sorted by key, with the revision of the read."""
        snap, rev = await self.snapshot([prefix], keys_only=keys_only)
        return snap[prefix], rev

    async def snapshot(self, prefixes: builtins.list[str], keys_only: bool = False) -> tuple[dict[str, Entries], int]:
        """Several prefixes read at one revision (a single read-only transaction)."""
        ops = []
        for p in prefixes:
            r = rpc.RangeRequest(key=p.encode(), range_end=utils.prefix_range_end(p.encode()),
                                 keys_only=keys_only, sort_order=rpc.RangeRequest.ASCEND)
            ops.append(rpc.RequestOp(request_range=r))
        resp = await self._call("Txn", rpc.TxnRequest(compare=[], success=ops, failure=[]))
        out = {p: [_entry(kv) for kv in r.response_range.kvs] for p, r in zip(prefixes, resp.responses, strict=True)}
        return out, resp.header.revision

    async def count(self, prefix: str) -> int:
        r = rpc.RangeRequest(key=prefix.encode(), range_end=utils.prefix_range_end(prefix.encode()), count_only=True)
        return int((await self._call("Range", r)).count)

    async def commit(self, txn: Txn) -> int | None:
        """Apply `txn` atomically; the new revision, or None when a compare failed."""
        resp = await self._call("Txn", rpc.TxnRequest(compare=txn.compares, success=txn.ops, failure=[]))
        return int(resp.header.revision) if resp.succeeded else None

    async def put(self, key: str, value: object, lease: int = 0) -> int:
        rev = await self.commit(Txn().put(key, value, lease))
        assert rev is not None  # an unconditional txn cannot fail its compares
        return rev

    async def delete(self, key: str, prefix: bool = False) -> int:
        rev = await self.commit(Txn().delete(key, prefix))
        assert rev is not None
        return rev

    async def revision(self) -> int:
        """The store's current revision."""
        resp = await self._call("Range", rpc.RangeRequest(key=b"\0", count_only=True))
        return int(resp.header.revision)

    async def compact(self, revision: int) -> None:
        """Drop the history before `revision`; Compacted when it is already gone."""
        with _translated("compact"):
            await self._client.compact(revision, physical=True)

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[Changes]:
        """Changes under `prefix` from `start_revision` (inclusive), one list per etcd revision.

        A revision's events arrive in one watch response; they are handed over together so a
        consumer applies whole transactions. Raises `Compacted` when the start is gone.
        """
        await self._check_not_compacted(start_revision - 1)
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def on_event(ev: Any) -> None:
            queue.put_nowait(ev)

        with _translated("watch"):
            cb = await self._client._watcher.add_callback(
                prefix.encode(), on_event, range_end=utils.prefix_range_end(prefix.encode()),
                start_revision=start_revision, prev_kv=True)
        try:
            while True:
                items = [await queue.get()]
                while not queue.empty():
                    items.append(queue.get_nowait())
                for batch in _group_by_revision(items):
                    yield batch
        finally:
            with contextlib.suppress(Exception):
                await self._client._watcher.cancel(cb.watch_id)

    async def _check_not_compacted(self, revision: int) -> None:
        """aetcd only times out on a compacted watch start; a read at that revision tells at once."""
        if revision <= 0:
            return
        req = rpc.RangeRequest(key=b"\0", revision=revision, count_only=True)
        try:
            await self._call("Range", req)
        except StoreUnavailable as e:
            if "compacted" in str(e):
                raise Compacted(revision + 1) from e
            raise

    async def grant(self, ttl: int) -> int:
        with _translated("lease grant"):
            lease = await self._client.lease(ttl)
        return int(lease.id)

    async def refresh(self, lease_id: int) -> bool:
        """Keep a lease alive; False when it has already expired."""
        with _translated("lease refresh"):
            resp = await self._client.refresh_lease(lease_id)
        return getattr(resp, "TTL", 1) > 0

    async def revoke(self, lease_id: int) -> None:
        """Best effort: a lease that cannot be revoked now expires after its TTL anyway."""
        with contextlib.suppress(StoreUnavailable), _translated("lease revoke"):
            await self._client.revoke_lease(lease_id)


Entries = list[Entry]
Changes = list[Change]


def _group_by_revision(items: list[Any]) -> list[Changes]:
    batches: list[Changes] = []
    for ev in items:
        if isinstance(ev, RevisionCompactedError):
            raise Compacted(ev.compacted_revision)
        if isinstance(ev, Exception):
            raise StoreUnavailable(str(ev))
        rev = ev.kv.mod_revision
        value = _load(ev.kv.value) if ev.kind == "PUT" else None
        prev = _load(ev.prev_kv.value) if ev.prev_kv else None
        ch = Change(ev.kv.key.decode(), value, rev, prev)
        if batches and batches[-1][0].revision == rev:
            batches[-1].append(ch)
        else:
            batches.append([ch])
    return batches
