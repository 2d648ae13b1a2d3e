"""The only module that talks to etcd: the coordinator's store driver.

Narrow on purpose: JSON values, atomic multi-key transactions with compare-on-revision, consistent
multi-prefix snapshots, revision-batched watches, and leases. It speaks etcd's gRPC API itself (the
stubs aetcd ships) over one channel per member (`cluster.py`), so that it can fail over between members,
bound every request by a deadline, use TLS and re-authenticate; see docs/architecture.md for why.

Which request may be sent again after a failed attempt, and why that is safe:
- reads (get, list, snapshot, count): always, on another member; they are linearizable wherever served.
- `commit`: only after checking whether the unanswered attempt committed after all, and then guarded
  so that it cannot apply twice (`writes.py`).
- lease grant: always (a lease granted by a lost attempt is never used and expires after its TTL);
  refresh and revoke are idempotent; compaction is, and "already compacted" counts as done.
- watches resume on another member from the revision after the last one handed out (`watch.py`).
"""

from __future__ import annotations

import builtins
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
from aetcd import rpc, utils

from coordinator.etcd import keys, timeline, watch, writes
from coordinator.etcd.cluster import Cluster, Member, Metadata
from coordinator.etcd.endpoints import EtcdConfig
from coordinator.etcd.errors import Compacted, StoreUnavailable
from coordinator.etcd.reads import ReadBatch
from coordinator.etcd.txn import Txn

log = logging.getLogger(__name__)

__all__ = ["Store", "Txn", "Entry", "Listing", "Change", "Compacted", "StoreUnavailable", "EtcdConfig"]


@dataclass(frozen=True)
class Entry:
    key: str
    value: object
    mod_revision: int
    create_revision: int
    lease: int = 0


@dataclass(frozen=True)
class Listing:
    entries: list[Entry]
    revision: int
    timeline: str  # coordinator/etcd/timeline.py


@dataclass(frozen=True)
class Change:
    key: str
    value: object | None  # None: deleted
    revision: int
    prev: object | None = None


def _load(raw: bytes) -> object:
    return json.loads(raw) if raw else None


def _entry(kv: Any) -> Entry:
    return Entry(kv.key.decode(), _load(kv.value), kv.mod_revision, kv.create_revision, kv.lease)


