"""Console access: short-lived tokens for one console of one VM, and the grants console proxies resolve
them to.

- `open_console` (a user, `POST /v1/vms/{uuid}/console`): picks a Connected console proxy and stores a
  token at `/hs/console/<sha256 of the token>` under an etcd lease of `console_token_ttl` plus a grace
  period (so a late use is refused as *expired*, not unknown); answers the proxy's page URL with it.
- `grant` (a proxy, with its own host token): what the token opens, resolved *now*: the VM's current host
  (a VM that moved gets its new host), the agent's tunnel URL there and a ticket for it, an HMAC the
  agent checks offline (`agentkit.consoles`) keyed with the digest of the host token this record keeps.
Console proxies are hosts of kind `consoleproxy`: registered, deployed, connected and upgraded like agents.
"""

from __future__ import annotations

import hashlib
import random
import time
from typing import Any

from pydantic import BaseModel, Field

from agentkit.addr import http_url
from agentkit.consoles import TICKET_LIFETIME, ConsoleKind, issue_ticket, new_token
from agentkit.errors import NotFound, Unavailable
from coordinator.domain import hosts, vmrecords, vms
from coordinator.domain.errors import InvalidState, NotRunning
from coordinator.domain.hosts import Host
from coordinator.etcd import keys
from coordinator.etcd.store import Store, Txn
from coordinator.settings import CoordinatorSettings

GRACE = 60  # seconds a token's record outlives its deadline


class TokenUnknown(NotFound):
    code = "token_unknown"
    msg_fmt = "unknown console token"


class ConsoleGone(NotFound):
    code = "console_gone"
    msg_fmt = "the console of this token is gone: {why}"


class NoConsoleProxy(Unavailable):
    code = "no_console_proxy"
    msg_fmt = "no console proxy is connected (hs console-proxy list)"


class ConsoleUrl(BaseModel):
    url: str
    token: str
    expires_at: float
    proxy: str


class Grant(BaseModel):
    vm: str
    kind: ConsoleKind
    expires_at: float
    expires_in: float = Field(description="seconds left to connect (negative: past), on the coordinator's clock: "
                              "what the proxy goes by, its own clock may be off")
    tunnel_url: str
    ticket: str


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def proxy_url(settings: CoordinatorSettings, proxy: Host) -> str:
    """Where browsers reach a console proxy (over TLS as every HostStack listener)."""
    return http_url(settings.tls.scheme, proxy.address, settings.console_proxy_port)


async def connected_proxies(store: Store, settings: CoordinatorSettings) -> list[Host]:
    return [s.host for s in await hosts.statuses(store, settings.heartbeat_timeout)
            if s.host.kind == "consoleproxy" and s.state == "Connected"]


async def open_console(store: Store, settings: CoordinatorSettings, uuid: str,
                       kind: ConsoleKind | None) -> ConsoleUrl:
    """A URL with a new token for the `kind` console (default: its graphics) of a running VM, on a connected
    console proxy."""
    host, spec, _ = await vmrecords.load(store, uuid)
    obs = await vms.seen(store, host, spec.uuid, settings.heartbeat_timeout)
    if obs and obs.get("state") == vms.UNKNOWN:
        raise NotRunning(f"VM {spec.name}'s host is Disconnected: its console cannot be reached until the host is "
                         "back")
    console = obs.get("console") if obs and obs.get("state") == "Running" else None
    if not isinstance(console, dict):
        raise NotRunning(f"VM {spec.name} has no console until it runs")
    kind = kind or console.get("protocol")
    if kind not in console.get("kinds", ()):
        raise InvalidState(f"VM {spec.name} has no {kind} console (it has {', '.join(console.get('kinds', ()))})",
                           field="kind")
    proxies = await connected_proxies(store, settings)
    if not proxies:
        raise NoConsoleProxy()
    proxy = random.choice(proxies)
    token = new_token()
    expires = time.time() + settings.console_token_ttl
    lease = await store.grant(int(settings.console_token_ttl) + GRACE)
    record = {"vm": spec.uuid, "kind": kind, "expires_at": expires, "proxy": proxy.uuid}
    await store.commit(Txn().put(keys.console_token(_digest(token)), record, lease))
    url = f"{proxy_url(settings, proxy)}/consoles/{spec.uuid}/{kind}?token={token}"
    return ConsoleUrl(url=url, token=token, expires_at=expires, proxy=proxy.name)


async def grant(store: Store, settings: CoordinatorSettings, proxy_uuid: str, token: str) -> Grant:
    """What `token` opens, for the console proxy `proxy_uuid` it was issued on; `ConsoleGone` when its VM, or
    the VM's host, was deleted since."""
    entry = await store.get(keys.console_token(_digest(token)))
    record: dict[str, Any] = entry.value if entry and isinstance(entry.value, dict) else {}
    if record.get("proxy") != proxy_uuid:
        raise TokenUnknown()
    vm, kind = record["vm"], record["kind"]
    try:
        host = await hosts.load(store, await vmrecords.locate(store, vm))
    except NotFound as e:
        raise ConsoleGone(why=str(e)) from e
    now = time.time()
    ticket = issue_ticket(bytes.fromhex(host.token_sha256), vm, kind, int(now) + TICKET_LIFETIME)
    scheme = "ws" if settings.tls.plain_http else "wss"
    tunnel = http_url(scheme, host.address, settings.kvmagent_port, f"/v1/consoles/{vm}/{kind}")
    return Grant(vm=vm, kind=kind, expires_at=record["expires_at"], expires_in=record["expires_at"] - now,
                 tunnel_url=tunnel, ticket=ticket)
