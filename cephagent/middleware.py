"""Request guards of the cephagent: bearer-token authentication and one error format.

The agent's `token` opens every path; the scrapers' `metrics_token` only `SCRAPED` (it can read no volume, image
or key, nor change anything).

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


SCRAPED = frozenset({"/metrics", "/health"})  # what the scrapers' metrics_token reads


@web.middleware
async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request must carry `Authorization: Bearer <token>`, of one of the tokens its path takes (compared in
    constant time)."""
    s = request.app[SETTINGS]
    tokens = [s.token, *([s.metrics_token] if s.metrics_token is not None and request.path in SCRAPED else [])]
    header = request.headers.get("Authorization", "")
    if not any(bearer.matches(header, t.get_secret_value()) for t in tokens):
        err = Unauthorized()
        return web.json_response(err.body(), status=err.status, headers={"WWW-Authenticate": "Bearer"})
    return await handler(request)
