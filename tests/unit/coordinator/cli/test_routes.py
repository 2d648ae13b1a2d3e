"""Every call `hs` can make is a route the coordinator declares, with the body fields, query names, list
keys and columns its OpenAPI document (built from those declarations, without etcd) says it has."""

from __future__ import annotations

import importlib
import pkgutil
import re
from typing import Any

import pytest

from coordinator.app import spec
from coordinator.cli import commands
from coordinator.cli.commands import GROUPS, ceph, vms
from coordinator.cli.declare import Call, Nested, Resource

SPEC = spec()
SCHEMAS = SPEC["components"]["schemas"]
MODULES = [importlib.import_module(f"{commands.__name__}.{m.name}") for m in pkgutil.iter_modules(commands.__path__)]


def _route(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


OPERATIONS = {(method.upper(), _route(path)): op for path, ops in SPEC["paths"].items() for method, op in ops.items()}


def _calls() -> list[tuple[str, Call]]:
    """The commands' calls, and those the handlers make (declared at module level)."""
    found = [(f"hs {g.name} {c.verb}", c.action) for g in GROUPS for c in g.commands if isinstance(c.action, Call)]
    found += [(f"{m.__name__}.{name}", v) for m in MODULES for name, v in vars(m).items() if isinstance(v, Call)]
    return found


def _resources() -> list[Resource]:
    refs = {id(a.ref): a.ref for g in GROUPS for c in g.commands for a in c.args if a.ref is not None}
    refs.update({id(v): v for m in MODULES for v in vars(m).values() if isinstance(v, Resource)})
    return list(refs.values())


def _operations(call: Call) -> list[dict[str, Any]]:
    return [OPERATIONS[(call.method, _route(path))] for path in call.paths]


def _schema(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = SCHEMAS[schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _alternatives(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The object schemas a value may match (through $ref, anyOf and oneOf; null left out)."""
    schema = _schema(schema)
    subs = schema.get("anyOf") or schema.get("oneOf")
    if subs:
        return [alt for sub in subs for alt in _alternatives(sub)]
    return [] if schema.get("type") == "null" else [schema]


def _field(schema: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The schema of field `name` (or list index) of a value of `schema`; {} where it is free-form, None where
    no alternative has it."""
    for alt in _alternatives(schema):
        if alt.get("type") == "array" and name.isdigit():
            return alt.get("items", {})
        if "properties" not in alt:
            return {}
        if name in alt["properties"]:
            return alt["properties"][name]
    return None


def _body_schema(op: dict[str, Any]) -> dict[str, Any] | None:
    body = op.get("requestBody")
    return body["content"]["application/json"]["schema"] if body else None


def _missing_fields(fields: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> list[str]:
    missing = []
    for key, source in fields.items():
        sub = _field(schema, key)
        if sub is None:
            missing.append(prefix + key)
        elif isinstance(source, Nested):
            missing += _missing_fields(dict(source.fields), sub, f"{prefix}{key}.")
    return missing


@pytest.mark.parametrize(("where", "call"), _calls(), ids=[w for w, _ in _calls()])
def test_every_call_is_a_declared_route_with_its_body_and_query(where: str, call: Call):
    unknown = [path for path in call.paths if (call.method, _route(path)) not in OPERATIONS]
    assert not unknown, f"{where}: {call.method} {unknown} is no route"
    for op in _operations(call):
        schema = _body_schema(op)
        assert (call.body is not None) == (schema is not None), f"{where}: a body iff the route takes one"
        if schema is not None and call.body is not None:
            assert not _missing_fields(dict(call.body), schema), f"{where}: not in the request schema"
            required = set(_schema(schema).get("required", []))
            assert required <= set(call.body), f"{where}: required fields not sent: {required - set(call.body)}"
        query = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
        assert set(call.query) <= query, f"{where}: query names not declared: {set(call.query) - query}"


def _list_item(op: dict[str, Any], key: str) -> dict[str, Any]:
    answer = op["responses"]["200"]["content"]["application/json"]["schema"]
    field = _field(answer, key)
    assert field is not None, f"no {key} in the answer of {op['operationId']}"
    return field["items"]


def test_resources_are_listed_through_declared_routes():
    for resource in _resources():
        for path, key in resource.collections.items():
            op = OPERATIONS[("GET", path)]
            query = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
            assert set(resource.list_query) <= query
            item = _list_item(op, key)
            assert _path_exists(item, "uuid") and _path_exists(item, resource.name_field), resource.noun


def _path_exists(schema: dict[str, Any], path: str) -> bool:
    sub: dict[str, Any] | None = schema
    for part in path.split("."):
        if sub == {}:  # free-form below here
            return True
        sub = _field(sub, part) if sub is not None else None
    return sub is not None


def test_table_columns_are_fields_of_the_listed_objects():
    items = {}
    for g in GROUPS:
        for c in g.commands:
            if not c.columns:
                continue
            if c.action is ceph.list_storage:
                listed = [_list_item(OPERATIONS[("GET", p)], k) for p, k in ceph.STORAGE.collections.items()]
            else:
                call = vms.LIST if c.action is vms.list_vms else c.action
                assert isinstance(call, Call), f"hs {g.name} {c.verb}: columns of what?"
                op = OPERATIONS[("GET", _route(call.paths[0]))]
                key = next(iter(_schema(op["responses"]["200"]["content"]["application/json"]["schema"])
                                ["properties"]))
                listed = [_list_item(op, key)]
            own = {"host"} if c.action is vms.list_vms else set()  # a column the command adds (host names)
            items[f"hs {g.name} {c.verb}"] = [col for col in c.columns if col not in own for item in listed
                                               if not _path_exists(item, col)]
    unknown = {command: cols for command, cols in items.items() if cols}
    assert len(items) >= 10 and not unknown, unknown
