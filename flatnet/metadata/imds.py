"""IMDSv2 session tokens: `PUT /latest/api/token`, then `X-aws-ec2-metadata-token` on every request.

A token is bound to the VM NIC that asked for it: HMAC(process secret, NIC uuid, expiry), so nothing is
stored and a token copied to another VM is worthless there. Per L3, `L3Spec.imds` makes tokens
`optional` (plain GETs allowed, a presented token must still be valid) or `required` (401 without one),
for every flavour served. Tokens die with the process; clients (cloud-init) re-PUT on 401.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import struct
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from flatnet.metadata.keys import CALLER, TOKENS

log = logging.getLogger(__name__)

TOKEN_HEADER = "X-aws-ec2-metadata-token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_PATH = "/latest/api/token"
_EXPIRY = struct.Struct("!Q")
_MAC_LEN = 20


class TokenSigner:
    """Issues and checks NIC-bound tokens with a secret that lives only in this process."""

    def __init__(self, max_ttl: int, clock: Callable[[], float] = time.monotonic):
        self._secret = secrets.token_bytes(32)
        self._clock = clock
        self.max_ttl = max_ttl

    def _mac(self, nic_uuid: str, expiry: bytes) -> bytes:
        return hmac.new(self._secret, nic_uuid.encode() + b"\0" + expiry, hashlib.sha256).digest()[:_MAC_LEN]

    def issue(self, nic_uuid: str, ttl: int) -> str:
        expiry = _EXPIRY.pack(int(self._clock()) + ttl)
        return base64.urlsafe_b64encode(expiry + self._mac(nic_uuid, expiry)).decode()

    def valid(self, token: str, nic_uuid: str) -> bool:
        try:
            raw = base64.urlsafe_b64decode(token.encode())
        except ValueError:
            return False
        if len(raw) != _EXPIRY.size + _MAC_LEN:
            return False
        expiry, mac = raw[: _EXPIRY.size], raw[_EXPIRY.size:]
        return hmac.compare_digest(mac, self._mac(nic_uuid, expiry)) and _EXPIRY.unpack(expiry)[0] > self._clock()


async def put_token(request: web.Request) -> web.Response:
    """Issue a token; like AWS, refuse requests relayed by a proxy (they carry X-Forwarded-For)."""
    caller = request[CALLER]
    if "X-Forwarded-For" in request.headers:
        log.warning("token request through a proxy refused", extra={"fields": {"nic": caller.nic.uuid}})
        raise web.HTTPForbidden(text="Forbidden")
    signer = request.app[TOKENS]
    try:
        ttl = int(request.headers[TTL_HEADER])
    except (KeyError, ValueError):
        raise web.HTTPBadRequest(text=f"{TTL_HEADER} must be an integer") from None
    if not 1 <= ttl <= signer.max_ttl:
        raise web.HTTPBadRequest(text=f"{TTL_HEADER} must be within 1..{signer.max_ttl}")
    return web.Response(text=signer.issue(caller.nic.uuid, ttl), headers={TTL_HEADER: str(ttl)})


@web.middleware
async def token_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Enforce the L3's IMDS mode on everything but the token request itself (runs after identification)."""
    if request.path == TOKEN_PATH and request.method == "PUT":
        return await handler(request)
    caller = request[CALLER]
    token = request.headers.get(TOKEN_HEADER)
    if token is None and caller.l3.imds == "optional":
        return await handler(request)
    if token is None or not request.app[TOKENS].valid(token, caller.nic.uuid):
        raise web.HTTPUnauthorized(text="Unauthorized")
    return await handler(request)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_put(TOKEN_PATH, put_token)
