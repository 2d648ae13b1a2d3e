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
from coordinator.cli.commands import GROUPS, ceph, eips, storage
from coordinator.cli.declare import Call, Named, Nested, Resource, placeholders
from coordinator.cli.session import PAST

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


def test_every_list_filters_as_its_route_does():
    """`hs vm list --host`, `hs volume list --primary-storage`, `hs image list --backup-storage`: a list whose route
    takes a filter has it as a flag (`live`, whether agents are asked, is not a filter)."""
    for g in GROUPS:
        for c in g.commands:
            if isinstance(c.action, Call) and c.action.method == "GET" and not placeholders(c.action.paths[0]):
                filters = {p["name"] for op in _operations(c.action) for p in op.get("parameters", [])
                           if p["in"] == "query"} - {"live"}
                missing = filters - set(c.action.query)
                assert not missing, f"hs {g.name} {c.verb}: no flag for {missing}"


def _list_item(op: dict[str, Any], key: str) -> dict[str, Any]:
    field = _field(_answer(op), key)
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
                assert isinstance(c.action, Call), f"hs {g.name} {c.verb}: columns of what?"
                op = OPERATIONS[(c.action.method, _route(c.action.paths[0]))]
                listed = [_list_item(op, _list_key(op))]
            own = {ref.label for ref in c.names}  # the names `hs` adds
            items[f"hs {g.name} {c.verb}"] = [col for col in c.columns if col not in own for item in listed
                                               if not _path_exists(item, col)]
    unknown = {command: cols for command, cols in items.items() if cols}
    assert len(items) >= 10 and not unknown, unknown


def _list_key(op: dict[str, Any]) -> str:
    return next(iter(_schema(_answer(op))["properties"]))


def _answer(op: dict[str, Any]) -> dict[str, Any]:
    ok = next(code for code in op["responses"] if code.startswith("2") and "content" in op["responses"][code])
    return op["responses"][ok]["content"]["application/json"]["schema"]


def _answered(call: Call) -> dict[str, Any]:
    """The schema of the object the call answers with (of a row, when it answers with a list)."""
    op = OPERATIONS[(call.method, _route(call.paths[0]))]
    props = _schema(_answer(op)).get("properties", {})
    if len(props) == 1 and _schema(next(iter(props.values()))).get("type") == "array":
        return _list_item(op, _list_key(op))
    return _answer(op)


def _lists(call: Call) -> bool:
    """Whether the call answers with a list (`{"vms": [...]}`), which `hs` prints as a table."""
    op = OPERATIONS[(call.method, _route(call.paths[0]))]
    if not any(code.startswith("2") and "content" in answer for code, answer in op["responses"].items()):
        return False  # answered with nothing
    props = _schema(_answer(op)).get("properties", {})
    return len(props) == 1 and _schema(next(iter(props.values()))).get("type") == "array"


def test_every_list_prints_as_a_table_of_chosen_columns():
    """`hs vm create-batch` prints the VMs it made as `hs vm list` does, not a column per field, JSON in cells."""
    bare = [f"hs {g.name} {c.verb}" for g in GROUPS for c in g.commands
            if isinstance(c.action, Call) and _lists(c.action) and not c.columns]
    assert not bare


def _named_objects(ref: Named, resource: Resource) -> list[dict[str, Any]]:
    """The schemas of the objects `ref` takes names from: the resource's rows, or the items `within` them."""
    found = []
    for path, key in resource.collections.items():
        item: dict[str, Any] | None = _list_item(OPERATIONS[("GET", path)], key)
        for part in (f"{ref.within}.0".split(".") if ref.within else []):
            item = _field(item, part) if item is not None else None
        assert item, f"{ref.within} of {resource.noun}"
        found.append(item)
    return found


NAMING = {f"hs {g.name} {c.verb}": c for g in GROUPS for c in g.commands if c.names}


@pytest.mark.parametrize("command", list(NAMING.values()), ids=list(NAMING))
def test_names_are_of_uuids_the_answer_holds_put_under_a_key_it_does_not(command):
    handled = ((storage.migrate, storage.MIGRATE), (storage.detach, storage.DETACH),  # a handler: the call it answers
               (eips.attach, eips.ATTACH))
    call = next((c for h, c in handled if command.action is h), command.action)
    assert isinstance(call, Call), "name the call the handler answers with"
    answer = _answered(call)
    for ref in command.names:
        assert _path_exists(answer, ref.field) and not _path_exists(answer, ref.label), ref
        for resource in ref.resources:
            for named in _named_objects(ref, resource):
                assert _path_exists(named, "uuid") and _path_exists(named, ref.name or resource.name_field), ref


EMPTY = {f"hs {g.name} {c.verb}": c for g in GROUPS for c in g.commands
         if isinstance(c.action, Call) and any("204" in op["responses"] for op in _operations(c.action))}


@pytest.mark.parametrize("command", list(EMPTY.values()), ids=list(EMPTY))
def test_a_command_answered_with_nothing_names_what_it_did_to_which_argument(command):
    first = placeholders(command.action.paths[0])[:1]
    assert command.action.method in PAST and [a.dest for a in command.args if a.dest in first] == first


def test_every_past_tense_is_of_a_command_answered_with_nothing():
    assert {c.action.method for c in EMPTY.values()} == set(PAST)
