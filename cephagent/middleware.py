"""Request guards of the cephagent: bearer-token authentication and one error format.

Every failure leaves as the shared envelope `{"error": {"code", "message", "field"}}` with a matching
HTTP status; an unexpected exception is logged with its traceback and answered 500, never 200.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from agentkit import bearer
from agentkit.errors import HostStackError, error_body
from cephagent.appkeys import SETTINGS
from cephagent.errors import Unauthorized

log = logging.getLogger(__name__)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except HostStackError as e:
        if e.status >= 500:
            log.warning("%s %s: %s", request.method, request.path, e)
        return web.json_response(e.body(), status=e.status)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = e.reason.lower().replace(" ", "_")
        return web.json_response(error_body(code, f"{request.method} {request.path}: {e.reason}"), status=e.status)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return web.json_response(error_body("internal", "internal error; see the cephagent log"), status=500)


@web.middleware
async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request must carry `Authorization: Bearer <token>` (compared in constant time)."""
    if not bearer.matches(request.headers.get("Authorization", ""), request.app[SETTINGS].token.get_secret_value()):
        err = Unauthorized()
        return web.json_response(err.body(), status=err.status, headers={"WWW-Authenticate": "Bearer"})
    return await handler(request)