class Store:
    """The etcd cluster as one coordinator process sees it."""

    def __init__(self, config: EtcdConfig | str | builtins.list[str]):
        self.config = config if isinstance(config, EtcdConfig) else EtcdConfig.of(config)
        self._cluster = Cluster(self.config)
        self._batch = ReadBatch(self._send_reads)

    @property
    def members(self) -> builtins.list[str]:
        """The members' endpoints, starting with the one requests go to now."""
        ms, first = self._cluster.members, self._cluster.current
        return [str(m.endpoint) for m in ms[first:] + ms[:first]]

    async def connect(self) -> None:
        await self._cluster.connect()

    async def close(self) -> None:
        await self._cluster.close()

    async def _kv(self, what: str, method: str, request: Any) -> Any:
        async def attempt(m: Member, timeout: float, md: Metadata) -> Any:
            return await getattr(m.kv, method)(request, timeout=timeout, metadata=md)
        return await self._cluster.call(what, attempt)

    async def get(self, key: str) -> Entry | None:
        return (await self._get([key]))[0]

    async def get_many(self, keys: builtins.list[str]) -> builtins.list[Entry | None]:
        """Several keys read at one revision in one request (what a two-key read pays once, not twice)."""
        return await self._get(keys)

    async def _get(self, keys: builtins.list[str]) -> builtins.list[Entry | None]:
        """Point reads share their etcd request with the others asked for at the same time (reads.py)."""
        found = await self._batch.read([rpc.RangeRequest(key=k.encode()) for k in keys])
        return [_entry(r.kvs[0]) if r.kvs else None for r in found]

    async def _send_reads(self, ranges: builtins.list[Any]) -> builtins.list[Any]:
        return [r.response_range for r in (await self._reads("get", ranges)).responses]

    async def list(self, prefix: str, keys_only: bool = False) -> tuple[Entries, int]:
        """Entries under `prefix` sorted by key, with the revision of the read."""
        snap, rev = await self.snapshot([prefix], keys_only=keys_only)
        return snap[prefix], rev

    async def snapshot(self, prefixes: builtins.list[str], keys_only: bool = False) -> tuple[dict[str, Entries], int]:
        """Several prefixes read at one revision (a single read-only transaction)."""
        resp = await self._reads("snapshot", [
            rpc.RangeRequest(key=p.encode(), range_end=utils.prefix_range_end(p.encode()), keys_only=keys_only,
                             sort_order=rpc.RangeRequest.ASCEND) for p in prefixes])
        out = {p: [_entry(kv) for kv in r.response_range.kvs] for p, r in zip(prefixes, resp.responses, strict=True)}
        return out, resp.header.revision

    async def _reads(self, what: str, ranges: builtins.list[Any]) -> Any:
        """Range requests answered at one revision: a transaction of reads only."""
        ops = [rpc.RequestOp(request_range=r) for r in ranges]
        return await self._kv(what, "Txn", rpc.TxnRequest(compare=[], success=ops, failure=[]))

    async def listing(self, prefix: str) -> Listing:
        """`prefix`'s entries with the revision and the timeline of the read: where a watch that follows
        the listing starts, and the timeline it is given."""
        snap, rev = await self.snapshot([prefix, timeline.KEY])
        marker = snap[timeline.KEY]
        return Listing(snap[prefix], rev, timeline.of(marker[0].value if marker else None))

    async def count(self, prefix: str) -> int:
        r = rpc.RangeRequest(key=prefix.encode(), range_end=utils.prefix_range_end(prefix.encode()), count_only=True)
        return int((await self._kv("count", "Range", r)).count)

    async def commit(self, txn: Txn) -> int | None:
        """Apply `txn` atomically and once; the new revision, or None when a compare failed."""
        return await writes.commit(self._cluster, txn)

    async def put(self, key: str, value: object, lease: int = 0) -> int:
        rev = await self.commit(Txn().put(key, value, lease))
        assert rev is not None  # an unconditional txn cannot fail its compares
        return rev

    async def delete(self, key: str, prefix: bool = False) -> int:
        rev = await self.commit(Txn().delete(key, prefix))
        assert rev is not None
        return rev

    async def revision(self) -> int:
        """The store's current revision (a read of one key of ours: with etcd auth, a user may read only
        what its role grants, HostStack's prefix)."""
        resp = await self._kv("revision", "Range", rpc.RangeRequest(key=keys.ROOT.encode(), count_only=True))
        return int(resp.header.revision)

    async def compact(self, revision: int) -> None:
        """Drop history before `revision` (physically); compacting again is no error."""
        with contextlib.suppress(Compacted):
            await self._kv("compact", "Compact", rpc.CompactionRequest(revision=revision, physical=True))

    def watch(self, prefix: str, start_revision: int, on: str | None = None) -> AsyncIterator[Changes]:
        """Changes under `prefix` from `start_revision` (inclusive), one list per etcd revision.

        A revision's events arrive in one watch response; they are handed over together so a
        consumer applies whole transactions. Raises `Compacted` when the start is (or, after a
        failover, the resume point has been) compacted away, `Rewound` when etcd's data was restored
        under the watch; a consumer that resumes from the revision of a listing passes the listing's
        timeline as `on` (coordinator/etcd/timeline.py), or a restore whose writes passed that revision
        before the watch reconnected would go unnoticed.
        """
        return watch.watch(self._cluster, prefix, start_revision, _group_by_revision, on)

    async def grant(self, ttl: int) -> int:
        async def attempt(m: Member, timeout: float, md: Metadata) -> Any:
            return await m.lease.LeaseGrant(rpc.LeaseGrantRequest(TTL=ttl), timeout=timeout, metadata=md)
        return int((await self._cluster.call("lease grant", attempt)).ID)

    async def refresh(self, lease_id: int) -> bool:
        """Keep a lease alive; False when it has already expired."""
        async def attempt(m: Member, timeout: float, md: Metadata) -> Any:
            call = m.lease.LeaseKeepAlive(metadata=md, timeout=timeout)
            try:
                await call.write(rpc.LeaseKeepAliveRequest(ID=lease_id))
                resp = await call.read()
            finally:
                call.cancel()
            if resp is grpc.aio.EOF:
                raise _closed("lease keepalive")
            return resp
        return int((await self._cluster.call("lease refresh", attempt)).TTL) > 0

    async def revoke(self, lease_id: int) -> None:
        """Best effort: a lease that cannot be revoked now expires after its TTL anyway."""
        async def attempt(m: Member, timeout: float, md: Metadata) -> Any:
            return await m.lease.LeaseRevoke(rpc.LeaseRevokeRequest(ID=lease_id), timeout=timeout, metadata=md)
        with contextlib.suppress(StoreUnavailable):
            await self._cluster.call("lease revoke", attempt)


Entries = list[Entry]
Changes = list[Change]


def _group_by_revision(events: list[Any]) -> list[Changes]:
    """One watch response's events (protobuf) as Changes, one list per revision."""
    batches: list[Changes] = []
    for ev in events:
        rev = ev.kv.mod_revision
        value = _load(ev.kv.value) if ev.type == rpc.Event.PUT else None
        prev = _load(ev.prev_kv.value) if ev.HasField("prev_kv") else None
        ch = Change(ev.kv.key.decode(), value, rev, prev)
        if batches and batches[-1][0].revision == rev:
            batches[-1].append(ch)
        else:
            batches.append([ch])
    return batches


def _closed(what: str) -> grpc.aio.AioRpcError:
    """A stream etcd ended without an answer, as the error a member fault would give."""
    return grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                details=f"etcd ended the {what} stream")
