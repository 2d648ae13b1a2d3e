"""Consoles in the browser: console URLs for users, grants for console proxies, and the proxies themselves
(seed 1.1: QueryConsoleProxyAgent, ReconnectConsoleProxyAgent)."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from agentkit.consoles import ConsoleKind
from coordinator.api.appkeys import SETTINGS, STORE
from coordinator.api.hosts import HostOut, host_out
from coordinator.api.http import Routes
from coordinator.domain import agentdeploy, consoles, hosts
from coordinator.domain.consoles import ConsoleUrl, Grant
from coordinator.domain.errors import InvalidState, NotConfigured

routes = Routes("consoles")


class ConsoleOpen(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: ConsoleKind | None = Field(None, description="vnc, spice or serial; default: the VM's graphics")


class GrantQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=1, max_length=200)


class ConsoleProxyOut(HostOut):
    url: str = Field(description="where browsers reach this console proxy")


class ConsoleProxyList(BaseModel):
    console_proxies: list[ConsoleProxyOut]


class Redeploy(BaseModel):
    uuid: str
    name: str
    ok: bool
    message: str


class RedeployList(BaseModel):
    results: list[Redeploy]


@routes.route("POST", "/v1/vms/{uuid}/console", body=ConsoleOpen, response=ConsoleUrl, status=201)
async def open_console(request: web.Request, body: ConsoleOpen) -> ConsoleUrl:
    """A console URL on a connected console proxy, with a token for this VM's console of that kind that
    may be used to connect for `console_token_ttl` seconds."""
    return await consoles.open_console(request.app[STORE], request.app[SETTINGS], request.match_info["uuid"],
                                       body.kind)


@routes.route("POST", "/v1/console-proxies/{uuid}/grants", body=GrantQuery, response=Grant, auth="host")
async def grant(request: web.Request, body: GrantQuery) -> Grant:
    """What a user's token opens (for the console proxy it was issued on, with that proxy's host token)."""
    return await consoles.grant(request.app[STORE], request.app[SETTINGS], request.match_info["uuid"], body.token)


async def _proxies(request: web.Request) -> list[hosts.HostStatus]:
    found = await hosts.statuses(request.app[STORE], request.app[SETTINGS].heartbeat_timeout)
    return [s for s in found if s.host.kind == "consoleproxy"]


@routes.route("GET", "/v1/console-proxies", response=ConsoleProxyList)
async def list_proxies(request: web.Request) -> ConsoleProxyList:
    """Console proxies with their connection state and version (QueryConsoleProxyAgent)."""
    settings = request.app[SETTINGS]
    return ConsoleProxyList(console_proxies=[
        ConsoleProxyOut(**host_out(s).model_dump(), url=consoles.proxy_url(settings, s.host))
        for s in await _proxies(request)])


async def _redeploy(request: web.Request, proxies: list[hosts.Host]) -> RedeployList:
    settings = request.app[SETTINGS]
    if not settings.coordinator_url_for_agents:
        raise NotConfigured("redeploying console proxies needs the coordinator setting coordinator_url_for_agents")
    results = await agentdeploy.deploy(settings, "consoleproxy", proxies, "reconnect requested",
                                       lambda r: agentdeploy.run_deployer(settings, r))
    return RedeployList(results=[Redeploy(uuid=h.uuid, name=h.name, ok=results[h.uuid][0],
                                          message=results[h.uuid][1]) for h in proxies])


@routes.route("POST", "/v1/console-proxies/{uuid}/reconnect", response=RedeployList)
async def reconnect(request: web.Request) -> RedeployList:
    """Redeploy one console proxy (ReconnectConsoleProxyAgent): install what changed, restart it if it is
    not running, wait until it is Connected again."""
    host = await hosts.find(request.app[STORE], request.match_info["uuid"])
    if host.kind != "consoleproxy":
        raise InvalidState(f"host {host.name} is a {host.kind} host, not a console proxy", field="uuid")
    return await _redeploy(request, [host])


@routes.route("POST", "/v1/console-proxies/reconnect", response=RedeployList)
async def reconnect_all(request: web.Request) -> RedeployList:
    """Redeploy every console proxy (ReconnectConsoleProxyAgent without an id)."""
    return await _redeploy(request, [s.host for s in await _proxies(request)])
