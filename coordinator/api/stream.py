"""The agent side of the coordinator: the desired-state stream and the observed-state intake.

Stream (`GET /v1/hosts/{uuid}/stream?since=REV`, NDJSON): a `snapshot` line (every item of the host's
view at one revision) unless `since` can be resumed, then one `changes` line per etcd revision that
touched the view (`puts` and `deletes` together, so agents apply whole transactions), and `progress`
lines while idle. A compacted `since` yields a fresh snapshot.

Observed (`POST /v1/hosts/{uuid}/observed`): ordered, sequence-numbered events; a batch is stored in one
transaction with the host's high-water sequence, so a re-sent batch is acknowledged but stored once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from aiohttp import web
from pydantic import BaseModel, Field

from agentkit.model import ObservedBatch
from coordinator.api.appkeys import STORE
from coordinator.api.http import ApiError, Routes, not_found
from coordinator.domain import vms
from coordinator.etcd import keys
from coordinator.etcd.store import Compacted, Store, Txn

routes = Routes("agents")
PROGRESS_EVERY = 5.0


class StreamQuery(BaseModel):
    since: int = Field(0, ge=0, description="last revision the agent applied; 0 for a snapshot")


class Acked(BaseModel):
    acked: int = Field(description="highest sequence number stored for this host")


class _Writer:
    def __init__(self, resp: web.StreamResponse):
        self.resp = resp
        self.lock = asyncio.Lock()
        self.rev = 0

    async def line(self, doc: dict) -> None:
        async with self.lock:
            await self.resp.write(json.dumps(doc, separators=(",", ":")).encode() + b"\n")
            self.rev = max(self.rev, doc.get("rev", 0))

    async def progress(self) -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY)
            await self.line({"type": "progress", "rev": self.rev})


async def _snapshot(store: Store, host: str, out: _Writer) -> int:
    prefixes = [keys.DESIRED_ALL, keys.desired_host(host)]
    snap, rev = await store.snapshot(prefixes)
    items = {keys.stream_key_of(host, e.key): e.value for p in prefixes for e in snap[p]}
    await out.line({"type": "snapshot", "rev": rev, "items": items})
    return rev


async def _follow(store: Store, host: str, since: int, out: _Writer) -> None:
    async for batch in store.watch(keys.DESIRED, since + 1):
        puts, deletes = {}, []
        for ch in batch:
            sk = keys.stream_key_of(host, ch.key)
            if sk is None:
                continue
            if ch.value is None:
                puts.pop(sk, None)
                deletes.append(sk)
            else:
                puts[sk] = ch.value
        rev = batch[0].revision
        if puts or deletes:
            await out.line({"type": "changes", "rev": rev, "puts": puts, "deletes": deletes})
        else:
            out.rev = rev


@routes.route("GET", "/v1/hosts/{uuid}/stream", query=StreamQuery, auth="host")
async def stream(request: web.Request, query: StreamQuery):
    """This host's desired state: snapshot at a revision, then changes (NDJSON, never ends)."""
    store = request.app[STORE]
    host = request.match_info["uuid"]
    if await store.get(keys.host(host)) is None:
        raise not_found("host", host)
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-store"})
    await resp.prepare(request)
    out = _Writer(resp)
    ticker = asyncio.create_task(out.progress())
    since = query.since
    try:
        while True:
            try:
                if since == 0:
                    raise Compacted(0)
                await _follow(store, host, since, out)
            except Compacted:
                since = await _snapshot(store, host, out)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
    return resp


@routes.route("POST", "/v1/hosts/{uuid}/observed", body=ObservedBatch, response=Acked, auth="host")
async def observed(request: web.Request, body: ObservedBatch):
    """Store a batch of observed events once, in order; answer the acknowledged sequence."""
    store = request.app[STORE]
    host = request.match_info["uuid"]
    seq_key = keys.observed_seq(host)
    for _ in range(20):
        entry = await store.get(seq_key)
        last = entry.value if entry else 0
        fresh = sorted((e for e in body.events if e.seq > last), key=lambda e: e.seq)
        if not fresh:
            return Acked(acked=last)
        latest = {}
        for ev in fresh:
            latest[(ev.kind, ev.id)] = ev
        txn = Txn().unchanged(seq_key, entry.mod_revision if entry else 0)
        for (kind, ident), ev in latest.items():
            txn.put(keys.observed(kind, ident), {**ev.body, "host": host, "at": ev.at, "seq": ev.seq})
        txn.put(seq_key, fresh[-1].seq)
        if await store.commit(txn) is not None:
            for (kind, ident), ev in latest.items():
                if kind == "vm" and ev.body.get("drift") and isinstance(ev.body.get("generation"), int):
                    await vms.adopt(store, host, ident, ev.body["generation"], str(ev.body.get("state")))
            return Acked(acked=fresh[-1].seq)
    raise ApiError(409, "conflict", "observed batches for this host raced; resend")
