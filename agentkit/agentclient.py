"""The base of our clients of agents' JSON APIs (cephagent, imagestore): one way to call, one way to fail.

A call returns the decoded JSON answer or raises: the subclass's `remote` error rebuilt from the
agent's `{"error": {...}}` envelope (its code, status, message and field), or its `unreachable` error
when the agent does not answer, or answers something of the wrong shape. Pass a shared `session`, or
close() the client (or use `async with`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Self, TypeVar

import aiohttp
from pydantic import BaseModel, ValidationError

from agentkit.errors import HostStackError, RemoteError

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


class AgentClient:
    remote: ClassVar[type[RemoteError]] = RemoteError
    unreachable: ClassVar[type[HostStackError]]  # raised with url= and reason=

    def __init__(self, base_url: str, token: str, session: aiohttp.ClientSession | None = None,
                 timeout: float = 60):
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._own_session = session is None
        self._session = session
        self.timeout = timeout

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(self, method: str, path: str, body: BaseModel | dict[str, Any] | None = None,
                    timeout: float | None = None) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        payload = body.model_dump(mode="json", exclude_none=True) if isinstance(body, BaseModel) else body
        url = self.base_url + path
        try:
            async with self._session.request(method, url, json=payload, headers=self._headers,
                                             timeout=aiohttp.ClientTimeout(total=timeout or self.timeout)) as resp:
                data = await resp.json(content_type=None) if resp.status != 204 else None
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise self.unreachable(url=self.base_url, reason=f"{method} {path}: {type(e).__name__}: {e}") from e
        if resp.status >= 400:
            envelope = data.get("error") if isinstance(data, dict) else None
            err = {k: v for k, v in envelope.items() if isinstance(v, str)} if isinstance(envelope, dict) else {}
            raise self.remote(resp.status, err.get("code", "unknown"), err.get("message", resp.reason or ""),
                              err.get("field"))
        return data

    async def _call_as(self, method: str, path: str, validate: Callable[[Any], T],
                       body: BaseModel | dict[str, Any] | None = None, timeout: float | None = None) -> T:
        """`_call`'s answer as `validate` makes it; an answer of another shape is no answer (`unreachable`):
        what an agent says must not crash its caller."""
        data = await self._call(method, path, body, timeout)
        try:
            return validate(data)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "body"
            raise self.unreachable(url=self.base_url, reason=f"{method} {path}: a malformed answer ({where}: "
                                   f"{err['msg']})") from e

    async def _get(self, path: str, model: type[M]) -> M:
        return await self._call_as("GET", path, model.model_validate)
