"""Token resolution at the coordinator: the proxy asks, with its own credential, what a user's token grants.

`POST /v1/console-proxies/{uuid}/grants {"token": T}` answers the grant (VM, kind, the seconds left to
connect, the host's tunnel URL and a ticket for it) or 404 `token_unknown`. The coordinator keeps tokens in
etcd under a lease, so a token it no longer knows is refused. Its other refusals of the token (4xx: 404
`console_gone` once the VM was deleted) are passed on as they are; a refusal of the proxy's own credential
(401, 403), a 5xx or no answer means the proxy cannot check tokens now: unavailable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from consoleproxy.errors import CoordinatorRefused, CoordinatorUnavailable, TokenUnknown
from consoleproxy.grants import Grant


class CoordinatorResolver:
    def __init__(self, session: aiohttp.ClientSession, url: str, proxy_uuid: str, timeout: float,
                 headers: Callable[[], dict[str, str]]):
        """`headers()`: the proxy's credential now (its presence renews it)."""
        self.session = session
        self.url = f"{url.rstrip('/')}/v1/console-proxies/{proxy_uuid}/grants"
        self.timeout = timeout
        self.headers = headers

    async def resolve(self, token: str) -> Grant:
        try:
            async with asyncio.timeout(self.timeout), self.session.post(self.url, json={"token": token},
                                                                        headers=self.headers()) as r:
                body: Any = await r.json(content_type=None)
        except TimeoutError as e:
            raise CoordinatorUnavailable(why=f"no answer within {self.timeout:g} s") from e
        except (aiohttp.ClientError, OSError, ValueError) as e:
            raise CoordinatorUnavailable(why=str(e) or type(e).__name__) from e
        if r.status == 200 and isinstance(body, dict):
            try:
                left = (float(body["expires_in"]) if "expires_in" in body
                        else float(body["expires_at"]) - time.time())  # an older coordinator's: its instant
                return Grant(vm=body["vm"], kind=body["kind"], expires_in=left, tunnel_url=body["tunnel_url"],
                             ticket=body["ticket"])
            except (KeyError, TypeError, ValueError) as e:
                raise CoordinatorUnavailable(why=f"unexpected grant {body!r}") from e
        error = body.get("error", {}) if isinstance(body, dict) else {}
        if r.status == 404 and error.get("code") == "token_unknown":
            raise TokenUnknown()
        if 400 <= r.status < 500 and r.status not in (401, 403):
            raise CoordinatorRefused(r.status, str(error.get("code", "refused")), str(error.get("message", body)))
        raise CoordinatorUnavailable(why=f"HTTP {r.status}: {error.get('message', body)}")
