"""Composition root of the coordinator: settings in, aiohttp application out."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from agentkit import __version__
from coordinator.api import (
    ceph,
    ceph_images,
    ceph_volumes,
    configs,
    deploys,
    eips,
    hosts,
    http,
    meta,
    networks,
    stream,
    tags,
    vms,
)
from coordinator.api.appkeys import ADMIN_TOKEN, ELECTION, HINTS, SETTINGS, STORE
from coordinator.etcd.hints import Hints
from coordinator.etcd.store import Store
from coordinator.leader import autodeploy, cephhosts, election, observedgc
from coordinator.leader import hostwatch as background
from coordinator.settings import CoordinatorSettings

RESOURCES: list[http.Routes] = [meta.routes, hosts.routes, deploys.routes, networks.routes, vms.routes, tags.routes,
                                configs.routes, eips.routes, stream.routes, ceph.routes, ceph_images.routes,
                                ceph_volumes.routes]


def spec() -> dict:
    return http.openapi(RESOURCES, __version__)


async def _openapi(request: web.Request) -> web.Response:
    return http.json_response(spec())


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    store = Store(app[SETTINGS].etcd)
    await store.connect()
    app[STORE] = store
    yield
    await store.close()


async def _election_ctx(app: web.Application) -> AsyncIterator[None]:
    s = app[SETTINGS]
    deployer = autodeploy.from_settings(s, __version__)
    hostwatch = background.HostWatch(app[STORE], s, __version__, deployer.request if deployer else None)
    loops = [hostwatch.run, cephhosts.CephHostWatch(app[STORE], s).run, observedgc.ObservedGC(app[STORE], s).run,
             *([deployer.run] if deployer else [])]
    el = election.Election(app[STORE], s.replica_id, s.leader_ttl, loops)
    app[ELECTION] = el
    task = asyncio.create_task(el.run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await el.resign()


def build(settings: CoordinatorSettings) -> web.Application:
    app = web.Application(middlewares=[http.error_middleware], client_max_size=8 << 20)
    app[SETTINGS] = settings
    app[ADMIN_TOKEN] = settings.admin_token
    app[HINTS] = Hints()
    app.cleanup_ctx.extend([_store_ctx, _election_ctx])
    app.router.add_get("/v1/openapi.json", _openapi)
    for routes in RESOURCES:
        for ep in routes.endpoints:
            app.router.add_route(ep.method, ep.path, http.make_handler(ep), name=ep.handler.__name__)
    return app
