"""Composition root of the `consoleproxy` process: settings, the coordinator and tunnel clients, the pages.

Nothing connects at import time: the HTTP clients live in a `cleanup_ctx` (closed in reverse order at
shutdown), and open consoles are closed with 1001 on shutdown before the clients go. The proxy's presence
at the coordinator (connect with its version, heartbeats: Connected/Disconnected like any agent) runs
under a `Supervisor`: a bug in it ends the process, for systemd to restart. Everything is TLS: browsers
reach the proxy over https/wss (its certificate asked of the coordinator with its token, unless the
operator gives one), the proxy verifies the coordinator and the hosts' tunnels with the CA.
"""

from __future__ import annotations

import socket
import ssl
import sys
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web

from agentkit import SESSION, __version__, config, dirlock, httpmetrics, identity, tls
from agentkit.link import LinkError, Presence
from agentkit.metrics import Registry
from agentkit.model import HostFacts
from agentkit.supervise import Supervisor
from agentkit.web import run_app
from consoleproxy.appkeys import FAILURES, METRICS, RESOLVER, SESSIONS, SETTINGS, TUNNELS
from consoleproxy.failures import FailureBudget
from consoleproxy.grants import Resolver
from consoleproxy.resolver import CoordinatorResolver
from consoleproxy.sessions import Sessions
from consoleproxy.settings import ConsoleProxySettings
from consoleproxy.web import add_static, errors, routes


async def clients_ctx(app: web.Application) -> AsyncIterator[None]:
    s = app[SETTINGS]
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=s.connect_timeout)
    connector = aiohttp.TCPConnector(ssl=tls.client(s.tls) or True)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as tunnels:
        app[TUNNELS] = tunnels
        yield


def coordinator_ctx(listener: ssl.SSLContext | None) -> Callable[[web.Application], AsyncIterator[None]]:
    """The presence and the resolver; with a `listener` context and no certificate of the operator's, the
    proxy keeps its own certificate in it."""
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        s = app[SETTINGS]
        if s.coordinator_url is None or s.token is None or s.uuid is None:
            raise SystemExit("consoleproxy: coordinator_url, uuid and token must be configured")
        configured = s.token.get_secret_value()
        presence = Presence(s.coordinator_url, s.uuid, identity.current_token(s.state_dir, configured),
                            lambda: HostFacts(hostname=socket.gethostname(), agent_version=__version__,
                                              agent_session=SESSION),
                            ssl=tls.client(s.tls), on_token=lambda t: identity.keep_token(s.state_dir, configured, t))
        connector = aiohttp.TCPConnector(ssl=tls.client(s.tls) or True)
        async with aiohttp.ClientSession(connector=connector) as session, Supervisor() as tasks:
            app[RESOLVER] = CoordinatorResolver(session, s.coordinator_url, s.uuid, s.connect_timeout,
                                                lambda: presence.headers)
            tasks.start(presence.run(), "coordinator presence")
            if listener is not None and s.tls.cert is None:
                failures = (aiohttp.ClientError, OSError, TimeoutError, LinkError)
                cert = identity.Certificate(s.state_dir / "tls", "consoleproxy")
                tasks.start(cert.keep(listener, presence.certificate, failures), "certificate")
            yield
    return ctx


async def close_sessions(app: web.Application) -> None:
    await app[SESSIONS].close_all()


def init_app(settings: ConsoleProxySettings, resolver: Resolver | None = None,
             listener: ssl.SSLContext | None = None) -> web.Application:
    """The proxy's application; `resolver` replaces the coordinator's (the test bed's token table)."""
    app = web.Application(middlewares=[httpmetrics.middleware, errors])
    app[SETTINGS] = settings
    app[SESSIONS] = Sessions(settings.vm_sessions)
    app[FAILURES] = FailureBudget(settings.token_failures, settings.token_failure_window)
    app[METRICS] = Registry()
    httpmetrics.install(app, app[METRICS])
    app[SESSIONS].register(app[METRICS])
    app.cleanup_ctx.append(clients_ctx)
    if resolver is None:
        app.cleanup_ctx.append(coordinator_ctx(listener))
    else:
        app[RESOLVER] = resolver
    app.on_shutdown.append(close_sessions)
    app.add_routes(routes)
    add_static(app)
    return app


def main(argv: list[str] | None = None) -> None:
    settings = config.from_command_line(ConsoleProxySettings, "consoleproxy", "HostStack console proxy", argv)
    dirlock.hold(settings.state_dir, "consoleproxy")  # a second proxy on the machine ends here
    try:
        listener = identity.listener(settings.tls, "consoleproxy", settings.state_dir / "tls", settings.coordinator_url)
    except tls.TlsError as e:
        sys.exit(f"consoleproxy: {e}")
    run_app("consoleproxy", init_app(settings, listener=listener), settings.listen, settings.port,
            ssl_context=listener)


if __name__ == "__main__":
    main()
