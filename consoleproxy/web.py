"""The proxy's HTTP edge: console pages, the console websockets, the clients' static files, health.

- `GET /consoles/{vm}/{kind}?token=T`: the page for that console (noVNC for vnc, term.js for serial,
  spice-html5 for spice); the token is checked first, so a refused token never gets a page.
- `GET /consoles/{vm}/{kind}/ws?token=T`: the console itself, a websocket of binary messages (the
  `binary` subprotocol noVNC and websockify use). The token is resolved and the host's tunnel opened
  before the upgrade; a refusal or an unreachable console is still upgraded and closed at once with code
  4000 + HTTP status and the reason, because a browser shows scripts nothing of a failed handshake.
- `/novnc/`, `/termjs/`, `/spice-html5/`: Debian's packaged clients, served as they are installed.
- `/vnc.js`, `/serial.js`, `/spice.js`, `/console.js`, `/spice-ticket.js`: the pages' own modules (each
  page's client, what they share, spice-html5's tickets mended); a page runs no other script (`CSP`).
- `GET /health` (for anyone: load balancers) and `GET /metrics` (Prometheus text, for the scrapers'
  `metrics_token` alone: the sessions' tally, `consoleproxy.sessions`, and every request answered per
  route and status, `agentkit.httpmetrics`).
Tokens travel in the query, so no access log is written; our own session log lines never carry them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from aiohttp import web

from agentkit import bearer
from agentkit.consoles import SUBPROTOCOL, is_token
from agentkit.errors import HostStackError, Unauthorized
from agentkit.metrics import CONTENT_TYPE
from agentkit.relay import WsPipe, http_close, relay
from agentkit.upgrade import upgrade
from agentkit.web import error_middleware
from consoleproxy.appkeys import FAILURES, METRICS, RESOLVER, SESSIONS, SETTINGS, TUNNELS
from consoleproxy.errors import TokenMissing, TokenUnknown
from consoleproxy.grants import Grant, admit
from consoleproxy.upstream import open_tunnel

log = logging.getLogger(__name__)
PAGES = Path(__file__).with_name("pages")
CONSOLE = r"/consoles/{vm:[0-9A-Za-z-]{1,64}}/{kind:vnc|spice|serial}"
# A page carries its token in its URL: not cached, never sent on as a referrer, never framed; and it runs no
# script but the proxy's own files (none inline, no eval), so that nothing a guest shows it (its serial
# output, a desktop name) runs as script on the proxy's origin, should a client mishandle it.
CSP = "script-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
PAGE_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
                "Content-Security-Policy": CSP}
routes = web.RouteTableDef()
errors = error_middleware("consoleproxy")  # the agents' envelope; a bug is logged and answers 500


async def _grant(request: web.Request) -> Grant:
    """The grant of the request's token, checked against the console its URL names; a refused one spends the
    budget of the client's address (`consoleproxy.failures`)."""
    token = request.query.get("token", "")
    if not token:
        raise TokenMissing()
    if not is_token(token):  # no token of ours: the coordinator is not asked
        raise TokenUnknown()
    with request.app[FAILURES].spend(request.remote):
        grant = await request.app[RESOLVER].resolve(token)
        admit(grant, request.match_info["vm"], request.match_info["kind"])
    return grant


@routes.get(CONSOLE)
async def page(request: web.Request) -> web.FileResponse:
    with request.app[SESSIONS].refusals(request.match_info["kind"]):
        await _grant(request)
    return web.FileResponse(PAGES / f"{request.match_info['kind']}.html", headers=PAGE_HEADERS)


@routes.get(CONSOLE + "/ws")
async def console(request: web.Request) -> web.WebSocketResponse:
    s = request.app[SETTINGS]
    ws = web.WebSocketResponse(protocols=(SUBPROTOCOL,), compress=False, max_msg_size=s.max_message,
                               heartbeat=s.heartbeat)
    if not ws.can_prepare(request).ok:
        raise web.HTTPBadRequest(reason="Websocket Upgrade Expected")
    vm, kind = request.match_info["vm"], request.match_info["kind"]
    sessions = request.app[SESSIONS]
    with contextlib.ExitStack() as claimed:
        try:
            with sessions.refusals(kind):
                grant = await _grant(request)
                claimed.enter_context(sessions.claim(request.query["token"], grant.vm))
                tunnel = await open_tunnel(request.app[TUNNELS], grant, s)
        except HostStackError as e:
            log.info("console %s of %s refused: %s", kind, vm, e, extra={"fields": {"code": e.code}})
            close = http_close(e.status, e.message)
            with contextlib.suppress(ConnectionError):  # the browser left meanwhile: no one to tell
                await ws.prepare(request)
                await ws.close(code=close.code, message=close.reason.encode())
            return ws
        if not await upgrade(ws, request, tunnel, "browser"):
            return ws
        browser = WsPipe(ws, "browser", _transport(request))
        with sessions.track(browser, kind) as moved:
            out = await relay(browser, tunnel, s.idle_timeout or None, moved)
    log.info("console %s of %s closed by %s: %s", kind, vm, out.ended_by or "the proxy", out.close.reason,
             extra={"fields": {"vm": vm, "kind": kind, "code": out.close.code, "up_bytes": out.a_to_b,
                               "down_bytes": out.b_to_a, "seconds": round(out.seconds, 1)}})
    return ws


def _transport(request: web.Request) -> asyncio.Transport:
    """The browser's connection, which the relay writes the console's frames to (`agentkit.relay.WsPipe`)."""
    transport = request.transport
    assert isinstance(transport, asyncio.Transport)
    return transport


@routes.get("/{script:console|spice-ticket|vnc|serial|spice}.js")
async def page_script(request: web.Request) -> web.FileResponse:
    """The pages' own modules: each page's client, what they share (status line, websocket URL) and
    spice-html5's ticket fix."""
    return web.FileResponse(PAGES / f"{request.match_info['script']}.js")


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    sessions = request.app[SESSIONS]
    return web.json_response({"status": "ok", "open": sessions.open, "total": sessions.total})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text (format 0.0.4); a scraper's credential opens nothing else here, and none is taken
    while `metrics_token` is unset."""
    token = request.app[SETTINGS].metrics_token
    if token is None or not bearer.matches(request.headers.get("Authorization", ""), token.get_secret_value()):
        raise Unauthorized("bearer token required")
    return web.Response(body=request.app[METRICS].render().encode(), headers={"Content-Type": CONTENT_TYPE})


def add_static(app: web.Application) -> None:
    """Debian's client packages under fixed prefixes (the pages import them from there). A symlink is served
    only where it stays inside its package's directory: Debian 12's packages link nowhere else (novnc's one
    link, vnc_auto.html, is to its own vnc.html), and anything that leads out is refused."""
    s = app[SETTINGS]
    app.router.add_static("/novnc/", s.novnc_dir)
    app.router.add_static("/termjs/", s.termjs_dir)
    app.router.add_static("/spice-html5/", s.spice_html5_dir)
