"""The agent's own HTTP API (port 8741, TLS): health, Prometheus metrics, applied state, the console
tunnel (`kvmagent.consoles`, a ticket per connection: the proxy holds no token of the host), and the
volumes a migration's target copies from here (`kvmagent.storage.serve`, a ticket per volume).

Its credentials are its own, never the host's coordinator token: `api_token` reads everything here,
`metrics_token` only /metrics and /health (a scraper cannot learn the host's state, nor act for it).
Tickets are keyed with the digest of the host's current token (renewals included). Every request is
counted per route, method and status (`agentkit.httpmetrics`): wrong tokens and tickets show as 401s and
403s on /metrics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Handler

from agentkit import bearer, httpmetrics
from agentkit.link import Link
from agentkit.metrics import Registry, family
from agentkit.tickets import host_key
from kvmagent.agent import Reconciler
from kvmagent.consoles import ConsoleTunnel, Locate
from kvmagent.storage.serve import VolumeServer

TOKENS: web.AppKey[dict[str, tuple[str, ...]]] = web.AppKey("tokens", dict)  # path -> the tokens it takes
RECONCILER: web.AppKey[Reconciler] = web.AppKey("reconciler", Reconciler)
LINK: web.AppKey[Link] = web.AppKey("link", Link)
GUEST_METRICS: web.AppKey[Callable[[], Awaitable[list[str]]]] = web.AppKey("guest_metrics")  # flatnet.metrics
VOLUMES: web.AppKey[VolumeServer] = web.AppKey("volumes", VolumeServer)  # a migration's source serves its volumes
METRICS: web.AppKey[Registry] = web.AppKey("metrics", Registry)  # what the app counts itself: its requests


@web.middleware
async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every endpoint wants one of the tokens it takes (Prometheus sends its own as a bearer credential), but
    the console tunnel and the volumes a migration's target reads, which check their own tickets."""
    if request.path.startswith((ConsoleTunnel.PREFIX, VolumeServer.PREFIX)):
        return await handler(request)
    header = request.headers.get("Authorization", "")
    if not any(bearer.matches(header, t) for t in request.app[TOKENS].get(request.path, ())):
        return web.json_response({"error": {"code": "unauthorized", "message": "bearer token required",
                                            "field": None}}, status=401)
    return await handler(request)


def make_app(api_token: str | None, metrics_token: str | None, consoles: Locate,
             host_token: Callable[[], str]) -> web.Application:
    """The API without the pipeline behind it (the composition root adds that as a cleanup context);
    `host_token()` is the host's current coordinator token, which keys the console tickets."""
    app = web.Application(middlewares=[httpmetrics.middleware, auth])
    app[METRICS] = Registry()
    httpmetrics.install(app, app[METRICS])
    reads = tuple(t for t in (api_token,) if t)
    scrapes = tuple(t for t in (api_token, metrics_token) if t)
    app[TOKENS] = {"/health": scrapes, "/metrics": scrapes, "/v1/state": reads}
    app.add_routes(ConsoleTunnel(lambda: host_key(host_token()), consoles).routes())
    app[VOLUMES] = VolumeServer(lambda: host_key(host_token()))
    app.add_routes(app[VOLUMES].routes())
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/state", state)
    return app


async def health(request: web.Request) -> web.Response:
    link = request.app[LINK]
    rec = request.app[RECONCILER]
    healthy = not rec.stats.last_error
    return web.json_response({"status": "ok" if healthy else "degraded", "coordinator": link.connected,
                              "rev": link.rev, "applied_rev": rec.stats.applied_rev,
                              "errors": rec.stats.last_error}, status=200 if healthy else 503)


async def metrics(request: web.Request) -> web.Response:
    link, rec = request.app[LINK], request.app[RECONCILER]
    journal, stats = link.journal, rec.stats
    lines = [
        *family("hoststack_link_connected", "1 while the stream from the coordinator is open", "gauge", (),
                [((), int(link.connected))]),
        *family("hoststack_stream_revision", "the desired state's revision received", "gauge", (), [((), link.rev)]),
        *family("hoststack_applied_revision", "the revision the components last applied", "gauge", (),
                [((), stats.applied_rev)]),
        *family("hoststack_journal_pending", "reports written, not yet acknowledged by the coordinator", "gauge", (),
                [((), len(journal.pending))]),
        *family("hoststack_journal_queued", "reports not yet written (a failing disk)", "gauge", (),
                [((), len(journal.queued))]),
        *family("hoststack_journal_dropped_total", "reports dropped past the journal's cap", "counter", (),
                [((), journal.capped)]),
        *family("hoststack_reconciles_total", "passes of any component, failed ones too", "counter", (),
                [((), stats.reconciles)]),
        *family("hoststack_reconcile_seconds", "the last pass of each component", "gauge", ("component",),
                [((k,), v) for k, v in stats.last_seconds.items()]),
        *family("hoststack_desired_vms", "VMs this host should run", "gauge", (), [((), len(rec.view.vms))]),
        *family("hoststack_desired_held", "desired items this agent cannot read, their objects left as they are",
                "gauge", (), [((), len(rec.view.held))]),
        *family("hoststack_reconcile_errors_total", "failed passes of each component", "counter", ("component",),
                [((k,), v) for k, v in stats.errors.items()]),
    ]
    if GUEST_METRICS in request.app:
        lines += await request.app[GUEST_METRICS]()
    text = "\n".join(lines) + "\n" + request.app[METRICS].render()
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


async def state(request: web.Request) -> web.Response:
    rec = request.app[RECONCILER]
    v = rec.view
    return web.json_response({
        "rev": v.rev, "applied_rev": rec.stats.applied_rev, "applied_at": rec.stats.applied_at,
        "vms": {u: {"name": s.name, "state": s.state, "generation": s.generation} for u, s in v.vms.items()},
        "l2_networks": sorted(v.l2s), "l3_networks": sorted(v.l3s), "configs": v.configs,
        "errors": rec.stats.last_error, "held": {k: h.reason for k, h in v.held.items()},
    })
