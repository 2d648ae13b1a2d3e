"""What deployers ask of the coordinator: the tokens to configure, a per-host deploy lock, the deploy log
(see coordinator/domain/deploys.py)."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, Field

from agentkit.config import revealed
from coordinator.api.appkeys import CREDENTIALS, SETTINGS, STORE
from coordinator.api.http import Routes
from coordinator.domain import deploys
from coordinator.domain.deploys import DeployLogEntry, Lock

routes = Routes("deploys")


class TokenRequest(BaseModel):
    keep: str | None = Field(None, max_length=512, description="a token to keep if it is the host's current one")


class TokenOut(BaseModel):
    token: str = Field(description="the token the host's agent must be configured with; shown only here")
    rotated: bool = Field(description="a new token was issued: the previous one no longer authenticates")


class AgentApiTokenRequest(BaseModel):
    rotate: bool = Field(False, description="make a new one (the next deploy lays it out)")


class AgentApiTokenOut(BaseModel):
    api_token: str | None = Field(description="the agent API's own token (its `api_token`): reads the agent's "
                                  "state, and acts for the host nowhere; null for a console proxy, a cephagent and an "
                                  "image store (they take none)")
    metrics_token: str | None = Field(description="what scrapers present to the agent's /metrics and /health (its "
                                      "`metrics_token`): this coordinator's `metrics_token`; null: none")


class LockRequest(BaseModel):
    holder: str = Field(min_length=1, max_length=200, description="who deploys, as other deployers are told")
    ttl: int = Field(30, ge=5, le=600, description="seconds the lock outlives its last renewal")


class LockOut(BaseModel):
    lock: str = Field(description="the lock's id, for renewing and releasing it")
    holder: str
    since: float
    ttl: int


class DeployLog(BaseModel):
    entries: list[DeployLogEntry]


def lock_out(lock: Lock) -> LockOut:
    return LockOut(lock=lock.lock, holder=lock.holder, since=lock.since, ttl=lock.ttl)


@routes.route("POST", "/v1/hosts/{uuid}/token", body=TokenRequest, response=TokenOut)
async def host_token(request: web.Request, body: TokenRequest) -> TokenOut:
    """The token to configure the host's agent with: `keep` if it is the current one, else a new one.

    A new token replaces the old one at once. Every host has its own, ceph hosts included.
    """
    token, rotated = await deploys.agent_token(request.app[STORE], request.app[SETTINGS],
                                               request.match_info["uuid"], body.keep)
    if rotated:
        await request.app[CREDENTIALS].refresh(request.match_info["uuid"])
    return TokenOut(token=token, rotated=rotated)


@routes.route("POST", "/v1/hosts/{uuid}/agent-api-token", body=AgentApiTokenRequest, response=AgentApiTokenOut)
async def agent_api_token(request: web.Request, body: AgentApiTokenRequest) -> AgentApiTokenOut:
    """The credentials a KVM host's agent API takes, which its deploy lays out: its own `api_token` (kept
    encrypted here, the same one until rotated) and the scrapers' `metrics_token`; a console proxy's, a ceph host's
    cephagent's or an image store's: the `metrics_token` alone."""
    settings = request.app[SETTINGS]
    token = await deploys.agent_api_token(request.app[STORE], settings, request.match_info["uuid"], body.rotate)
    return AgentApiTokenOut(api_token=token, metrics_token=revealed(settings.metrics_token))


@routes.route("POST", "/v1/hosts/{uuid}/deploy-lock", body=LockRequest, response=LockOut, status=201)
async def take_lock(request: web.Request, body: LockRequest) -> LockOut:
    """Take the host's deploy lock (its address's too); 409 `locked`, naming the holder, while another deploy holds
    it or deploys another host at the address."""
    return lock_out(await deploys.take_lock(request.app[STORE], request.match_info["uuid"], body.holder, body.ttl))


@routes.route("GET", "/v1/hosts/{uuid}/deploy-lock", response=LockOut)
async def get_lock(request: web.Request) -> LockOut:
    """Who deploys the host now; 404 when nobody does."""
    return lock_out(await deploys.current_lock(request.app[STORE], request.match_info["uuid"]))


@routes.route("PUT", "/v1/hosts/{uuid}/deploy-lock/{lock}", status=204)
async def renew_lock(request: web.Request) -> None:
    """Keep holding the lock for another `ttl` seconds."""
    await deploys.renew_lock(request.app[STORE], request.match_info["uuid"], request.match_info["lock"])


@routes.route("DELETE", "/v1/hosts/{uuid}/deploy-lock/{lock}", status=204)
async def release_lock(request: web.Request) -> None:
    """Release the lock (a lock already gone is fine: deleting twice changes nothing)."""
    await deploys.release_lock(request.app[STORE], request.match_info["uuid"], request.match_info["lock"])


@routes.route("POST", "/v1/hosts/{uuid}/deploy-log", body=DeployLogEntry, status=204)
async def post_deploy_log(request: web.Request, body: DeployLogEntry) -> None:
    """The deployer's logging URL: one entry before and after each task."""
    await deploys.add_log(request.app[STORE], request.match_info["uuid"], body)


@routes.route("GET", "/v1/hosts/{uuid}/deploy-log", response=DeployLog)
async def get_deploy_log(request: web.Request) -> DeployLog:
    """What the deployers reported for a host, oldest first."""
    return DeployLog(entries=await deploys.read_log(request.app[STORE], request.match_info["uuid"]))
