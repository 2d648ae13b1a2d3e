"""A small async client of the coordinator API, used by the CLI, the deployer, tests and benchmarks."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

from agentkit.tls import client_context

Params = str | int | float


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
    def __init__(self, url: str, token: str, timeout: float = 60, ca: Path | None = None):
        """`ca`: the CA that verifies an https coordinator (default: the system's CAs)."""
        self.url = url.rstrip("/")
        self.token = token  # for callers that reach the API by other means too (the deployer's deploy log)
        self.ca = ca
        self._session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"},
                                              timeout=aiohttp.ClientTimeout(total=timeout),
                                              connector=aiohttp.TCPConnector(ssl=client_context(ca)))

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._session.close()

    async def call(self, method: str, path: str, json: object | None = None,
                   params: Mapping[str, Params] | None = None) -> tuple[int, Any]:
        """(status, body) for any answer below 400; raises ApiClientError otherwise."""
        async with self._session.request(method, self.url + path, json=json, params=params) as r:
            body = await r.json(content_type=None) if r.status != 204 else None
            if r.status >= 400:
                raise ApiClientError(r.status, body)
            return r.status, body

    async def get(self, path: str, **params: Params) -> Any:
        return (await self.call("GET", path, params=params or None))[1]

    async def post(self, path: str, json: object | None = None, **params: Params) -> Any:
        return (await self.call("POST", path, json=json if json is not None else {}, params=params or None))[1]

    async def put(self, path: str, json: object, **params: Params) -> Any:
        return (await self.call("PUT", path, json=json, params=params or None))[1]

    async def patch(self, path: str, json: object) -> Any:
        return (await self.call("PATCH", path, json=json))[1]

    async def delete(self, path: str, **params: Params) -> Any:
        return (await self.call("DELETE", path, params=params or None))[1]
