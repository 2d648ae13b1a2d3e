"""One `hs` run against the coordinator: resolve the uuid-or-name arguments, send declared calls, name
the objects an answer refers to by uuid, and say what a call answered with nothing did (`done`).

Each resource is listed at most once per run, however many arguments and answers refer to it.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from coordinator.cli.declare import Arg, Call, Const, Named, Nested, Resource, Source, dig, placeholders
from coordinator.cli.names import Found, pick
from coordinator.cli.render import rows
from coordinator.client import Client

ANSWER_TIME = 60.0  # seconds a call may take beyond the `wait` it asks the coordinator for
# what a call the API answers with nothing (204) did: the deletes, and `hs deploy ssh`
PAST = {"DELETE": "deleted", "PUT": "stored"}


class Session:
    """The client of one run, and the rows of each resource listed so far."""

    def __init__(self, client: Client):
        self.client = client
        self._rows: dict[Resource, list[Found]] = {}
        self.last: Call | None = None  # the call sent last: an error's field names one of its arguments
        self.unanswered: Call | None = None  # the call sent and not answered yet (what a Ctrl-C interrupts)

    async def resolve(self, args: Sequence[Arg], call: Call | None, a: argparse.Namespace) -> None:
        """Replace every uuid-or-name argument in `a` by the `Found` object it names. Values may be one
        reference, a list of them, or (reference, value) pairs such as `--ip L3=IP`. Errors name the
        argument and the field of `call`'s body it fills."""
        for spec in args:
            value = getattr(a, spec.dest)
            if spec.ref is not None and value is not None:
                setattr(a, spec.dest, await self._resolved(spec.ref, value, where(spec, call)))

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

    async def name(self, answer: object, refs: Sequence[Named]) -> None:
        """Add to the answer (one object, or each row of a list) the names of the objects `refs` name by uuid,
        each right after its uuid (see `Named`)."""
        listed = rows(answer)
        objects = [o for o in (listed if listed is not None else [answer]) if isinstance(o, dict)]
        for ref in refs:
            uuids = {str(o[ref.field]) for o in objects if o.get(ref.field)}
            names = await self._names(ref, uuids)
            for o in objects:
                if o.get(ref.field):
                    _beside(o, ref.field, ref.label, names.get(str(o[ref.field]), str(o[ref.field])))

    async def _names(self, ref: Named, uuids: set[str]) -> dict[str, str]:
        """uuid -> name of the objects `ref` looks in, listing its resources only until `uuids` are named."""
        names: dict[str, str] = {}
        for resource in ref.resources:
            if uuids.issubset(names):
                break
            for row in await self.rows(resource):
                inner = dig(row.row, ref.within) if ref.within else [row.row]
                for obj in inner if isinstance(inner, list) else []:
                    name = dig(obj, ref.name or resource.name_field)
                    if isinstance(name, str):
                        names[str(dig(obj, "uuid"))] = name
        return names

    async def send(self, call: Call, a: argparse.Namespace, **values: object) -> Any:
        """Make `call` with the arguments `a`; `values` add to them or override them. A call that asks the
        coordinator to `wait` may take that much longer than others."""
        args = argparse.Namespace(**{**vars(a), **values})
        self.last = call
        body = build(call.body, args) if call.body is not None else None
        query = {k: _query_text(v) for k, v in build(call.query, args).items()}
        key = uuid.uuid4().hex if call.once else None
        timeout = float(query["wait"]) + ANSWER_TIME if "wait" in query else None
        self.unanswered = call
        answer = await self.client.call(call.method, path_of(call, args), json=body, params=query or None,
                                        idempotent=call.idempotent, idempotency_key=key, timeout=timeout)
        self.unanswered = None
        return answer[1]


def _beside(obj: dict[str, Any], field: str, key: str, value: str) -> None:
    """Put `key: value` into `obj` right after `field`, so that a view prints a name under its uuid."""
    items = list(obj.items())
    obj.clear()
    for k, v in items:
        obj[k] = v
        if k == field:
            obj[key] = value


def where(spec: Arg, call: Call | None) -> str:
    """How an error names an argument: by its flag or metavar, and by the body field it fills."""
    fields = [key for key, source in ((call and call.body) or {}).items() if source == spec.dest]
    return f"argument {spec.label}" + "".join(f", field {f}" for f in fields)


def naming(args: Sequence[Arg], call: Call | None, field: str) -> str:
    """How an API error names its `field` (dotted, `ssh.password`): with the argument that filled it, in the body,
    the query or the path (the object of `/v1/vms/{uuid}/migrate` is the field `uuid`), when one did (the API's
    field names are not the command line's: `memory_mb` comes from `--memory`)."""
    fields: Mapping[str, Source] | None = None
    if call is not None:
        path = dict(zip(["uuid"], placeholders(call.paths[0]), strict=False))
        fields = {**path, **(call.body or {}), **call.query}
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


def done(call: Call, args: Sequence[Arg], a: argparse.Namespace) -> str:
    """What `hs` prints for a call the API answers with nothing: what it did to the object of the path's first
    placeholder, by kind, name and uuid (`deleted VM web (3b42…)`), or to a part of it (`stored ssh of host kvm1
    (…)`). The name is the one the argument was resolved by (no call of its own); an argument that refers to no
    listed resource (a tag's uuid) prints as given."""
    path = _template(call, a)
    first, *rest = placeholders(path)
    part = path.partition(f"{{{first}}}")[2].strip("/").format_map({n: str(getattr(a, n)) for n in rest})
    spec = next(s for s in args if s.dest == first)
    value = getattr(a, first)
    name = dig(value.row, spec.ref.name_field) if spec.ref is not None and isinstance(value, Found) else None
    noun = spec.ref.noun if spec.ref is not None else spec.label.lower()
    return f"{PAST[call.method]} {part + ' of ' if part else ''}{noun} {f'{name} ({value})' if name else value}"


def path_of(call: Call, args: argparse.Namespace) -> str:
    """The call's path with its placeholders filled in."""
    path = _template(call, args)
    return path.format_map({n: quote(str(getattr(args, n)), safe="") for n in placeholders(path)})


def _template(call: Call, args: argparse.Namespace) -> str:
    """The call's path (of several, the one the first placeholder's object was listed under)."""
    for path in call.paths:
        names = placeholders(path)
        first = getattr(args, names[0]) if names else None
        if len(call.paths) == 1 or (isinstance(first, Found) and path.startswith(first.collection + "/")):
            return path
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
