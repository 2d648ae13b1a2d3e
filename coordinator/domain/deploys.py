"""What deployers ask of the coordinator: the tokens to configure, a per-host deploy lock, the deploy log.

The deploy lock serialises deploys of one host, whoever runs them (`hs deploy` on an operator's
machine, the elected replica's automatic deploys): two deploys at once would race on the host's
files and, when both find no valid token there, on the token itself. It is also its address's lock:
hosts of other kinds at one address (a hypervisor's cephagent) are deployed over the same SSH, and two
deploys there at once raced on apt's lock and on ssh's master connection. A lock is an etcd key per host and
one per address, both bound to one lease, so a deployer that dies frees it within `ttl` seconds; the holder
renews it while it works.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from typing import Literal

from pydantic import BaseModel, Field

from agentkit.addr import same_host_key
from agentkit.errors import NotFound
from coordinator.domain import credentials, hosts
from coordinator.domain.errors import Locked, LockLost
from coordinator.etcd import keys
from coordinator.etcd.store import Entry, Store, Txn
from coordinator.settings import CoordinatorSettings

log = logging.getLogger(__name__)
# A host's newest deploy log entries kept (some 16 deploys; an entry is at most ~4.5 KB): how often a host is
# deployed is partly its own doing (a version it reports is upgraded), so its log must not grow with it.
LOG_ENTRIES = 256


class Lock(BaseModel):
    """A held deploy lock as stored; `lease` is the etcd lease it lives on."""

    lock: str = Field(description="the lock's id, for renewing and releasing it")
    holder: str
    since: float
    ttl: int
    lease: int
    host: str | None = None  # the uuid of the host it was taken for: a deploy of another host there is told which


class DeployLogEntry(BaseModel):
    host: str = Field(max_length=253)
    task: str = Field(max_length=200)
    phase: Literal["before", "after"]
    ok: bool | None = None
    duration_ms: float | None = Field(None, ge=0)
    message: str = Field("", max_length=4000)


async def agent_token(store: Store, settings: CoordinatorSettings, ref: str, keep: str | None) -> tuple[str, bool]:
    """The token to configure the host's agent with, and whether it is new: `keep` if it is the current
    one and has not expired (an agent that was off longer than its token lasts could not connect with it),
    else a new one, which replaces the old one at once. A cephagent's and an image store's token are
    their own too, kept encrypted as well: the coordinator presents them to their agents (and an image
    store's keys the read tickets)."""
    host = await hosts.find(store, ref)
    live = host.token_expires is None or time.time() < host.token_expires
    if keep and live and hmac.compare_digest(host.token_sha256, hosts.token_hash(keep)):
        if host.kind in hosts.POLLED and host.agent_secret is None:  # the coordinator needs it in clear
            fields = hosts.token_fields(settings, host.kind, keep, deployed=True)
            await hosts.update(store, host.uuid, lambda h: h.model_copy(update=fields))
        return keep, False
    token, fields = hosts.new_token(settings, host.kind, deployed=True)
    await hosts.update(store, host.uuid, lambda h: h.model_copy(update=fields))
    log.info("host %s: new agent token issued", host.name)
    return token, True


async def agent_api_token(store: Store, settings: CoordinatorSettings, ref: str, rotate: bool) -> str | None:
    """The token of a KVM host agent's own API (its `api_token`: /v1/state, /health, /metrics there), never the
    host's token here, which acts for the host. Made at the host's first deploy and kept encrypted, so the
    coordinator can call the agent API with it and every later deploy lays out the same one; a new one when
    asked to `rotate` (the next deploy lays it out). None for the other agents (a console proxy, a ceph host's
    cephagent, an image store): beside the host token, their APIs take the scrapers' `metrics_token` alone."""
    host = await hosts.find(store, ref)
    if host.kind != "kvm":
        return None
    if host.api_secret is not None and not rotate:
        return credentials.decrypt(settings.secret_key, host.api_secret)
    token = secrets.token_urlsafe(32)
    sealed = credentials.encrypt(settings.secret_key, token)
    await hosts.update(store, host.uuid, lambda h: h.model_copy(update={"api_secret": sealed}))
    log.info("host %s: new agent API token made", host.name)
    return token


async def take_lock(store: Store, ref: str, holder: str, ttl: int) -> Lock:
    """Take the host's deploy lock, and its address's with it; `Locked`, naming the holder (and the host it
    deploys, when that is another host at the address), while another deploy holds either."""
    host = await hosts.find(store, ref)
    key, at = keys.deploy_lock(host.uuid), keys.deploy_lock_address(same_host_key(host.address))
    lease = await store.grant(ttl)
    held = Lock(lock=secrets.token_urlsafe(12), holder=holder, since=time.time(), ttl=ttl, lease=lease, host=host.uuid)
    if await store.commit(Txn().absent(key).absent(at).put(key, held.model_dump(), lease)
                          .put(at, held.model_dump(), lease)) is None:
        await store.revoke(lease)
        current = await store.get(key) or await store.get(at)
        other = Lock.model_validate(current.value) if current else held
        deployed = f"host {host.name}" if other.host in (None, host.uuid) else \
            f"{await hosts.title_of(store, other.host)}, at the address of host {host.name},"
        raise Locked(f"{deployed} is being deployed by {other.holder} (for {time.time() - other.since:.0f} s)")
    log.info("host %s: deploy lock taken by %s", host.name, holder)
    return held


async def current_lock(store: Store, ref: str) -> Lock:
    """Who deploys the host now."""
    host = await hosts.find(store, ref)
    current = await store.get(keys.deploy_lock(host.uuid))
    if current is None:
        raise NotFound(f"host {host.name} is not being deployed")
    return Lock.model_validate(current.value)


async def _held(store: Store, ref: str, lock_id: str) -> tuple[Entry, Lock]:
    """The lock `lock_id` of the host; `LockLost` when it expired or was taken by another."""
    host = await hosts.find(store, ref)
    current = await store.get(keys.deploy_lock(host.uuid))
    if current is not None:
        held = Lock.model_validate(current.value)
        if hmac.compare_digest(held.lock.encode(), lock_id.encode()):
            return current, held
    raise LockLost(f"the deploy lock of host {host.name} is no longer held by this lock")


async def renew_lock(store: Store, ref: str, lock_id: str) -> None:
    """Keep holding the lock for another `ttl` seconds."""
    _, held = await _held(store, ref, lock_id)
    if not await store.refresh(held.lease):
        raise LockLost("the deploy lock expired")


async def release_lock(store: Store, ref: str, lock_id: str) -> None:
    """Release the lock (a lock already gone is fine: releasing twice changes nothing)."""
    try:
        entry, held = await _held(store, ref, lock_id)
    except LockLost:
        return
    await store.commit(Txn().unchanged(entry.key, entry.mod_revision).delete(entry.key))
    await store.revoke(held.lease)


async def add_log(store: Store, ref: str, entry: DeployLogEntry) -> None:
    """One entry of the deployer's log (it posts one before and after each task); NotFound once the host is
    deleted (a deploy that ran on while it was would leave lines nothing removes). The host's oldest entries
    past LOG_ENTRIES go."""
    host = await hosts.find(store, ref)
    prefix = keys.deploy_log(host.uuid)
    key = f"{prefix}{time.time_ns():020d}"
    if await store.commit(Txn().exists(keys.host(host.uuid)).put(key, {**entry.model_dump(), "at": time.time()})
                          ) is None:
        raise NotFound(what="host", ident=ref)
    if await store.count(prefix) > LOG_ENTRIES:
        entries, _ = await store.list(prefix, keys_only=True)
        old = entries[:-LOG_ENTRIES]
        for i in range(0, len(old), 100):  # a transaction holds at most 128 operations
            txn = Txn()
            for e in old[i:i + 100]:
                txn.delete(e.key)
            await store.commit(txn)


async def read_log(store: Store, ref: str) -> list[DeployLogEntry]:
    """What the deployers reported for a host, oldest first."""
    host = await hosts.find(store, ref)
    entries, _ = await store.list(keys.deploy_log(host.uuid))
    return [DeployLogEntry.model_validate(e.value) for e in entries]
