"""testbed.deploylab: the frozen agent source and the stand-in coordinator answer as the deployer's tests assume."""

from __future__ import annotations

import json
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from deployer import wheelhouse
from testbed.deploylab import REPO, StubCoordinator, agent_source, set_version


def test_agent_source_is_the_build_input_with_a_stub_agent_and_a_version(tmp_path):
    src = agent_source(tmp_path / "src", "9.9.9")
    assert wheelhouse.source_version(src) == "9.9.9"
    assert tomllib.loads((src / "pyproject.toml").read_text())["project"]["version"] == "9.9.9"
    assert sorted(p.name for p in (src / "kvmagent").iterdir()) == ["__init__.py", "main.py"]
    assert (src / "deployer" / "deploy.py").read_bytes() == (REPO / "deployer" / "deploy.py").read_bytes()
    assert "build" not in {p.name for p in src.iterdir()}  # only what the wheel is built from
    set_version(src, "10.0.0")
    assert wheelhouse.source_version(src) == "10.0.0"


def test_the_real_agent_source_keeps_kvmagent(tmp_path):
    src = agent_source(tmp_path / "src", stub=False)
    assert (src / "kvmagent" / "main.py").read_bytes() == (REPO / "kvmagent" / "main.py").read_bytes()
    assert wheelhouse.source_version(src) == wheelhouse.source_version(REPO)


@pytest.fixture
def stub() -> Iterator[StubCoordinator]:
    s = StubCoordinator("adm").start()
    yield s
    s.stop()


def call(stub: StubCoordinator, method: str, path: str, token: str, body: object = None) -> tuple[int, object]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(stub.api_url + path, data=data, method=method,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, json.loads(raw) if raw.startswith(b"{") else None


def test_a_host_is_connected_while_its_agent_says_hello(stub):
    stub.add_host("u1", "host-token")
    assert call(stub, "GET", "/v1/hosts/u1", "adm")[1] == {"uuid": "u1", "state": "Disconnected",
                                                            "agent_version": None, "agent_session": None}
    assert call(stub, "POST", "/v1/hosts/u1/hello", "adm", {"version": "1.0"})[0] == 401  # the host's token only
    hello = {"version": "1.0", "session": "s1", "pid": 7}
    assert call(stub, "POST", "/v1/hosts/u1/hello", "host-token", hello)[0] == 204
    assert call(stub, "GET", "/v1/hosts/u1", "adm")[1] == {"uuid": "u1", "state": "Connected", "agent_version": "1.0",
                                                            "agent_session": "s1"}
    assert stub.hellos["u1"]["pid"] == 7
    stub.hellos["u1"]["at"] -= 9.5  # its agent stopped: Connected until the coordinator's heartbeat_timeout passed
    assert call(stub, "GET", "/v1/hosts/u1", "adm")[1]["state"] == "Connected"
    stub.hellos["u1"]["at"] -= 0.5
    assert call(stub, "GET", "/v1/hosts/u1", "adm")[1]["state"] == "Disconnected"


def test_deploy_log_entries_need_the_admin_token(stub):
    entry = {"host": "h", "task": "probe", "phase": "before", "ok": None, "duration_ms": None, "message": ""}
    assert call(stub, "POST", "/v1/hosts/u1/deploy-log", "wrong", entry)[0] == 401
    assert call(stub, "POST", "/v1/hosts/u1/deploy-log", "adm", entry)[0] == 204
    assert stub.entries == [{**entry, "uuid": "u1"}]


def test_a_lock_is_held_by_one_deploy_until_it_is_released(stub):
    assert call(stub, "POST", "/v1/hosts/u1/deploy-lock", "adm", {"holder": "a"}) == (201, {"lock": "lock-u1"})
    status, body = call(stub, "POST", "/v1/hosts/u1/deploy-lock", "adm", {"holder": "b"})
    assert (status, body["error"]["code"]) == (409, "locked")
    assert call(stub, "PUT", "/v1/hosts/u1/deploy-lock/lock-u1", "adm")[0] == 204
    assert call(stub, "PUT", "/v1/hosts/u1/deploy-lock/other", "adm")[0] == 404
    assert call(stub, "DELETE", "/v1/hosts/u1/deploy-lock/lock-u1", "adm")[0] == 204
    assert stub.locks == {}
