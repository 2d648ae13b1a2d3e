"""Every route of /v1/openapi.json fuzzed against a real etcd and coordinator (issue 14).

Schemathesis sends generated requests, valid and invalid, and checks the answers against the document;
then the input shapes the issue lists are sent by hand to every route: odd tokens, path ids, query
parameters, unparseable and oversized bodies, and each body field set to values of every wrong kind.
Zero 5xx, every error in the `{"error": {"code", "message", "field"}}` envelope, the stored state still
readable, and the coordinator's log free of tracebacks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import DataGenerationMethod, GenerationConfig
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from coordinator.api.parse import MAX_BODY
from testbed.cloudinit import GUEST_KEY

pytestmark = pytest.mark.real
STREAM = "/v1/hosts/{uuid}/stream"  # never ends: tested in test_strict_api.py
schema = schemathesis.from_pytest_fixture("openapi", data_generation_methods=DataGenerationMethod.all(),
                                          generation_config=GenerationConfig(with_security_parameters=False))


def negative_body_rejected(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis' negative_data_rejection, for bodies only: query and path values are text, so a value of
    "another type" there (`live=0`, `resourceUuid=1.5`) can be a valid one."""
    meta = case.meta
    others = (meta.query, meta.path_parameters, meta.headers, meta.cookies) if meta else ()
    if meta is None or meta.body is None or not meta.body.is_negative or any(m and m.is_negative for m in others):
        return None
    return negative_data_rejection(ctx, response, case)


CHECKS = (not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          ignored_auth, negative_body_rejected)


@pytest.fixture(scope="module")
def openapi(coordinator):
    return schemathesis.from_uri(f"{coordinator.url}/v1/openapi.json", base_url=coordinator.url)


@schema.exclude(path=STREAM).parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_schemathesis(case, token):
    auth = {"Authorization": f"Bearer {token}"}  # given, not generated: `ignored_auth` then tries it without
    case.headers = case.headers or {}  # where `ignored_auth` puts a wrong token
    response = case.call(headers=auth, timeout=30)
    case.validate_response(response, checks=CHECKS, headers=auth, transport_kwargs={"headers": auth, "timeout": 30})


class Sender:
    """Raw requests to the coordinator; every answer must be below 500 and an error must be the envelope."""

    def __init__(self, url: str, token: str):
        self.url, self.token = url, token
        self.session = requests.Session()
        self.sent = 0

    def send(self, method: str, path: str, data: bytes | str | None = None, headers: dict[str, str] | None = None,
             params: list[tuple[str, str]] | None = None, token: str | None = None) -> requests.Response:
        auth = {"Authorization": f"Bearer {token or self.token}", "Content-Type": "application/json"}
        if isinstance(data, str):
            data = data.encode()
        r = self.session.request(method, self.url + path, data=data, params=params, headers={**auth, **(headers or {})},
                                 timeout=60)
        self.sent += 1
        shown = f"{method} {path} {params or ''} {(data or b'')[:120]!r}"
        assert r.status_code < 500, f"{shown}: {r.status_code} {r.text[:500]}"
        if r.status_code >= 400:
            body = r.json()
            assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}, f"{shown}: {body}"
        return r

    def json(self, method: str, path: str, body: object, **kw: Any) -> requests.Response:
        return self.send(method, path, json.dumps(body), **kw)


@pytest.fixture(scope="module")
def sender(coordinator, token):
    s = Sender(coordinator.url, token)
    yield s
    s.session.close()


@pytest.fixture(scope="module")
def world(sender, run) -> dict[str, str]:
    """One of each object, so that routes with an id reach their body and domain checks."""
    net, public = run.subnet(), run.subnet()
    host = sender.json("POST", "/v1/hosts", {"name": "fuzz-host", "address": "198.18.0.9"}).json()
    l2 = sender.json("POST", "/v1/l2-networks", {"name": "fuzz", "physical_interface": "eth1"}).json()
    l3 = sender.json("POST", "/v1/l3-networks", {"name": "fuzz", "l2_uuid": l2["uuid"], "cidr": str(net),
                                                 "services": ["DHCP", "EIP"]}).json()
    pub = sender.json("POST", "/v1/l3-networks", {"name": "fuzz-pub", "l2_uuid": l2["uuid"], "cidr": str(public),
                                                  "public": True}).json()
    vm = sender.json("POST", "/v1/vms", {"name": "fuzz", "host_uuid": host["uuid"], "state": "Stopped",
                                         "l3_network_uuids": [l3["uuid"]], "system_tags": ["userdata::a: 1"]}).json()
    tag = sender.send("GET", "/v1/system-tags", params=[("resourceUuid", vm["uuid"])]).json()["tags"][0]
    eip = sender.json("POST", "/v1/eips", {"name": "fuzz", "public_l3_uuid": pub["uuid"]}).json()
    return {"host": host["uuid"], "l2": l2["uuid"], "l3": l3["uuid"], "vm": vm["uuid"],
            "nic": vm["spec"]["nics"][0]["uuid"], "tag": tag["uuid"], "eip": eip["uuid"]}


IDS = {"/v1/hosts/": "host", "/v1/vms/": "vm", "/v1/l2-networks/": "l2", "/v1/l3-networks/": "l3",
       "/v1/system-tags/": "tag", "/v1/eips/": "eip"}


