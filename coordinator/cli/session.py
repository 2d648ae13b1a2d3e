"""One `hs` run against the coordinator: resolve the uuid-or-name arguments, then send declared calls.

Each resource is listed at most once per run, however many arguments refer to it.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from coordinator.cli.declare import Arg, Call, Const, Nested, Resource, Source, placeholders
from coordinator.cli.names import Found, pick
from coordinator.client import Client


class Session:
    """The client of one run, and the rows of each resource listed so far."""

    def __init__(self, client: Client):
        self.client = client
        self._rows: dict[Resource, list[Found]] = {}
        self.last: Call | None = None  # the call sent last: an error's field names one of its arguments

    async def resolve(self, args: Sequence[Arg], call: Call | None, a: argparse.Namespace) -> None:
        """Replace every uuid-or-name argument in `a` by the `Found` object it names. Values may be one
        reference, a list of them, or (reference, value) pairs such as `--ip L3=IP`. Errors name the
        argument and the field of `call`'s body it fills."""
        for spec in args:
            value = getattr(a, spec.dest)
            if spec.ref is not None and value is not None:
                setattr(a, spec.dest, await self._resolved(spec.ref, value, _where(spec, call)))

    async def _resolved(self, resource: Resource, value: object, where: str) -> object:
        if isinstance(value, list):
            return [await self._resolved(resource, v, where) for v in value]
        if isinstance(value, tuple):
            return (await self._resolved(resource, value[0], where), *value[1:])
        return pick(resource, await self.rows(resource), str(value), where)

    async def rows(self, resource: Resource) -> list[Found]:
        if resource not in self._rows:
            found = []
            for path, key in resource.collections.items():
                answer = await self.client.get(path, **resource.list_query)
                found += [Found(row, path) for row in answer[key]]
            self._rows[resource] = found
        return self._rows[resource]

    async def send(self, call: Call, a: argparse.Namespace, **values: object) -> Any:
        """Make `call` with the arguments `a`; `values` add to them or override them."""
        args = argparse.Namespace(**{**vars(a), **values})
        self.last = call
        body = build(call.body, args) if call.body is not None else None
        query = {k: _query_text(v) for k, v in build(call.query, args).items()}
        key = uuid.uuid4().hex if call.once else None
        return (await self.client.call(call.method, path_of(call, args), json=body, params=query or None,
                                       idempotent=call.idempotent, idempotency_key=key))[1]


def _where(spec: Arg, call: Call | None) -> str:
    """How an error names an argument: by its flag or metavar, and by the body field it fills."""
    fields = [key for key, source in ((call and call.body) or {}).items() if source == spec.dest]
    return f"argument {spec.label}" + "".join(f", field {f}" for f in fields)


def naming(args: Sequence[Arg], call: Call | None, field: str) -> str:
    """How an API error names its `field` (dotted, `ssh.password`): with the argument that filled it, when
    one did (the API's field names are not the command line's: `memory_mb` comes from `--memory`)."""
    fields: Mapping[str, Source] | None = call.body if call else None
    for part in field.split("."):
        source = fields.get(part) if fields else None
        if isinstance(source, Nested):
            fields = source.fields
            continue
        dest = source if isinstance(source, str) else part  # built by a function: the argument named like it
        spec = next((s for s in args if s.dest == dest), None)
        if spec is not None:
            return f"argument {spec.label}, field {field}"
        break
    return f"field {field}"


def path_of(call: Call, args: argparse.Namespace) -> str:
    """The call's path with its placeholders filled in (of several paths, the one the first
    placeholder's object was listed under)."""
    for path in call.paths:
        names = placeholders(path)
        first = getattr(args, names[0]) if names else None
        if len(call.paths) == 1 or (isinstance(first, Found) and path.startswith(first.collection + "/")):
            return path.format_map({n: quote(str(getattr(args, n)), safe="") for n in names})
    raise AssertionError(f"no path of {call.paths} fits {first!r}")


def build(fields: Mapping[str, Source], args: argparse.Namespace) -> dict[str, object]:
    """A body or query from its declaration; values that come out None are left out."""
    out: dict[str, object] = {}
    for key, source in fields.items():
        value = _value(source, args)
        if value is not None:
            out[key] = value
    return out


def _value(source: Source, args: argparse.Namespace) -> object:
    if isinstance(source, str):
        return getattr(args, source)
    if isinstance(source, Const):
        return source.value
    if isinstance(source, Nested):
        if source.when and not any(getattr(args, w) for w in source.when):
            return None
        return build(source.fields, args)
    return source(args)


def _query_text(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
