"""Untrusted request parts in, typed values out: the one place the API reads what a client sent.

Strict by construction, so that no input yields a 5xx or is silently taken for something else:
- a body is UTF-8 JSON of at most `MAX_BODY` bytes (under etcd's request limit, so what is accepted fits
  one transaction), nested no deeper than pydantic's parser allows, with finite numbers that fit int64
  or a double; it is validated in strict mode (`"4"` is not 4, `true` is not 1) and an unknown field
  anywhere is refused, naming it;
- query values are text by nature and are converted, but an unknown or repeated parameter is refused;
- path parameters are visible ASCII without `/`, so an id never spans two etcd key segments.
Bearer tokens are read by agentkit/bearer.py. A size over a declared limit is a 413 naming the limit;
every other failure to parse is a 400.
"""

from __future__ import annotations

import math
import re
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError
from pydantic_core import from_json

from agentkit.errors import HostStackError, Invalid, TooLarge

M = TypeVar("M", bound=BaseModel)
MAX_BODY = 1 << 20  # etcd refuses requests over 1.5 MiB (its default --max-request-bytes)
INT_LIMIT = 1 << 63  # int64: what etcd revisions and most JSON peers carry
PATH_PARAM = re.compile(r"^[\x21-\x2e\x30-\x7e]{1,253}$")  # visible ASCII but '/'
_TOO_LARGE = {"string_too_long", "too_long", "bytes_too_long"}


def path_params(request: web.Request) -> None:
    """Invalid, naming the parameter, unless every path parameter is one identifier."""
    for name, value in request.match_info.items():
        if not PATH_PARAM.match(value):
            raise Invalid(f"path parameter {name}: {value[:40]!r} is not an identifier (visible ASCII "
                          "without '/', at most 253 characters)", field=name)


async def _json(request: web.Request) -> tuple[bytes, object]:
    """The body's bytes and what they parse to (an empty body is `{}`)."""
    charset = request.charset
    if charset is not None and charset.lower().replace("-", "").replace("_", "") != "utf8":
        raise Invalid(f"request body charset {charset[:40]!r} is not supported: send UTF-8 JSON")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise TooLarge(f"the request body is larger than the limit of {MAX_BODY} bytes") from None
    raw = raw if raw.strip() else b"{}"
    try:
        doc = from_json(raw, allow_inf_nan=False)
    except ValueError as e:
        raise Invalid(f"request body is not JSON: {e}") from None
    check_numbers(doc, "body")
    return raw, doc


async def no_body(request: web.Request) -> None:
    """An endpoint without a body model takes none: nothing, or the empty object clients send."""
    if request.body_exists and (await _json(request))[1] != {}:
        raise Invalid("this endpoint takes no request body")


async def body(request: web.Request, model: type[M]) -> M:
    """The JSON body validated as `model`: strict types, no unknown fields, sane numbers."""
    raw, _ = await _json(request)
    try:
        return model.model_validate_json(raw, strict=True, extra="forbid")
    except ValidationError as e:
        raise invalid(e, "body") from None


def query(request: web.Request, model: type[M] | None) -> M | None:
    """The query string validated as `model` (None: the endpoint takes no query parameters)."""
    params = request.query
    for name in params:
        if model is None:
            raise Invalid(f"unknown query parameter {name[:40]!r}", field=name[:40])
        if len(params.getall(name)) > 1:
            raise Invalid(f"query parameter {name[:40]!r} is given more than once", field=name[:40])
    if model is None:
        return None
    try:
        parsed = model.model_validate(dict(params), extra="forbid")
    except ValidationError as e:
        raise invalid(e, "query") from None
    check_numbers(parsed.model_dump(), "query")
    return parsed


def check_numbers(doc: object, where: str) -> None:
    """Refuse NaN, infinities (1e999 parses as one) and integers beyond int64, naming the field."""
    stack: list[tuple[object, str]] = [(doc, "")]
    while stack:
        value, loc = stack.pop()
        if isinstance(value, dict):
            stack.extend((v, f"{loc}.{k}" if loc else str(k)) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, f"{loc}.{i}" if loc else str(i)) for i, v in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            raise Invalid(f"{where} field {loc or '(whole)'}: numbers must be finite", field=loc or None)
        elif isinstance(value, int) and not isinstance(value, bool) and not -INT_LIMIT < value < INT_LIMIT:
            raise Invalid(f"{where} field {loc or '(whole)'}: integers must fit in 64 bits", field=loc or None)


def invalid(e: ValidationError, where: str) -> HostStackError:
    """The first validation error as a domain error naming the field (an unknown field first: a misspelt
    name is more use than the missing field it meant): 413 for a size over a declared limit (the message
    names it), else 400."""
    errors = e.errors()
    err = next((x for x in errors if x["type"] == "extra_forbidden"), errors[0])
    msg = err["msg"].removeprefix("Value error, ")
    loc = ".".join(str(p) for p in err["loc"])
    if not loc and ": " in msg:  # model-level validators name their field first: "<field>: <reason>"
        loc, msg = msg.split(": ", 1)
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    error = TooLarge if err["type"] in _TOO_LARGE else Invalid
    return error(f"{where} field {loc or '(whole)'}: {msg}", field=loc or None)
