"""Every request an HTTP edge answered, refusals included, counted for /metrics: the coordinator's, the
kvmagent's, the console proxy's, the cephagent's, the image store's.

Per route (the path template, so `/v1/vms/{uuid}` is one series; `unmatched` for any path no route
takes), method (`other` for a method HTTP does not define) and status: a request counter (its rate is
the request rate, its 401s and 403s the refused credentials) and a latency histogram. A stream (a
websocket, a console tunnel) is counted when it ends and never timed. The middleware goes first, before
the error middleware if the app has one; in an app without one, an HTTP error a handler raises is counted
with its status as it passes. A response its handler returns unsent is counted with the status it is sent
with, when aiohttp prepares it: a FileResponse decides only then whether it answers 200, 206 or 416 to a
`Range` (304 or 412 to a condition), so its status when the handler returns may not be the one sent; one
whose client left already is counted at once, with the status it would have had.
`install` sets up both halves: the metrics and the hook that counts at prepare.
"""

from __future__ import annotations

import time

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from agentkit.metrics import Registry

_METHODS = frozenset(hdrs.METH_ALL)  # aiohttp also takes WebDAV's and others' (its Python parser any token)


class HttpMetrics:
    def __init__(self, registry: Registry):
        self.registry = registry  # where the edge's connections are counted too (agentkit.web.run_app)
        self.requests = registry.counter("hoststack_http_requests_total", "API requests answered",
                                         ("route", "method", "code"))
        self.latency = registry.histogram("hoststack_http_request_seconds", "API request latency (streams excluded)",
                                          ("route", "method"))
        self.installed = False  # with the hook that counts at prepare (`install`): checked per request, cheaply


HTTP: web.AppKey[HttpMetrics] = web.AppKey("http_metrics", HttpMetrics)
# a response returned unsent: its request's (metrics, route, method), counted once prepared
_UNSENT: web.RequestKey[tuple[HttpMetrics, str, str]] = web.RequestKey("http_metrics_unsent", tuple)


def install(app: web.Application, registry: Registry) -> HttpMetrics:
    """The HTTP metrics of `app` (whose first middleware is `middleware`) as series of `registry`."""
    app[HTTP] = metrics = HttpMetrics(registry)
    app.on_response_prepare.append(_prepared)
    metrics.installed = True
    return metrics


async def _prepared(request: web.Request, response: web.StreamResponse) -> None:
    """Counts a response the middleware saw returned unsent, with the status it is being sent with."""
    unsent = request.pop(_UNSENT, None)
    if unsent is not None:
        metrics, route, method = unsent
        metrics.requests.inc(route, method, str(response.status))


def _route(request: web.Request) -> str:
    info = request.match_info
    if info.http_exception is not None:
        return "unmatched"
    return info.route.resource.canonical if info.route.resource else "unmatched"


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    t0 = time.monotonic()
    m, route = request.app[HTTP], _route(request)
    if not m.installed:
        raise RuntimeError("the HTTP metrics need httpmetrics.install(app, registry), not only the middleware")
    method = request.method if request.method in _METHODS else "other"
    try:
        response = await handler(request)
    except web.HTTPException as e:  # no error middleware inside: aiohttp answers it as it is
        m.requests.inc(route, method, str(e.status))
        raise
    if response.prepared or request.transport is None:  # a stream its handler ran, or no one left to send to
        m.requests.inc(route, method, str(response.status))
    else:  # aiohttp sends it next, and may decide its status then (a FileResponse's 206, 416)
        request[_UNSENT] = (m, route, method)
    if isinstance(response, web.Response):  # a stream is prepared by its handler and lives for hours
        m.latency.observe(time.monotonic() - t0, route, method)
    return response
