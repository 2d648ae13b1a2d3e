"""The agent side of the coordinator: the desired-state stream and the observed-state intake.

Stream (`GET /v1/hosts/{uuid}/stream?since=REV`, NDJSON): the host's view as domain/hostview.py hands
it out, one document a line, and `progress` lines while idle. Observed (`POST /v1/hosts/{uuid}/observed`):
ordered, sequence-numbered events, stored once (domain/observed.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field

from agentkit.errors import NotFound
from agentkit.model import ObservedBatch
from coordinator.api.appkeys import STORE
from coordinator.api.http import Routes
from coordinator.domain import hosts, hostview
from coordinator.domain.observed import ingest
from coordinator.etcd.store import Store, StoreUnavailable

log = logging.getLogger(__name__)
routes = Routes("agents")
PROGRESS_EVERY = 5.0


class StreamQuery(BaseModel):
    since: int = Field(0, ge=0, description="last revision the agent applied; 0 for a snapshot")


class Acked(BaseModel):
    acked: int = Field(description="highest sequence number stored for this host")


class _Writer:
    """NDJSON lines to one agent; remembers the newest revision for the `progress` lines."""

    def __init__(self, resp: web.StreamResponse):
        self.resp = resp
        self.lock = asyncio.Lock()
        self.rev = 0

    async def line(self, doc: dict[str, Any]) -> None:
        async with self.lock:
            await self.resp.write(json.dumps(doc, separators=(",", ":")).encode() + b"\n")

    async def progress(self) -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY)
            await self.line({"type": "progress", "rev": self.rev})

    async def follow(self, store: Store, host: str, since: int) -> None:
        async for rev, doc in hostview.follow(store, host, since):
            if doc is not None:
                await self.line(doc)
            self.rev = max(self.rev, rev)


@routes.route("GET", "/v1/hosts/{uuid}/stream", query=StreamQuery, auth="host")
async def stream(request: web.Request, query: StreamQuery) -> web.StreamResponse:
    """This host's desired state: snapshot at a revision, then changes (NDJSON, never ends)."""
    store = request.app[STORE]
    host = request.match_info["uuid"]
    if not await hosts.exists(store, host):
        raise NotFound(what="host", ident=host)
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-store"})
    await resp.prepare(request)
    out = _Writer(resp)
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(out.progress())
            await out.follow(store, host, query.since)
    except* ConnectionResetError:
        pass  # the agent went away
    except* StoreUnavailable as e:
        log.warning("stream of host %s ends: %s", host, e.exceptions[0])  # the agent resumes from its revision
    return resp


@routes.route("POST", "/v1/hosts/{uuid}/observed", body=ObservedBatch, response=Acked, auth="host")
async def observed(request: web.Request, body: ObservedBatch) -> Acked:
    """Store a batch of observed events once, in order; answer the acknowledged sequence."""
    return Acked(acked=await ingest(request.app[STORE], request.match_info["uuid"], body))
