"""Request guards of the cephagent: bearer-token authentication and one error format.

Every failure leaves as `{"error": {"code", "message", "field"}}` with a matching HTTP status; an
unexpected exception is logged with its traceback and answered 500, never 200.
"""

from __future__ import annotations

import hmac
import logging

from aiohttp import web

from cephagent.appkeys import SETTINGS
from cephagent.errors import CephAgentError, Unauthorized

log = logging.getLogger(__name__)


def _json_error(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, "field": field}}, status=status)


@web.middleware
async def errors(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except CephAgentError as e:
        if e.status >= 500:
            log.warning("%s %s: %s", request.method, request.path, e)
        return _json_error(e.status, e.code, e.message, e.field)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = e.reason.lower().replace(" ", "_")
        return _json_error(e.status, code, f"{request.method} {request.path}: {e.reason}")
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return _json_error(500, "internal", "internal error; see the cephagent log")


@web.middleware
async def auth(request: web.Request, handler) -> web.StreamResponse:
    """Every request must carry `Authorization: Bearer <token>` (compared in constant time)."""
    token = request.app[SETTINGS].token.get_secret_value().encode()
    given = request.headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token):
        err = Unauthorized()
        return web.json_response(err.body(), status=err.status, headers={"WWW-Authenticate": "Bearer"})
    return await handler(request)
