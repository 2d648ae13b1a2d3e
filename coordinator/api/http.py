"""HTTP edge of the coordinator: typed endpoints, errors, authentication and the OpenAPI spec.

Endpoints are declared once with `Routes.route(...)`; the same declaration validates requests with
pydantic, shapes the response, chooses who may call it and feeds `/v1/openapi.json`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

from agentkit.errors import HostStackError, error_body
from coordinator.api import parse
from coordinator.api.auth import CALLER, Auth, authenticate
from coordinator.etcd.store import StoreUnavailable

log = logging.getLogger(__name__)
Handler = Callable[..., Awaitable[object]]
H = TypeVar("H", bound=Handler)
Json = dict[str, Any]


def json_response(data: object, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, default=str))


@dataclass
class Endpoint:
    method: str
    path: str
    handler: Handler
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    response: type[BaseModel] | None
    status: int
    auth: Auth
    summary: str


class Routes:
    """The endpoints of one resource module."""

    def __init__(self, tag: str):
        self.tag = tag
        self.endpoints: list[Endpoint] = []

    def route(self, method: str, path: str, *, body: type[BaseModel] | None = None,
              query: type[BaseModel] | None = None, response: type[BaseModel] | None = None,
              status: int = 200, auth: Auth = "admin", summary: str = "") -> Callable[[H], H]:
        def deco(fn: H) -> H:
            self.endpoints.append(Endpoint(method, path, fn, body, query, response, status, auth,
                                           summary or (fn.__doc__ or "").strip().split("\n")[0]))
            return fn
        return deco


def make_handler(ep: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The aiohttp handler of an endpoint: authenticate, validate body and query, call, render.

    A handler returns a response, a model or JSON-able data (answered with the endpoint's status),
    or `(status, data)`; a 204 endpoint's handler returns None."""
    async def handler(request: web.Request) -> web.StreamResponse:
        request[CALLER] = await authenticate(request, ep.auth)
        parse.path_params(request)
        kwargs: dict[str, BaseModel] = {}
        if ep.body is not None:
            kwargs["body"] = await parse.body(request, ep.body)
        else:
            await parse.no_body(request)
        if (query := parse.query(request, ep.query)) is not None:
            kwargs["query"] = query
        result = await ep.handler(request, **kwargs)
        if result is None and ep.status == 204:
            return web.Response(status=204)
        if isinstance(result, web.StreamResponse):
            return result
        status = ep.status
        if isinstance(result, tuple):
            status, result = result
        if isinstance(result, BaseModel):
            result = result.model_dump(mode="json")
        return json_response(result, status)
    return handler


@web.middleware
async def error_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                           ) -> web.StreamResponse:
    """Every failure leaves as `{"error": {...}}` with a 4xx/5xx status; only bugs are 500s."""
    try:
        return await handler(request)
    except StoreUnavailable as e:
        log.warning("store unavailable: %s", e)
        return json_response(error_body(e.code, "the datastore is unreachable, retry"), e.status)
    except HostStackError as e:
        return json_response(e.body(), e.status)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return json_response(error_body(e.reason.lower().replace(" ", "_"), e.text or e.reason), e.status)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_response(error_body("internal", "internal error"), 500)


def openapi(all_routes: list[Routes], version: str) -> Json:
    """OpenAPI 3.0 document built from the endpoint declarations and their pydantic models."""
    paths: dict[str, Json] = {}
    schemas: dict[str, Json] = {}

    def ref(model: type[BaseModel]) -> Json:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            schemas[name] = sub
        schemas[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    for routes in all_routes:
        for ep in routes.endpoints:
            op: Json = {"tags": [routes.tag], "summary": ep.summary, "operationId": ep.handler.__name__}
            params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                      for n in _path_params(ep.path)]
            if ep.query is not None:
                props = ep.query.model_json_schema()["properties"]
                for name, f in ep.query.model_fields.items():
                    params.append({"name": f.alias or name, "in": "query", "required": f.is_required(),
                                   "schema": _present(props[f.alias or name])})
            if params:
                op["parameters"] = params
            if ep.body is not None:
                op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(ep.body)}}}
            ok: Json = {"description": "success"}
            if ep.response is not None:
                ok["content"] = {"application/json": {"schema": ref(ep.response)}}
            op["responses"] = {str(ep.status): ok, "4XX": {"description": "client error",
                               "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}}
            if ep.auth != "none":
                op["security"] = [{"bearer": []}]
            paths.setdefault(ep.path, {})[ep.method.lower()] = op
    schemas["Error"] = {"type": "object", "properties": {"error": {"type": "object", "properties": {
        "code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string", "nullable": True}}}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "HostStack coordinator", "version": version},
        "paths": paths,
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


def _present(schema: Json) -> Json:
    """A query parameter's schema without its `null` alternative: a query value is text or absent, never null."""
    alternatives = [a for a in schema.get("anyOf", []) if a != {"type": "null"}]
    if len(alternatives) != 1:
        return schema
    rest = {k: v for k, v in schema.items() if k not in ("anyOf", "default") or (k == "default" and v is not None)}
    return {**alternatives[0], **rest}


def _path_params(path: str) -> list[str]:
    return [seg[1:-1].split(":")[0] for seg in path.split("/") if seg.startswith("{")]
