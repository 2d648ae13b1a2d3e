"""The aiohttp application behind one listening address of one L3 namespace.

Two kinds per namespace: on 169.254.169.254 the EC2 and OpenStack APIs, on the L3's DHCP address the
CloudStack-style API; both take IMDSv2 tokens. Every request is identified before routing, so an
unidentified sender gets 403 whatever it asks for, never a hint of what exists.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from flatnet.metadata import cloudstack, ec2, imds, openstack
from flatnet.metadata.identity import Identifier, identity_middleware
from flatnet.metadata.imds import TokenSigner, token_middleware
from flatnet.metadata.keys import IDENTIFIER, TOKENS

log = logging.getLogger(__name__)

Flavour = Callable[[web.UrlDispatcher], None]
IMDS_FLAVOURS: Sequence[Flavour] = (imds.add_routes, openstack.add_routes, ec2.add_routes)
DATA_SERVER_FLAVOURS: Sequence[Flavour] = (imds.add_routes, cloudstack.add_routes)


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """HTTP errors pass through; anything else is a bug: logged with its traceback, answered 500."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("metadata request failed", extra={"fields": {"path": request.path}})
        raise web.HTTPInternalServerError(text="Internal Server Error") from None


def build_app(flavours: Sequence[Flavour], identifier: Identifier, tokens: TokenSigner) -> web.Application:
    app = web.Application(middlewares=[error_middleware, identity_middleware, token_middleware])
    app[IDENTIFIER] = identifier
    app[TOKENS] = tokens
    for add_routes in flavours:
        add_routes(app.router)
    return app
