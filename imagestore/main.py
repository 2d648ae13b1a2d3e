"""Composition root of the `imagestore` process: settings, the catalog and its downloads, the HTTP API.

Nothing happens at import time. The Supervisor that runs the downloads and the catalog (which resumes
unfinished downloads) live in one `cleanup_ctx`, holding the store's directory: at shutdown the downloads
are cancelled (their partial data stays, to resume at the next start). A directory that cannot be used
(another agent's, read-only) ends the process with one line; a bug in a download ends it too
(agentkit.supervise).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

from aiohttp import web

from agentkit import config, httpmetrics
from agentkit.metrics import Registry
from agentkit.supervise import Supervisor
from agentkit.web import serve
from imagestore.api import routes
from imagestore.appkeys import CATALOG, METRICS, SETTINGS, TALLY, TICKET_KEY
from imagestore.catalog import Catalog
from imagestore.download import Policy
from imagestore.errors import RootUnusable
from imagestore.layout import Layout
from imagestore.middleware import auth, errors
from imagestore.settings import ImageStoreSettings
from imagestore.sources import Sources
from imagestore.tally import Tally
from imagestore.tickets import ticket_key


async def store_ctx(app: web.Application) -> AsyncIterator[None]:
    s = app[SETTINGS]
    policy = Policy(retries=s.retries, checkpoint_bytes=s.checkpoint_bytes, reserve_bytes=s.reserve_bytes,
                    max_size=s.max_image_size)
    supervisor = Supervisor()
    catalog = Catalog(Layout(s.root), Sources(s.file_url_roots, s.read_timeout), policy, supervisor, app[TALLY],
                      s.download_concurrency, s.inspect_timeout)
    app[CATALOG] = catalog
    catalog.register(app[METRICS])
    with catalog.layout.held():
        try:
            catalog.load()
            yield
        finally:
            await supervisor.stop()  # before another agent may take the directory


def init_app(settings: ImageStoreSettings) -> web.Application:
    app = web.Application(middlewares=[httpmetrics.middleware, errors, auth], client_max_size=1 << 20)
    app[SETTINGS] = settings
    app[METRICS], app[TALLY] = Registry(), Tally()
    httpmetrics.install(app, app[METRICS])
    app[TALLY].register(app[METRICS])
    app[TICKET_KEY] = ticket_key(settings.token.get_secret_value())
    app.cleanup_ctx.append(store_ctx)
    app.add_routes(routes)
    return app


def main(argv: list[str] | None = None) -> None:
    settings = config.from_command_line(ImageStoreSettings, "imagestore", "HostStack image store", argv)
    try:
        serve("imagestore", settings, init_app)
    except RootUnusable as e:
        sys.exit(f"imagestore: {e}")


if __name__ == "__main__":
    main()
