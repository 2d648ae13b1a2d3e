"""Request guards of the cephagent: bearer-token authentication and one error format.

Every failure leaves as the shared envelope `{"error": {"code", "message", "field"}}` with a matching
HTTP status; an unexpected exception is logged with its traceback and answered 500, never 200.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from agentkit import bearer
from agentkit.web import error_middleware
from cephagent.appkeys import SETTINGS
from cephagent.errors import Unauthorized

errors = error_middleware("cephagent")


@web.middleware
async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request must carry `Authorization: Bearer <token>` (compared in constant time)."""
    if not bearer.matches(request.headers.get("Authorization", ""), request.app[SETTINGS].token.get_secret_value()):
        err = Unauthorized()
        return web.json_response(err.body(), status=err.status, headers={"WWW-Authenticate": "Bearer"})
    return await handler(request)
