"""Composition root of the coordinator: settings in, aiohttp application out.

Long-lived clients and background tasks live in `cleanup_ctx` (the etcd connection, then the host
streams' watch cache, the election and its leader loops, run by the process's Supervisor: a bug in any
of them ends the process).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator

from aiohttp import web

from agentkit import __version__
from agentkit.supervise import Supervisor
from coordinator.api import (
    ceph,
    ceph_images,
    configs,
    consoles,
    deploys,
    eips,
    hosts,
    http,
    image_stores,
    images,
    meta,
    networks,
    parse,
    storage,
    stream,
    tags,
    vms,
    volumes,
)
from coordinator.api.appkeys import ADMIN_TOKEN, ELECTION, FANOUT, HINTS, SETTINGS, STORE, SUPERVISOR
from coordinator.etcd.hints import Hints
from coordinator.etcd.store import EtcdConfig, Store
from coordinator.fanout.hub import Fanout
from coordinator.leader import autodeploy, compaction, election, hostwatch, observedgc, polledhosts
from coordinator.settings import CoordinatorSettings

RESOURCES: list[http.Routes] = [meta.routes, hosts.routes, deploys.routes, networks.routes, vms.routes, tags.routes,
                                configs.routes, eips.routes, stream.routes, ceph.routes, ceph_images.routes,
                                storage.routes, volumes.routes, consoles.routes, images.routes,
                                image_stores.routes]


def spec() -> http.Json:
    return http.openapi(RESOURCES, __version__)


async def _openapi(request: web.Request) -> web.Response:
    return http.json_response(spec())


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    store = Store(EtcdConfig.from_settings(app[SETTINGS]))
    await store.connect()
    app[STORE] = store
    yield
    await store.close()


def leader_loops(store: Store, s: CoordinatorSettings) -> list[election.Loop]:
    """The loops the elected replica runs."""
    deployer = autodeploy.from_settings(s, __version__)
    watch = hostwatch.HostWatch(store, s, __version__, deployer.request if deployer else None)
    loops: list[election.Loop] = [watch.run, polledhosts.PolledHostWatch(store, s).run,
                                  observedgc.ObservedGC(store, s).run]
    if s.compact_interval > 0:
        loops.append(compaction.Compactor(store, s.compact_interval).run)
    if deployer:
        loops.append(deployer.run)
    if s.fault_leader_loop_after is not None:
        loops.append(functools.partial(_deliberate_bug, s.fault_leader_loop_after))
    return loops


async def _deliberate_bug(after: float) -> None:
    """The `fault_leader_loop_after` setting (tests only): a leader loop with a bug."""
    await asyncio.sleep(after)
    raise RuntimeError("deliberate bug in a leader loop (setting fault_leader_loop_after)")


async def _background_ctx(app: web.Application) -> AsyncIterator[None]:
    s = app[SETTINGS]
    el = election.Election(app[STORE], s.replica_id, s.leader_ttl, leader_loops(app[STORE], s))
    app[ELECTION] = el
    app[FANOUT] = fanout = Fanout(app[STORE], s.stream_buffer, s.stream_history)
    async with Supervisor() as supervisor:
        app[SUPERVISOR] = supervisor
        supervisor.start(fanout.run(), "fanout")
        supervisor.start(el.run(), "election")
        yield  # leaving cancels the election, which steps down (revokes its lease)


def build(settings: CoordinatorSettings) -> web.Application:
    app = web.Application(middlewares=[http.error_middleware], client_max_size=parse.MAX_BODY)
    app[SETTINGS] = settings
    app[ADMIN_TOKEN] = settings.admin_token
    app[HINTS] = Hints()
    app.cleanup_ctx.extend([_store_ctx, _background_ctx])
    app.router.add_get("/v1/openapi.json", _openapi)
    for routes in RESOURCES:
        for ep in routes.endpoints:
            app.router.add_route(ep.method, ep.path, http.make_handler(ep), name=ep.handler.__name__)
    return app
