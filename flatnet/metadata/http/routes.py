"""Which handler answers an identified request on one listening address, after the IMDSv2 check.

The API flavours (`flavours/`) and the IMDSv2 token request (`imdsv2`) declare `ROUTES`. A handler gets
the `Request` and the path's named groups and returns an aiohttp `web.Response` or raises an aiohttp HTTP
error. Handlers are plain functions: every answer comes from memory, so nothing ever waits. As with
aiohttp's dispatcher, HEAD is served wherever GET is, a path served for other methods only gets 405, and
the token check runs before the handler, so in `required` mode a missing token is 401 even on unknown
paths.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from aiohttp import web

from flatnet.metadata.instance import Caller
from flatnet.metadata.tokens import TokenSigner

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Request:
    """What a handler may use: the parsed request, the VM NIC it was proven to come from, the token signer."""

    method: str
    path: str
    headers: Mapping[str, str]
    caller: Caller
    tokens: TokenSigner


Handler = Callable[[Request, Mapping[str, str]], web.Response]
Guard = Callable[[Request], float]


@dataclass(frozen=True)
class Route:
    """`pattern` must match the whole path; `token_free` routes skip the guard (the token request itself)."""

    method: str
    pattern: str
    handler: Handler
    token_free: bool = False
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regex", re.compile(self.pattern))

    def serves(self, method: str) -> bool:
        return method == self.method or (method == "HEAD" and self.method == "GET")


class Router:
    """The routes of one listening address, in order; `guard` enforces the IMDS mode and says until when
    the answer stays valid (a presented token's expiry)."""

    def __init__(self, routes: Sequence[Route], guard: Guard):
        self._routes = tuple(routes)
        self._guard = guard

    def answer(self, request: Request) -> tuple[web.Response, float]:
        """The response and until when it may be repeated for the same request; errors are responses too."""
        until = math.inf
        try:
            route, match = self._resolve(request)
            if not (isinstance(route, Route) and route.token_free):
                until = self._guard(request)
            if not isinstance(route, Route):
                raise route
            return route.handler(request, match), until
        except web.HTTPException as e:
            return e, until
        except Exception:
            log.exception("metadata request failed", extra={"fields": {"path": request.path}})
            return web.HTTPInternalServerError(text="Internal Server Error"), math.inf

    def _resolve(self, request: Request) -> tuple[Route | web.HTTPException, dict[str, str]]:
        allowed: list[str] = []
        for route in self._routes:
            m = route.regex.fullmatch(request.path)
            if m is None:
                continue
            if route.serves(request.method):
                return route, m.groupdict()
            allowed.append(route.method)
        if allowed:
            return web.HTTPMethodNotAllowed(request.method, sorted(set(allowed))), {}
        return web.HTTPNotFound(text="Not Found"), {}
