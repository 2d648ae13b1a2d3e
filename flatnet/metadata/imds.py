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
import math
import secrets
import struct
import time
from collections.abc import Callable, Mapping

from aiohttp import hdrs, web

from flatnet.metadata.routes import Request, Route

log = logging.getLogger(__name__)

TOKEN_HEADER = "X-aws-ec2-metadata-token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_PATH = "/latest/api/token"
_EXPIRY = struct.Struct("!Q")
_MAC_LEN = 20


class TokenSigner:
    """Issues and checks NIC-bound tokens with a secret that lives only in this process. The server's signer
    keeps the default monotonic clock: kept replies to token requests expire on it."""

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
        return self.expiry(token, nic_uuid) is not None

    def expiry(self, token: str, nic_uuid: str) -> float | None:
        """When a token issued to `nic_uuid` expires (on this signer's clock); None if it is not valid now."""
        try:
            raw = base64.urlsafe_b64decode(token.encode())
        except ValueError:
            return None
        if len(raw) != _EXPIRY.size + _MAC_LEN:
            return None
        expiry, mac = raw[: _EXPIRY.size], raw[_EXPIRY.size:]
        until = float(_EXPIRY.unpack(expiry)[0])
        return until if hmac.compare_digest(mac, self._mac(nic_uuid, expiry)) and until > self._clock() else None


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
