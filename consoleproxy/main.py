"""Composition root of the `consoleproxy` process: settings, the coordinator and tunnel clients, the pages.

Nothing connects at import time: the HTTP clients live in a `cleanup_ctx` (closed in reverse order at
shutdown), and open consoles are closed with 1001 on shutdown before the clients go. The proxy's presence
at the coordinator (connect with its version, heartbeats: Connected/Disconnected like any agent) runs
under a `Supervisor`: a bug in it ends the process, for systemd to restart.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from agentkit import __version__, config
from agentkit.link import Presence
from agentkit.model import HostFacts
from agentkit.supervise import Supervisor
from consoleproxy.appkeys import RESOLVER, SESSIONS, SETTINGS, TUNNELS
from consoleproxy.grants import Resolver
from consoleproxy.resolver import CoordinatorResolver
from consoleproxy.sessions import Sessions
from consoleproxy.settings import ConsoleProxySettings
from consoleproxy.web import add_static, errors, routes


async def clients_ctx(app: web.Application) -> AsyncIterator[None]:
    s = app[SETTINGS]
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=s.connect_timeout)
    async with aiohttp.ClientSession(timeout=timeout) as tunnels:
        app[TUNNELS] = tunnels
        yield


async def coordinator_ctx(app: web.Application) -> AsyncIterator[None]:
    s = app[SETTINGS]
    if s.coordinator_url is None or s.token is None or s.uuid is None:
        raise SystemExit("consoleproxy: coordinator_url, uuid and token must be configured")
    token = s.token.get_secret_value()
    presence = Presence(s.coordinator_url, s.uuid, token,
                        lambda: HostFacts(hostname=socket.gethostname(), agent_version=__version__))
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session, Supervisor() as tasks:
        app[RESOLVER] = CoordinatorResolver(session, s.coordinator_url, s.uuid, s.connect_timeout)
        tasks.start(presence.run(), "coordinator presence")
        yield


async def close_sessions(app: web.Application) -> None:
    await app[SESSIONS].close_all()


def init_app(settings: ConsoleProxySettings, resolver: Resolver | None = None) -> web.Application:
    """The proxy's application; `resolver` replaces the coordinator's (the test bed's token table)."""
    app = web.Application(middlewares=[errors])
    app[SETTINGS] = settings
    app[SESSIONS] = Sessions()
    app.cleanup_ctx.append(clients_ctx)
    if resolver is None:
        app.cleanup_ctx.append(coordinator_ctx)
    else:
        app[RESOLVER] = resolver
    app.on_shutdown.append(close_sessions)
    app.add_routes(routes)
    add_static(app)
    return app


def main(argv: list[str] | None = None) -> None:
    settings = config.from_command_line(ConsoleProxySettings, "consoleproxy", "HostStack console proxy", argv)
    web.run_app(init_app(settings), host=settings.listen, port=settings.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
