"""IMDSv2 over HTTP: `PUT /latest/api/token`, then `X-aws-ec2-metadata-token` on every request.

Per L3, `L3Spec.imds` makes tokens `optional` (plain GETs allowed, a presented token must still be
valid) or `required` (401 without one), for every flavour served: `check` is the guard every site's
`Router` runs, `ROUTES` the token request both listening addresses serve. Tokens: `metadata/tokens.py`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

from aiohttp import hdrs, web

from flatnet.metadata.http.routes import Request, Route

log = logging.getLogger(__name__)

TOKEN_HEADER = "X-aws-ec2-metadata-token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_PATH = "/latest/api/token"


def put_token(request: Request, match: Mapping[str, str]) -> web.Response:
    """Issue a token; like AWS, refuse requests relayed by a proxy (they carry X-Forwarded-For)."""
    caller = request.caller
    if hdrs.X_FORWARDED_FOR in request.headers:
        log.warning("token request through a proxy refused", extra={"fields": {"nic": caller.nic.uuid}})
        raise web.HTTPForbidden(text="Forbidden")
    try:
        ttl = int(request.headers[TTL_HEADER])
    except (KeyError, ValueError):
        raise web.HTTPBadRequest(text=f"{TTL_HEADER} must be an integer") from None
    if not 1 <= ttl <= request.tokens.max_ttl:
        raise web.HTTPBadRequest(text=f"{TTL_HEADER} must be within 1..{request.tokens.max_ttl}")
    return web.Response(text=request.tokens.issue(caller.nic.uuid, ttl), headers={TTL_HEADER: str(ttl)})


def check(request: Request) -> float:
    """Enforce the L3's IMDS mode (not on the token request itself): until when the answer stays valid,
    which is the token's expiry when one is presented. HTTPUnauthorized if the mode is not met."""
    token = request.headers.get(TOKEN_HEADER)
    if token is None:
        if request.caller.l3.imds == "optional":
            return math.inf
        raise web.HTTPUnauthorized(text="Unauthorized")
    until = request.tokens.expiry(token, request.caller.nic.uuid)
    if until is None:
        raise web.HTTPUnauthorized(text="Unauthorized")
    return until


ROUTES = [Route("PUT", TOKEN_PATH, put_token, token_free=True)]