def bases(world: dict[str, str]) -> dict[tuple[str, str], dict[str, Any]]:
    """A valid body per body route that has one worth changing field by field."""
    return {
        ("POST", "/v1/hosts"): {"name": "fz", "address": "198.18.0.10"},
        ("POST", "/v1/l2-networks"): {"name": "fz", "physical_interface": "eth1", "vlan": 5},
        ("POST", "/v1/l3-networks"): {"name": "fz", "l2_uuid": world["l2"], "cidr": "198.19.7.0/24",
                                      "ip_ranges": [{"start": "198.19.7.10", "end": "198.19.7.20"}]},
        ("POST", "/v1/vms"): {"name": "fz", "host_uuid": world["host"], "state": "Stopped", "cpu": 1,
                              "l3_network_uuids": [world["l3"]], "system_tags": ["userdata::x"],
                              "kernel": {"kernel": "k", "cmdline": "console=ttyS0"},
                              "root_volume": {"kind": "file", "path": "fz/root.qcow2"}},
        ("POST", "/v1/system-tags"): {"resource_uuid": world["vm"], "tag": f"sshkey::{GUEST_KEY} fz"},
        ("PUT", "/v1/system-tags/{uuid}"): {"tag": "userdata::y"},
        ("PUT", "/v1/vms/{uuid}/cdrom"): {"iso_path": "fz/a.iso"},
        ("POST", "/v1/vms/{uuid}/volumes"): {"disk": {"kind": "file", "path": "fz/d.qcow2", "size_bytes": 1 << 20}},
        ("POST", "/v1/eips"): {"name": "fz", "public_l3_uuid": "x1"},
        ("POST", "/v1/eips/{uuid}/attach"): {"vm_uuid": world["vm"], "nic_uuid": world["nic"]},
        ("POST", "/v1/hosts/{uuid}/deploy-log"): {"host": "h", "task": "t", "phase": "after", "duration_ms": 1.5},
        ("POST", "/v1/hosts/{uuid}/connect"): {"hostname": "h", "cpus": 2, "memory_mb": 1024},
        ("POST", "/v1/hosts/{uuid}/observed"): {"events": [{"seq": 1, "kind": "vm", "id": world["vm"], "at": 1.0,
                                                            "body": {"state": "Stopped"}}]},
    }


def routes(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if path != STREAM:
                yield method.upper(), path, op


def fill(path: str, world: dict[str, str], method: str, value: str | None = None) -> str:
    """The path with its parameters set: `value` for all, else the world's object (never for a DELETE)."""
    prefix = next((p for p in IDS if path.startswith(p)), None)
    mine = world[IDS[prefix]] if prefix and method != "DELETE" else "x1"
    return re.sub(r"\{[^}]+\}", lambda m: value if value is not None else (mine if m.group() == "{uuid}" else "x1"),
                  path)


BODY_SHAPES: list[tuple[str | bytes, dict[str, str]]] = [
    ("[" * 50_000 + "]" * 50_000, {}),
    ('{"x": ' + "9" * 5000 + "}", {}),
    ("{}", {"Content-Type": "application/json; charset=abuse"}),
    ('{"x": NaN}', {}), ('{"x": Infinity}', {}), ('{"x": 1e999}', {}), ('{"x": 18446744073709551616}', {}),
    ("[]", {}), ('"s"', {}), ("null", {}), ("{", {}), ('{"zz_unknown": 1}', {}), (b'{"x": "\xff"}', {}),
    ('{"x": "\\ud800"}', {}), (b"{" + b" " * (MAX_BODY + 10) + b"}", {}), ("7" * (8 << 20), {}),
]
FIELD_VALUES: list[object] = [None, True, -1, 0, 1.5, "4", "", [], {}, [{}], {"zz_unknown": 1}, 2 ** 63 - 1,
                              1e308, "-oProxyCommand=id", "../../../../etc/shadow", "$(reboot)", "a\x00b",
                              "é" * 300_000, "x" * 5000, ["x" * 300] * 100, "ff:ff:ff:ff:ff:ff", "0" * 32]


def test_hand_written_shapes_on_every_route(sender, world, coordinator):
    spec = sender.send("GET", "/v1/openapi.json").json()
    known = bases(world)
    for method, path, op in routes(spec):
        target = fill(path, world, method)
        if op.get("security"):
            for bad in ("é", "\u00ff\u00fe", "x" * 5000, "a b"):
                assert sender.send(method, target, token=bad).status_code == 401
        if "{" in path:
            for value in ("a%2Fb", "%00", "%C3%A9", "x" * 300, "..", "%20", "-x"):
                sender.send(method, fill(path, world, method, value))
        declared = [p["name"] for p in op.get("parameters", []) if p["in"] == "query"]
        sender.send(method, target, params=[("zz_unknown", "1")])
        for name in declared:
            for value in ("nan", "inf", "1e999", "-1", "", "é", "x" * 5000, "true", "[]", "{}"):
                sender.send(method, target, params=[(name, value)])
            sender.send(method, target, params=[(name, "1"), (name, "2")])
        for data, headers in BODY_SHAPES:
            sender.send(method, target, data, headers)
        body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
        if body is None:
            continue
        base = known.get((method, path), {})
        for prop in spec["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]].get("properties", {}):
            for value in FIELD_VALUES:
                sender.json(method, target, {**base, prop: value})
    assert sender.sent > 3000


def not_json(name: str) -> None:
    raise AssertionError(f"{name} was served, which is not JSON")


def test_what_was_stored_is_still_served(sender, world):
    for path in ("/v1/vms", "/v1/hosts", "/v1/l2-networks", "/v1/l3-networks", "/v1/eips", "/v1/system-tags",
                 "/v1/global-configs", f"/v1/hosts/{world['host']}/deploy-log", f"/v1/vms/{world['vm']}"):
        r = sender.send("GET", path)
        assert r.status_code == 200 and json.loads(r.text, parse_constant=not_json), path


def test_the_coordinators_log_has_no_traceback(coordinator, run):
    log = run.path(f"{coordinator.name}.log").read_text()
    assert "Traceback" not in log, log[log.index("Traceback") - 2000:][:6000]
