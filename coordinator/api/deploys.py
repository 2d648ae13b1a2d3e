"""What deployers ask of the coordinator: the token to configure, a per-host deploy lock, the deploy log.

The deploy lock serialises deploys of one host, whoever runs them (`hs deploy` on an operator's
machine, the elected replica's automatic deploys): two deploys at once would race on the host's
files and, when both find no valid token there, on the token itself. A lock is an etcd key bound to
a lease, so a deployer that dies frees it within `ttl` seconds; the holder renews it while it works.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field

from coordinator.api.appkeys import SETTINGS, STORE
from coordinator.api.hosts import find_host, update_host
from coordinator.api.http import ApiError, Routes, token_hash
from coordinator.etcd import keys
from coordinator.etcd.store import Txn

log = logging.getLogger(__name__)
routes = Routes("deploys")


class TokenRequest(BaseModel):
    keep: str | None = Field(None, max_length=512, description="a token to keep if it is the host's current one")


class TokenOut(BaseModel):
    token: str = Field(description="the token the host's agent must be configured with; shown only here")
    rotated: bool = Field(description="a new token was issued: the previous one no longer authenticates")


class LockRequest(BaseModel):
    holder: str = Field(min_length=1, max_length=200, description="who deploys, as other deployers are told")
    ttl: int = Field(30, ge=5, le=600, description="seconds the lock outlives its last renewal")


class LockOut(BaseModel):
    lock: str = Field(description="the lock's id, for renewing and releasing it")
    holder: str
    since: float
    ttl: int


class DeployLogEntry(BaseModel):
    host: str = Field(max_length=253)
    task: str = Field(max_length=200)
    phase: Literal["before", "after"]
    ok: bool | None = None
    duration_ms: float | None = Field(None, ge=0)
    message: str = Field("", max_length=4000)


class DeployLog(BaseModel):
    entries: list[DeployLogEntry]


@routes.route("POST", "/v1/hosts/{uuid}/token", body=TokenRequest, response=TokenOut)
async def host_token(request: web.Request, body: TokenRequest):
    """The token to configure the host's agent with: `keep` if it is the current one, else a new one.

    A new token replaces the old one at once. Ceph hosts get the coordinator's `cephagent_token`
    (the coordinator presents it to their agents), which is never rotated here.
    """
    store, settings = request.app[STORE], request.app[SETTINGS]
    record = await find_host(store, request.match_info["uuid"])
    if record["kind"] == "ceph":
        if not settings.cephagent_token:
            raise ApiError(409, "not_configured", "cephagent hosts need the coordinator setting cephagent_token")
        return TokenOut(token=settings.cephagent_token, rotated=False)
    if body.keep and hmac.compare_digest(record["token_sha256"], token_hash(body.keep)):
        return TokenOut(token=body.keep, rotated=False)
    token = secrets.token_urlsafe(32)
    await update_host(store, record["uuid"], lambda r: {**r, "token_sha256": token_hash(token)})
    log.info("host %s: new agent token issued", record["name"])
    return TokenOut(token=token, rotated=True)


def _busy(name: str, held: dict) -> ApiError:
    ago = time.time() - held["since"]
    return ApiError(409, "locked", f"host {name} is being deployed by {held['holder']} (for {ago:.0f} s)")


@routes.route("POST", "/v1/hosts/{uuid}/deploy-lock", body=LockRequest, response=LockOut, status=201)
async def take_lock(request: web.Request, body: LockRequest):
    """Take the host's deploy lock; 409 `locked`, naming the holder, while another deploy holds it."""
    store = request.app[STORE]
    record = await find_host(store, request.match_info["uuid"])
    key = keys.deploy_lock(record["uuid"])
    lease = await store.grant(body.ttl)
    held = {"lock": secrets.token_urlsafe(12), "holder": body.holder, "since": time.time(), "ttl": body.ttl,
            "lease": lease}
    if await store.commit(Txn().absent(key).put(key, held, lease)) is None:
        await store.revoke(lease)
        current = await store.get(key)
        raise _busy(record["name"], current.value if current else held)
    log.info("host %s: deploy lock taken by %s", record["name"], body.holder)
    return LockOut.model_validate(held)


@routes.route("GET", "/v1/hosts/{uuid}/deploy-lock", response=LockOut)
async def get_lock(request: web.Request):
    """Who deploys the host now; 404 when nobody does."""
    store = request.app[STORE]
    record = await find_host(store, request.match_info["uuid"])
    current = await store.get(keys.deploy_lock(record["uuid"]))
    if current is None:
        raise ApiError(404, "not_found", f"host {record['name']} is not being deployed")
    return LockOut.model_validate(current.value)


async def _held(request: web.Request) -> tuple[str, dict, int]:
    """The lock named in the path as (key, value, mod revision); 404 `lock_lost` when it expired or was taken."""
    store = request.app[STORE]
    record = await find_host(store, request.match_info["uuid"])
    key = keys.deploy_lock(record["uuid"])
    current = await store.get(key)
    if current is None or not hmac.compare_digest(current.value["lock"].encode(), request.match_info["lock"].encode()):
        raise ApiError(404, "lock_lost", f"the deploy lock of host {record['name']} is no longer held by this lock")
    return key, current.value, current.mod_revision


@routes.route("PUT", "/v1/hosts/{uuid}/deploy-lock/{lock}", status=204)
async def renew_lock(request: web.Request):
    """Keep holding the lock for another `ttl` seconds."""
    _, held, _ = await _held(request)
    if not await request.app[STORE].refresh(held["lease"]):
        raise ApiError(404, "lock_lost", "the deploy lock expired")
    return web.Response(status=204)


@routes.route("DELETE", "/v1/hosts/{uuid}/deploy-lock/{lock}", status=204)
async def release_lock(request: web.Request):
    """Release the lock (a lock already gone is fine: deleting twice changes nothing)."""
    try:
        key, held, revision = await _held(request)
    except ApiError as e:
        if e.code == "lock_lost":
            return web.Response(status=204)
        raise
    store = request.app[STORE]
    await store.commit(Txn().unchanged(key, revision).delete(key))
    await store.revoke(held["lease"])
    return web.Response(status=204)


@routes.route("POST", "/v1/hosts/{uuid}/deploy-log", body=DeployLogEntry, status=204)
async def post_deploy_log(request: web.Request, body: DeployLogEntry):
    """The deployer's logging URL: one entry before and after each task."""
    store = request.app[STORE]
    record = await find_host(store, request.match_info["uuid"])
    key = f"{keys.deploy_log(record['uuid'])}{time.time_ns():020d}"
    await store.put(key, {**body.model_dump(), "at": time.time()})
    return web.Response(status=204)


@routes.route("GET", "/v1/hosts/{uuid}/deploy-log", response=DeployLog)
async def get_deploy_log(request: web.Request):
    """What the deployers reported for a host, oldest first."""
    store = request.app[STORE]
    record = await find_host(store, request.match_info["uuid"])
    entries, _ = await store.list(keys.deploy_log(record["uuid"]))
    return DeployLog(entries=[DeployLogEntry.model_validate(
        {k: v for k, v in e.value.items() if k != "at"}) for e in entries])
