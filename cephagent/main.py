"""Composition root of the `cephagent` process: settings, the rados connection, the HTTP API.

Nothing connects at import time. The rados connection, the HTTP client session used for image
downloads and the task runner live in a `cleanup_ctx`, so they are closed in reverse order at shutdown.
Before them, the temp files of imports that the process's death interrupted are removed (nothing else would).
A cluster that cannot be reached at start-up stops the process (its supervisor restarts it).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web

from agentkit import config, dirlock, httpmetrics, tls
from agentkit.metrics import Registry
from agentkit.web import serve
from cephagent.api import routes
from cephagent.appkeys import CLUSTER, IMAGES, METRICS, SETTINGS, TASKS, VOLUMES, WORKERS
from cephagent.cluster import CephCluster
from cephagent.errors import ClusterUnavailable
from cephagent.images import Images, remove_leftovers
from cephagent.middleware import auth, errors
from cephagent.settings import CephAgentSettings
from cephagent.sources import Sources
from cephagent.tasks import Tasks
from cephagent.volumes import Volumes
from cephagent.workers import Workers

log = logging.getLogger(__name__)


async def ceph_ctx(app: web.Application) -> AsyncIterator[None]:
    s = app[SETTINGS]
    await asyncio.to_thread(remove_leftovers, s.tmp_dir)
    cluster = CephCluster(s.ceph_conf, s.client_name, s.keyring, s.mon_host, s.timeout)
    await asyncio.to_thread(cluster.connect)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=s.read_timeout)
    # image sources, image stores too; bodies as sent (sources.py asks for no encoding and refuses one)
    session = aiohttp.ClientSession(timeout=timeout, raise_for_status=False, auto_decompress=False,
                                    connector=aiohttp.TCPConnector(ssl=tls.outbound(s.tls)))
    volumes = Volumes(cluster)
    workers = Workers(s.long_operations, s.import_concurrency)
    app[WORKERS] = workers
    app[CLUSTER] = cluster
    app[VOLUMES] = volumes
    sources = Sources(session, s.file_url_roots, s.convert_timeout, s.tmp_reserve_percent, s.read_timeout)
    app[IMAGES] = Images(cluster, volumes, sources, workers, s.tmp_dir, s.write_window)
    app[TASKS] = Tasks(s.import_concurrency)
    workers.register(app[METRICS])  # read when scraped: no librados call in a scrape
    app[TASKS].register(app[METRICS])
    app[IMAGES].register(app[METRICS])
    try:
        yield
    finally:
        await app[TASKS].close()
        await asyncio.to_thread(workers.close)
        await session.close()
        await asyncio.to_thread(cluster.close)


def init_app(settings: CephAgentSettings) -> web.Application:
    app = web.Application(middlewares=[httpmetrics.middleware, errors, auth], client_max_size=1 << 20)
    app[SETTINGS] = settings
    app[METRICS] = Registry()
    httpmetrics.install(app, app[METRICS])
    app.cleanup_ctx.append(ceph_ctx)
    app.add_routes(routes)
    return app


def main(argv: list[str] | None = None) -> None:
    settings = config.from_command_line(CephAgentSettings, "cephagent", "HostStack agent on Ceph mon hosts", argv)
    dirlock.hold(Path(settings.tmp_dir), "cephagent")  # a second agent would remove its imports as leftovers
    try:
        serve("cephagent", settings, init_app)
    except ClusterUnavailable as e:
        log.error("%s", e)
        sys.exit(1)


if __name__ == "__main__":
    main()
