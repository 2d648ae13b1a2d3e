"""Composition root of the coordinator: settings in, aiohttp application out.

Long-lived clients and background tasks live in `cleanup_ctx` (the etcd connection, then the host
streams' watch cache, the host credential cache, this replica's record, the election and its leader loops,
run by the process's Supervisor: a bug in any of them ends the process), then the wait for the data's
schema: a replica newer than the data starts serving only once its migrations ran (coordinator/domain/schema.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from agentkit import __version__, httpmetrics
from agentkit.metrics import Registry
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
    metrics,
    networks,
    parse,
    storage,
    stream,
    tags,
    vms,
    volumes,
)
from coordinator.api.appkeys import CREDENTIALS, ELECTION, FANOUT, HINTS, METRICS, SETTINGS, STORE, SUPERVISOR
from coordinator.domain import migrations, schema
from coordinator.domain.schemaguard import GuardedStore
from coordinator.etcd.hints import Hints
from coordinator.etcd.metered import MeteredStore
from coordinator.etcd.store import EtcdConfig, Store, StoreUnavailable
from coordinator.fanout.credentials import HostCredentials
from coordinator.fanout.hub import Fanout
from coordinator.leader import autodeploy, compaction, election, hostwatch, migrate, observedgc, polledhosts, presence
from coordinator.settings import CoordinatorSettings

log = logging.getLogger(__name__)
RESOURCES: list[http.Routes] = [meta.routes, metrics.routes, hosts.routes, deploys.routes, networks.routes,
                                vms.routes, tags.routes, configs.routes, eips.routes, stream.routes, ceph.routes,
                                ceph_images.routes, storage.routes, volumes.routes, consoles.routes, images.routes,
                                image_stores.routes]


def spec() -> http.Json:
    return http.openapi(RESOURCES, __version__)


async def _openapi(request: web.Request) -> web.Response:
    return http.json_response(spec())


class ReplicaStore(GuardedStore, MeteredStore):
    """The store of a replica: writes checked against the data's schema, every request timed."""


def _migrations(s: CoordinatorSettings) -> list[schema.Migration]:
    found = migrations.registered(with_testing=s.testing_migration)
    schema.check(found)
    return found


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    s = app[SETTINGS]
    store = ReplicaStore(EtcdConfig.from_settings(s), known=schema.known(_migrations(s)), metrics=app[METRICS])
    await store.connect()
    app[STORE] = store
    yield
    await store.close()


def leader_loops(store: Store, s: CoordinatorSettings) -> list[election.Loop]:
    """The loops the elected replica runs (the migrations first: they rest once done)."""
    deployer = autodeploy.from_settings(s, __version__)
    watch = hostwatch.HostWatch(store, s, __version__, deployer)
    loops: list[election.Loop] = [migrate.Migrator(store, _migrations(s), s.replica_id).run, watch.run,
                                  polledhosts.PolledHostWatch(store, s).run, observedgc.ObservedGC(store, s).run]
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
    s, store = app[SETTINGS], app[STORE]
    known = schema.known(_migrations(s))
    el = election.Election(store, s.replica_id, s.leader_ttl, leader_loops(store, s),
                           eligible=functools.partial(schema.may_lead, store, known))
    app[ELECTION] = el
    app[FANOUT] = fanout = Fanout(store, s.stream_buffer, s.stream_history)
    app[CREDENTIALS] = credentials = HostCredentials(store)
    async with Supervisor() as supervisor:
        app[SUPERVISOR] = supervisor
        supervisor.start(fanout.run(), "fanout")
        supervisor.start(credentials.run(), "credentials")
        supervisor.start(presence.Presence(store, s.replica_id, known, __version__, s.leader_ttl).run(), "presence")
        supervisor.start(el.run(), "election")
        yield  # leaving cancels the election, which steps down (revokes its lease)


async def _schema_ctx(app: web.Application) -> AsyncIterator[None]:
    """Serve once the data's schema is known, and not older than this replica's (its migrations ran)."""
    store = app[STORE]
    assert isinstance(store, GuardedStore)
    said = False
    while True:
        try:
            found = await store.load_schema()
            if found.version >= store.known:
                break
            if not said:
                log.info("waiting for the data to reach schema %d (at %d): the elected replica migrates it",
                         store.known, found.version)
                said = True
        except StoreUnavailable as e:
            log.warning("reading the data's schema: %s", e)
        await asyncio.sleep(0.5)
    if found.version > store.known:
        log.warning("the data is at schema %d, newer than this replica's %d: it refuses writes under %s",
                    found.version, store.known, ", ".join(found.refused(store.known)))
    yield


async def _end_streams(app: web.Application) -> None:
    """The host streams end first thing at shutdown, before the server waits for open requests (theirs
    never finish by themselves)."""
    app[FANOUT].close()


def build(settings: CoordinatorSettings) -> web.Application:
    app = web.Application(middlewares=[httpmetrics.middleware, http.error_middleware], client_max_size=parse.MAX_BODY)
    app[SETTINGS] = settings
    app[HINTS] = Hints()
    metrics.install(app, Registry())
    app.cleanup_ctx.extend([_store_ctx, _background_ctx, _schema_ctx])
    app.on_shutdown.append(_end_streams)
    app.router.add_get("/v1/openapi.json", _openapi)
    for routes in RESOURCES:
        for ep in routes.endpoints:
            app.router.add_route(ep.method, ep.path, http.make_handler(ep), name=ep.handler.__name__)
    return app
