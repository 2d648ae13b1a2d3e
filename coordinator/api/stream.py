"""The agent side of the coordinator: the desired-state stream and the observed-state intake.

Stream (`GET /v1/hosts/{uuid}/stream?since=REV`, NDJSON): the host's view as domain/hostview.py hands
it out, one document a line, and `progress` lines while idle; served from this replica's watch cache
(coordinator/fanout/), never from etcd per host. Observed (`POST /v1/hosts/{uuid}/observed`):
ordered, sequence-numbered events, stored once (domain/observed.py), and only about the host's own
objects. A stream opened with a host's token ends as soon as that token stops being valid (rotated,
expired, host deleted: coordinator/fanout/credentials.py), not at the agent's next reconnect.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web
from pydantic import BaseModel, Field

from agentkit.errors import NotFound
from agentkit.model import ObservedBatch
from coordinator.api.appkeys import CREDENTIALS, FANOUT, STORE
from coordinator.api.auth import CALLER
from coordinator.api.http import Routes
from coordinator.domain import hosts, hostview
from coordinator.domain.observed import ingest
from coordinator.fanout.subscription import Subscription

routes = Routes("agents")
PROGRESS_EVERY = 5.0


class StreamQuery(BaseModel):
    since: int = Field(0, ge=0, description="last revision the agent applied; 0 for a snapshot")
    timeline: str = Field("", max_length=64, description="the timeline of `since`, as the agent's last snapshot "
                          "named it (none: etcd's data was never restored); a `since` of another timeline gets a "
                          "snapshot")


class Acked(BaseModel):
    acked: int = Field(description="highest sequence number stored for this host")


@routes.route("GET", "/v1/hosts/{uuid}/stream", query=StreamQuery, auth="host")
async def stream(request: web.Request, query: StreamQuery) -> web.StreamResponse:
    """This host's desired state: snapshot at a revision (or the diff since `since` of `timeline`), then changes
    (NDJSON, never ends unless the agent falls too far behind or etcd's data is restored: then it reconnects and
    resumes)."""
    host = request.match_info["uuid"]
    if not await hosts.exists(request.app[STORE], host):
        raise NotFound(what="host", ident=host)
    fanout = request.app[FANOUT]
    async with fanout.subscribe(host, query.since, query.timeline) as sub, _while_valid(request, sub):
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-store"})
        await resp.prepare(request)
        with contextlib.suppress(ConnectionResetError):  # the agent went away
            while (data := await sub.next(PROGRESS_EVERY)) is not None:
                await resp.write(data or hostview.line(hostview.progress(fanout.rev)))
    return resp


@contextlib.asynccontextmanager
async def _while_valid(request: web.Request, sub: Subscription) -> AsyncIterator[None]:
    """End the stream when the host credential it was opened with stops being valid."""
    caller = request[CALLER]
    if caller.credential is None:  # the admin token: valid as long as this process runs
        yield
        return
    with request.app[CREDENTIALS].hold(request.match_info["uuid"], caller.credential, sub.cut_off):
        yield


@routes.route("POST", "/v1/hosts/{uuid}/observed", body=ObservedBatch, response=Acked, auth="host")
async def observed(request: web.Request, body: ObservedBatch) -> Acked:
    """Store a batch of observed events once, in order; answer the acknowledged sequence."""
    return Acked(acked=await ingest(request.app[STORE], request.match_info["uuid"], body))
