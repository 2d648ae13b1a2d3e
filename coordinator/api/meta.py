"""Service endpoints: health, the elected replica, the OpenAPI document."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel

from agentkit import __version__
from coordinator.api.appkeys import ELECTION, SETTINGS
from coordinator.api.http import Routes

routes = Routes("meta")


class Health(BaseModel):
    status: str
    version: str
    replica: str
    leader: bool


class Leader(BaseModel):
    leader: str | None
    this_replica: str


@routes.route("GET", "/health", response=Health, auth="none")
async def health(request: web.Request) -> Health:
    """Liveness of this replica (no authentication: load balancers probe it)."""
    return Health(status="ok", version=__version__, replica=request.app[SETTINGS].replica_id,
                  leader=request.app[ELECTION].is_leader)


@routes.route("GET", "/v1/leader", response=Leader)
async def leader(request: web.Request) -> Leader:
    """Which replica runs the background loops now."""
    return Leader(leader=await request.app[ELECTION].leader(), this_replica=request.app[SETTINGS].replica_id)
