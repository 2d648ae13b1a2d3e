"""`GET /metrics` (Prometheus text; the metrics, reader or admin token) and the middleware that counts and
times every request.

Per route (the path template, so `/v1/vms/{uuid}` is one series; `unmatched` for any path no route
takes), method (`other` for a method HTTP does not define) and status: a request counter
(its rate is the request rate) and a latency histogram. Host streams are long-lived: counted when they
end, timed never, and their number now is a gauge. Besides: whether this replica leads, etcd latency
(`coordinator/etcd/metered.py`), the age of the newest backup, the hosts by connection state and health
(alert on Disconnected or degraded ones), and the data's schema against the one this replica knows (a
replica behind the data refuses some writes).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web

from agentkit.metrics import Gauge, Registry
from coordinator.api.appkeys import ELECTION, FANOUT, METRICS, SETTINGS, STORE
from coordinator.api.http import Routes
from coordinator.domain import backups, hosts, schema
from coordinator.domain.schemaguard import GuardedStore

routes = Routes("meta")
_METHODS = frozenset(hdrs.METH_ALL)  # aiohttp also takes WebDAV's and others' (its Python parser any token)


class HttpMetrics:
    def __init__(self, registry: Registry):
        self.requests = registry.counter("hoststack_http_requests_total", "API requests answered",
                                         ("route", "method", "code"))
        self.latency = registry.histogram("hoststack_http_request_seconds", "API request latency (streams excluded)",
                                          ("route", "method"))


HTTP: web.AppKey[HttpMetrics] = web.AppKey("http_metrics", HttpMetrics)


def install(app: web.Application, registry: Registry) -> None:
    """The registry, the HTTP metrics and the gauges read at scrape time."""
    app[METRICS] = registry
    app[HTTP] = HttpMetrics(registry)
    registry.gauge("hoststack_leader", "1 while this replica is the elected one",
                   lambda: [((), float(app[ELECTION].is_leader))] if ELECTION in app else [])
    registry.gauge("hoststack_host_streams", "host streams open on this replica",
                   lambda: [((), float(app[FANOUT].streams))] if FANOUT in app else [])
    registry.count("hoststack_stream_cut_offs_total", "host streams cut off for falling behind",
                   lambda: [((), float(app[FANOUT].cut_offs))] if FANOUT in app else [])


def _route(request: web.Request) -> str:
    info = request.match_info
    if info.http_exception is not None:
        return "unmatched"
    return info.route.resource.canonical if info.route.resource else "unmatched"


@web.middleware
async def middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
    t0 = time.monotonic()
    response = await handler(request)  # inside the error middleware: failures arrive as responses
    m, route = request.app[HTTP], _route(request)
    method = request.method if request.method in _METHODS else "other"
    m.requests.inc(route, method, str(response.status))
    if isinstance(response, web.Response):  # a stream is prepared by its handler and lives for hours
        m.latency.observe(time.monotonic() - t0, route, method)
    return response


@routes.route("GET", "/metrics", auth="metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus metrics of this replica (text format 0.0.4)."""
    store = request.app[STORE]
    last = await backups.last(store)
    counted = Counter((s.host.kind, s.state, s.health.status if s.health else "none")
                      for s in await hosts.statuses(store, request.app[SETTINGS].heartbeat_timeout, health=True))
    extra: list[Gauge] = [Gauge("hoststack_backup_age_seconds", "seconds since the newest backup (hs-ctl backup)",
                                (), lambda: [((), time.time() - last.at)] if last else []),
                          Gauge("hoststack_hosts", "hosts by kind, connection state and the health their agent "
                                "reported (none: never reported)", ("kind", "state", "health"),
                                lambda: [(k, float(n)) for k, n in sorted(counted.items())])]
    if isinstance(store, GuardedStore):
        data, known = (await schema.read(store)).version, store.known
        extra.append(Gauge("hoststack_schema_version", "the data's schema version, and the newest this replica "
                           "knows", ("of",), lambda: [(("data",), float(data)), (("replica",), float(known))]))
    text = request.app[METRICS].render() + "\n".join(line for g in extra for line in g.render()) + "\n"
    return web.Response(body=text.encode(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})
