"""`GET /metrics` (Prometheus text; the metrics, reader or admin token).

Every request is counted and timed per route, method and status (`agentkit.httpmetrics`, the app's first
middleware). Host streams are long-lived: counted when they end, timed never, and their number now is a
gauge. Besides: whether this replica leads, etcd latency (`coordinator/etcd/metered.py`), the age of the
newest backup, the hosts by connection state and health (alert on Disconnected or degraded ones), and the
data's schema against the one this replica knows (a replica behind the data refuses some writes).
"""

from __future__ import annotations

import time
from collections import Counter

from aiohttp import web

from agentkit import httpmetrics
from agentkit.metrics import CONTENT_TYPE, Gauge, Registry
from coordinator.api.appkeys import ELECTION, FANOUT, METRICS, SETTINGS, STORE
from coordinator.api.http import Routes
from coordinator.domain import backups, hosts, schema
from coordinator.domain.schemaguard import GuardedStore

routes = Routes("meta")


def install(app: web.Application, registry: Registry) -> None:
    """The registry, the HTTP metrics and the gauges read at scrape time."""
    app[METRICS] = registry
    httpmetrics.install(app, registry)
    registry.gauge("hoststack_leader", "1 while this replica is the elected one",
                   lambda: [((), float(app[ELECTION].is_leader))] if ELECTION in app else [])
    registry.gauge("hoststack_host_streams", "host streams open on this replica",
                   lambda: [((), float(app[FANOUT].streams))] if FANOUT in app else [])
    registry.count("hoststack_stream_cut_offs_total", "host streams cut off for falling behind",
                   lambda: [((), float(app[FANOUT].cut_offs))] if FANOUT in app else [])


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
    return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})
