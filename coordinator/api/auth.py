"""Who is calling, and whether they may: the one place that turns a bearer token into a caller.

Each credential is scoped to what its holder does (coordinator settings; see docs/security.md):
- `admin_token`: everything (operators, the CLI, the deployer);
- `reader_token`: every GET the admin token may make, nothing that changes state;
- `metrics_token`: the metrics endpoints only (scrapers);
- a host's agent token: that host's own agent endpoints (`/v1/hosts/{uuid}/...` with its uuid), checked
  against this replica's credential cache (coordinator/fanout/credentials.py) and its expiry; and the few
  endpoints any host may call for itself (`anyhost`: an image's read ticket, issued in the host's name).
An endpoint declares the least it needs (`Auth`); the admin token passes every check.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from agentkit import bearer
from agentkit.config import revealed
from agentkit.errors import Forbidden, Unauthorized
from coordinator.api.appkeys import CREDENTIALS, SETTINGS
from coordinator.fanout.credentials import Credential

Auth = Literal["admin", "metrics", "host", "anyhost", "none"]  # host: the path's uuid; anyhost: any host, as itself
Role = Literal["admin", "reader", "metrics", "host", "anonymous"]
READS = ("GET", "HEAD")


@dataclass(frozen=True)
class Caller:
    role: Role
    host: str | None = None
    credential: Credential | None = None  # a host's, which its open streams keep checking

    @property
    def subject(self) -> str:
        """Who this is in what the coordinator issues for it (tickets): `host:<uuid>`, or the role."""
        return f"host:{self.host}" if self.host else self.role


CALLER: web.RequestKey[Caller] = web.RequestKey("caller", Caller)


def _same(given: str, expected: str | None) -> bool:
    return bool(given) and expected is not None and hmac.compare_digest(given.encode(), expected.encode())


async def authenticate(request: web.Request, mode: Auth) -> Caller:
    """The caller, if its credential allows `mode` on this request; Unauthorized/Forbidden otherwise."""
    caller = await _identify(request, mode)
    if mode == "none" or caller.role == "admin":
        return caller
    if caller.role == "anonymous":
        raise Unauthorized("a valid bearer token is required")
    allowed = {"admin": ("reader",) if request.method in READS else (),
               "metrics": ("reader", "metrics"), "host": ("host",), "anyhost": ("host",)}[mode]
    if caller.role not in allowed:
        raise Forbidden(f"the {caller.role} credential may not {request.method} {request.path}")
    return caller


async def _identify(request: web.Request, mode: Auth) -> Caller:
    token = bearer.from_header(request.headers.get("Authorization", ""))
    settings = request.app[SETTINGS]
    roles: tuple[tuple[Role, str | None], ...] = (("admin", revealed(settings.admin_token)),
                                                   ("reader", revealed(settings.reader_token)),
                                                   ("metrics", revealed(settings.metrics_token)))
    for role, secret in roles:
        if _same(token, secret):
            return Caller(role)
    host = request.match_info.get("uuid", "")
    if mode == "host" and token and host:
        credential = await request.app[CREDENTIALS].authenticate(host, token)
        if credential is not None:
            return Caller("host", host, credential)
    if mode == "anyhost" and token and (found := await request.app[CREDENTIALS].whose(token)) is not None:
        return Caller("host", *found)
    return Caller("anonymous")
