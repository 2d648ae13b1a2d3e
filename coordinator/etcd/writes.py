"""Committing a transaction exactly once although a member may die or hang with it.

An attempt that fails without an answer may still commit: the member proposed it before it died, or
the answer was lost on the way back, or a hung member proposes it when it wakes up. So after such a
failure the transaction is never simply sent again:

1. *Check* whether it landed: a linearizable read (served only by a leader that has committed every
   earlier entry of its term, so a proposal of the dead leader is decided by then) of every key it
   puts. It landed when each holds exactly the bytes (and lease) it put, all at one revision newer than
   any this process had seen before the first attempt. A transaction that only deletes has landed
   when none of its keys exists any more (what it wanted holds; etcd records no event for deleting
   an absent key, so deleting twice is harmless).
2. If not, send it again *guarded*: besides its own compares, each key it puts must still have the
   revision the check read. A first attempt that commits between the check and the resend makes that
   guard fail; the resend then checks again and finds it landed. Proposals reach the leader's log in
   order, so the first attempt cannot commit after a resend it was sent before, except from a member
   that was hung with it (SIGSTOP) and proposes it when it resumes: a guarded transaction then fails
   its compares; a blind put is applied twice with the same bytes, which leaves the same state.
3. A resend that fails its compares without having landed is a compare failure (None) for a guarded
   transaction, as a first attempt's would be. A blind transaction (no compares) cannot fail: it was
   overtaken by another writer between check and resend, and goes round again.

Every step is bounded by the request's deadline; then `StoreUnavailable`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aetcd import rpc

from coordinator.etcd.cluster import Cluster, Member, Metadata, Unanswered
from coordinator.etcd.errors import StoreUnavailable
from coordinator.etcd.txn import Txn

log = logging.getLogger(__name__)


async def commit(cluster: Cluster, txn: Txn) -> int | None:
    """Apply `txn` atomically, once; the new revision, or None when a compare failed."""
    seen, deadline = cluster.revision, time.monotonic() + cluster.timeout
    try:
        resp = await _send(cluster, txn.compares, txn, deadline)
        return int(resp.header.revision) if resp.succeeded else None
    except Unanswered as e:
        log.info("transaction unanswered (%s): checking whether it committed", e)
    while True:
        landed, guards = await _check(cluster, txn, seen, deadline)
        if landed is not None:
            return landed
        try:
            resp = await _send(cluster, [*txn.compares, *guards], txn, deadline)
        except Unanswered:
            continue
        if resp.succeeded:
            return int(resp.header.revision)
        landed, _ = await _check(cluster, txn, seen, deadline)
        if landed is not None:
            return landed
        if txn.compares:
            return None


async def _send(cluster: Cluster, compares: list[rpc.Compare], txn: Txn, deadline: float) -> Any:
    """One attempt (Unanswered when it gets no answer)."""
    req = rpc.TxnRequest(compare=compares, success=txn.ops, failure=[])

    async def attempt(m: Member, timeout: float, md: Metadata) -> Any:
        return await m.kv.Txn(req, timeout=timeout, metadata=md)
    _check_deadline(deadline)
    return await cluster.call("txn", attempt, once=True, deadline=deadline)


async def _check(cluster: Cluster, txn: Txn, seen: int, deadline: float) -> tuple[int | None, list[rpc.Compare]]:
    """(the revision at which `txn` committed, or None; guards on what its put keys hold now)."""
    puts = txn.puts()
    if puts:
        reads = [rpc.RangeRequest(key=p.key) for p in puts]
    else:
        reads = [rpc.RangeRequest(key=d.key, range_end=d.range_end, count_only=True) for d in txn.deletes()]
    ops = [rpc.RequestOp(request_range=r) for r in reads]

    async def attempt(m: Member, timeout: float, md: Metadata) -> Any:
        return await m.kv.Txn(rpc.TxnRequest(compare=[], success=ops, failure=[]), timeout=timeout, metadata=md)
    _check_deadline(deadline)
    resp = await cluster.call("txn check", attempt, deadline=deadline)
    found = [r.response_range for r in resp.responses]
    if not puts:
        return (int(resp.header.revision) if all(f.count == 0 for f in found) else None), []
    kvs = [f.kvs[0] if f.kvs else None for f in found]
    guards = [Txn().unchanged(p.key.decode(), kv.mod_revision if kv else 0).compares[0]
              for p, kv in zip(puts, kvs, strict=True)]
    mine = all(kv is not None and kv.value == p.value and kv.lease == p.lease for kv, p in zip(kvs, puts, strict=True))
    revs = {kv.mod_revision for kv in kvs if kv is not None}
    if mine and len(revs) == 1 and (rev := int(revs.pop())) > seen:
        log.info("an unanswered transaction had committed at revision %d", rev)
        return rev, guards
    return None, guards


def _check_deadline(deadline: float) -> None:
    if time.monotonic() >= deadline:
        raise StoreUnavailable("etcd txn failed: its outcome could not be settled before the deadline")
