"""A small async client of the coordinator API, used by the CLI, the deployer, tests and benchmarks.

Given several replica URLs (a list, or one comma-separated string), it sticks to one and moves to the
next when a replica cannot be reached or answers 502/503/504 — but only for calls that may be sent
twice: GET, PUT and DELETE, calls the caller marks `idempotent`, and POSTs carrying an
`Idempotency-Key` (a create the coordinator performs once per key). A DELETE whose retry answers 404
was done by the first attempt. Anything else fails with the error it got, as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from agentkit.tls import client_context

log = logging.getLogger(__name__)
Params = str | int | float
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
RETRY_STATUSES = frozenset({502, 503, 504})
ROUNDS = 3  # times every replica is tried for one call
PAUSE = 0.2  # seconds between rounds


class ApiClientError(Exception):
    """The API answered 4xx/5xx; carries its status, code, message and field."""

    def __init__(self, status: int, body: object):
        err = body.get("error", {}) if isinstance(body, dict) else {}
        self.status = status
        self.code = err.get("code", "http_error")
        self.field = err.get("field")
        self.message = err.get("message") or str(body)
        where = f" (field {self.field})" if self.field else ""
        super().__init__(f"HTTP {status} {self.code}: {self.message}{where}")


class Client:
    def __init__(self, url: str | Sequence[str], token: str, timeout: float = 60, ca: Path | None = None):
        """`ca`: the CA that verifies an https coordinator (default: the system's CAs)."""
        items = url.split(",") if isinstance(url, str) else url
        self.urls = [u.strip().rstrip("/") for u in items if u.strip()]
        if not self.urls:
            raise ValueError("no coordinator URL given")
        self._current = 0
        self.token = token  # for callers that reach the API by other means too (the deployer's deploy log)
        self.ca = ca
        self.retries = 0  # calls sent again to another replica (or the same one, after a pause)
        self._session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"},
                                              timeout=aiohttp.ClientTimeout(total=timeout),
                                              connector=aiohttp.TCPConnector(ssl=client_context(ca)))

    @property
    def url(self) -> str:
        """The replica calls go to now."""
        return self.urls[self._current]

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._session.close()

    async def call(self, method: str, path: str, json: object | None = None,
                   params: Mapping[str, Params] | None = None, *, idempotent: bool | None = None,
                   idempotency_key: str | None = None, timeout: float | None = None) -> tuple[int, Any]:
        """(status, body) for any answer below 400; raises ApiClientError otherwise (or the connection
        error when no replica could be reached, or the call may not be sent twice). `timeout`: seconds this call
        may take, in place of the client's."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        limit = aiohttp.ClientTimeout(total=timeout) if timeout is not None else self._session.timeout
        may_retry = idempotent if idempotent is not None else (method in IDEMPOTENT_METHODS or bool(idempotency_key))
        tries = len(self.urls) * ROUNDS if may_retry else 1
        for n in range(tries):
            if n and n % len(self.urls) == 0:
                await asyncio.sleep(PAUSE)
            last = n + 1 == tries
            try:
                async with self._session.request(method, self.url + path, json=json, params=params,
                                                 headers=headers, timeout=limit) as r:
                    body = await r.json(content_type=None) if r.status != 204 else None
            except aiohttp.ClientConnectionError as e:
                if last:
                    raise
                self._next(f"{type(e).__name__}: {e}")
                continue
            if r.status in RETRY_STATUSES and not last:
                self._next(f"HTTP {r.status}")
                continue
            if r.status == 404 and method == "DELETE" and n > 0:
                return 204, None  # an earlier attempt deleted it
            if r.status >= 400:
                raise ApiClientError(r.status, body)
            return r.status, body
        raise AssertionError("unreachable")  # the last try returns or raises

    def _next(self, why: str) -> None:
        log.info("coordinator %s: %s; trying %s", self.url, why, self.urls[(self._current + 1) % len(self.urls)])
        self._current = (self._current + 1) % len(self.urls)
        self.retries += 1

    async def get(self, path: str, **params: Params) -> Any:
        return (await self.call("GET", path, params=params or None))[1]

    async def post(self, path: str, json: object | None = None, *, idempotent: bool | None = None,
                   idempotency_key: str | None = None, **params: Params) -> Any:
        return (await self.call("POST", path, json=json if json is not None else {}, params=params or None,
                                idempotent=idempotent, idempotency_key=idempotency_key))[1]

    async def put(self, path: str, json: object, **params: Params) -> Any:
        return (await self.call("PUT", path, json=json, params=params or None))[1]

    async def patch(self, path: str, json: object) -> Any:
        return (await self.call("PATCH", path, json=json))[1]

    async def delete(self, path: str, **params: Params) -> Any:
        return (await self.call("DELETE", path, params=params or None))[1]
