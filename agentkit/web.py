"""What the agents' HTTP edges share: the one error envelope, validated bodies, serving the app.

An agent's app puts `error_middleware(<process>)` first: a `HostStackError` leaves as its envelope
and status, aiohttp's own 4xx as an envelope too, and anything else is a bug, logged with its
traceback and answered 500 (never 200). Handlers parse with `parse` and render with `reply`. A process's
`main` loads its settings (`agentkit.config`) and hands its app to `serve` (or, with a listener of its own,
to `run_app`), which binds its port before the app starts anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl
import sys
from collections.abc import AsyncIterator, Callable
from typing import Protocol, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from aiohttp.web_runner import GracefulExit
from pydantic import BaseModel, ValidationError

from agentkit import httpmetrics, tls
from agentkit.edge import Edge, EdgeSite
from agentkit.errors import HostStackError, Invalid, error_body

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)


class Served(Protocol):
    """Settings of a process that serves one HTTP API: where it listens, and its certificate."""

    listen: str
    port: int
    tls: tls.TlsSettings


S = TypeVar("S", bound=Served)


def error_middleware(process: str) -> Middleware:
    """Every failure as `{"error": {"code", "message", "field"}}`; bugs point at `process`'s log."""

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except HostStackError as e:
            if e.status >= 500:
                log.warning("%s %s: %s", request.method, request.path, e)
            return web.json_response(e.body(), status=e.status)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            code = e.reason.lower().replace(" ", "_")
            return web.json_response(error_body(code, f"{request.method} {request.path}: {e.reason}"),
                                     status=e.status)
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            return web.json_response(error_body("internal", f"internal error; see the {process} log"), status=500)

    return errors


async def parse(request: web.Request, model: type[M]) -> M:
    """The request body as `model`; `Invalid` naming the first bad field."""
    raw = await request.read()
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(x) for x in err["loc"]) or None
        raise Invalid(field=field, message=f"{field or 'body'}: {err['msg']}") from None


def reply(model: BaseModel, status: int = 200) -> web.Response:
    return web.json_response(model.model_dump(mode="json"), status=status)


def serve(process: str, settings: S, app: Callable[[S], web.Application], shutdown_timeout: float = 60,
          loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Serve `app(settings)` at the settings' address until SIGINT or SIGTERM, over TLS unless the settings
    say plain HTTP; a certificate that cannot be used ends the process with one line naming `process`."""
    try:
        ssl_context = tls.listener(settings.tls, process)
    except tls.TlsError as e:
        sys.exit(f"{process}: {e}")
    run_app(process, app(settings), settings.listen, settings.port, ssl_context=ssl_context,
            shutdown_timeout=shutdown_timeout, loop=loop)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class CannotListen(HostStackError):
    code = "cannot_listen"
    msg_fmt = "cannot listen on {address}: {reason}"


def run_app(process: str, app: web.Application, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None,
            shutdown_timeout: float = 60.0, loop: asyncio.AbstractEventLoop | None = None,
            max_connections: int | None = None) -> None:
    """Serve `app` as aiohttp's `run_app` does (quiet: no banner, no access log, 75 s for a request head or an
    idle keep-alive), with three differences.

    Its sockets are bound before the app's startup runs. aiohttp binds only after the startup: a second copy of
    an agent started by mistake started its whole pipeline on the first one's host (reconciling it, a second
    stream as the same host), then failed on the port with a traceback and ran its cleanup. A port in use (or
    an address that is not this machine's) now ends the process with one line naming `process`, before
    anything started.

    Its connections are admitted by an `agentkit.edge.Edge`: at most `max_connections` (a share of the
    descriptor limit by default), the heaviest source's idlest closed to make room, counted in the app's
    /metrics when it has `httpmetrics`.

    It stops once. The first SIGTERM or SIGINT starts the graceful stop and any that follow while it runs are
    logged and ignored. aiohttp's own handler raises its GracefulExit at every signal, out of the middle of the
    stop: a supervisor loop without systemd signals its group and then its child again
    (`deployer.render.SUPERVISOR`), which cancelled the app's cleanup half-way (an agent's components, a
    coordinator's closing streams) with a traceback."""
    try:
        sockets = bound(host, port)
    except CannotListen as e:
        sys.exit(f"{process}: {e}")
    app.cleanup_ctx.insert(0, _stop_once)  # set up before the app's own startup, undone after its cleanup
    edge = Edge(max_connections)
    if httpmetrics.HTTP in app:
        edge.register(app[httpmetrics.HTTP].registry)
    loop = loop or asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    main = loop.create_task(_serve(app, sockets, edge, ssl_context, shutdown_timeout))
    try:
        loop.run_until_complete(main)
    except (GracefulExit, KeyboardInterrupt):
        pass
    finally:
        try:
            if not main.done():  # stopped by a signal: the app's cleanup runs now
                main.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    loop.run_until_complete(main)
        finally:
            for sock in sockets:  # those of a startup that failed: no site took them
                sock.close()
            _cancel_all(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


async def _serve(app: web.Application, sockets: list[socket.socket], edge: Edge, ssl_context: ssl.SSLContext | None,
                 shutdown_timeout: float) -> None:
    runner = web.AppRunner(app, handle_signals=False, access_log=None, keepalive_timeout=75,
                           shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        for sock in sockets:
            await EdgeSite(runner, sock, edge, ssl_context).start()
        await asyncio.get_running_loop().create_future()  # until a signal stops the loop
    finally:
        await runner.cleanup()


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    """What is left running once the app has stopped, cancelled and waited for (as `asyncio.run` ends)."""
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


def bound(host: str, port: int) -> list[socket.socket]:
    """Sockets bound to `port` at each address `host` resolves to, made as asyncio's `create_server` makes them
    for aiohttp: SO_REUSEADDR (a restart binds while the last one's connections linger), an IPv6 socket
    v6-only (so "" or a name of both families binds both, "::" IPv6 alone), a family the kernel lacks
    skipped. Not listening yet: aiohttp listens once the app started, and a connection before is refused as it
    was (a load balancer tries another replica; two copies starting at the same instant both bind, and the
    later one fails only at its listen). CannotListen naming the address that failed."""
    try:
        found = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise CannotListen(address=f"{host}:{port}", reason=e.strerror) from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(found):
            try:
                sock = socket.socket(family, kind, proto)
            except OSError:
                continue
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as e:
                where = f"[{address[0]}]" if family == socket.AF_INET6 else address[0]
                raise CannotListen(address=f"{where}:{port}", reason=e.strerror) from None
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    if not sockets:
        raise CannotListen(address=f"{host}:{port}", reason="no address of a family this kernel has")
    return sockets


async def _stop_once(app: web.Application) -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()
    stopping = False

    def stop(sig: signal.Signals) -> None:
        """Two signals that arrive together are both handed to the loop before either handler runs: the second
        `stop` ran while the first one's stop ran, and its GracefulExit cut that off (exit 1, no cleanup)."""
        nonlocal stopping
        if stopping:
            log.info("already stopping: %s ignored", sig.name)
            return
        stopping = True
        for other in STOP_SIGNALS:
            loop.add_signal_handler(other, log.info, "already stopping: %s ignored", other.name)
        raise GracefulExit()

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop, sig)
    yield
    for sig in STOP_SIGNALS:  # stopped: ignored from now on, before the loop closes the socket its handlers
        loop.remove_signal_handler(sig)  # wake it through (a signal in between was a BrokenPipeError traceback)
        signal.signal(sig, signal.SIG_IGN)
