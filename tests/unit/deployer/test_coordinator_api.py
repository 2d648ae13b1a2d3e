"""deployer.coordinator_api against HTTP servers on loopback: answers, error envelopes, tokens, lock renewal."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from deployer.coordinator_api import Api, DeployLocks, coordinator_api_tokens, coordinator_check, coordinator_tokens
from deployer.errors import CoordinatorError
from deployer.model import AgentApiTokens, Target
from testbed.deploylab import StubCoordinator
from testbed.ports import free_port

T = Target(name="kvm1", address="198.18.0.2", host_uuid="u1", host_token=None)


class Canned:
    """A coordinator with canned answers: (method, path) -> (status, body bytes); records what it was sent."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], tuple[int, bytes]] = {}
        self.seen: list[tuple[str, str, str | None, object]] = []  # method, path, authorization, JSON body
        canned = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                canned.seen.append((self.command, self.path, self.headers.get("Authorization"), body))
                status, data = canned.answers.get((self.command, self.path), (404, b""))
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, method: str, path: str, status: int, body: object = None, raw: bytes | None = None) -> None:
        self.answers[(method, path)] = (status, raw if raw is not None else json.dumps(body).encode())


@pytest.fixture
def canned() -> Iterator[Canned]:
    c = Canned()
    thread = threading.Thread(target=c.server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield c
    c.server.shutdown()
    c.server.server_close()


def test_call_sends_the_admin_token_and_returns_the_answer(canned):
    canned.answer("POST", "/v1/x", 200, {"a": 1})
    canned.answer("DELETE", "/v1/x", 204, raw=b"")
    api = Api(canned.url + "/", "adm")
    assert api.call("POST", "/v1/x", {"b": 2}) == {"a": 1}
    assert api.call("DELETE", "/v1/x") == {}
    assert canned.seen == [("POST", "/v1/x", "Bearer adm", {"b": 2}), ("DELETE", "/v1/x", "Bearer adm", None)]


@pytest.mark.parametrize("status, raw, message, http_status, api_code", [
    (409, b'{"error": {"code": "locked", "message": "host u1 is being deployed", "field": null}}',
     "coordinator: HTTP 409: host u1 is being deployed", 409, "locked"),
    (502, b"<html>bad gateway</html>", "coordinator: HTTP 502: Bad Gateway", 502, ""),
    (200, b"not json", "coordinator: GET /v1/x: not JSON: Expecting value: line 1 column 1 (char 0)", 0, ""),
    (200, b"[1, 2]", "coordinator: GET /v1/x: not a JSON object", 0, ""),
])
def test_every_failure_is_a_coordinator_error_with_its_status_and_code(canned, status, raw, message, http_status,
                                                                       api_code):
    canned.answer("GET", "/v1/x", status, raw=raw)
    with pytest.raises(CoordinatorError) as e:
        Api(canned.url, None).call("GET", "/v1/x")
    assert (str(e.value), e.value.http_status, e.value.api_code) == (message, http_status, api_code)
    assert canned.seen[0][2] is None  # no token, no Authorization header


def test_no_answer_is_a_coordinator_error_with_status_0():
    with pytest.raises(CoordinatorError, match="^coordinator: .*Connection refused") as e:
        Api(f"http://127.0.0.1:{free_port()}", "adm", timeout=2).call("GET", "/v1/x")
    assert (e.value.http_status, e.value.code, e.value.status) == (0, "coordinator_failed", 502)


@pytest.mark.parametrize("host, version, connected", [
    ({"state": "Connected", "agent_version": "1.0"}, "1.0", True),
    ({"state": "Connected", "agent_version": "0.9"}, "1.0", False),  # the old agent still answers
    ({"state": "Connected", "facts": {"agent_version": "1.0"}}, "1.0", True),
    ({"state": "Connected"}, "1.0", True),  # a record without versions: Connected is enough
    ({"state": "Disconnected", "agent_version": "1.0"}, "1.0", False),
])
def test_connected_means_the_new_version_is_connected(canned, host, version, connected):
    canned.answer("GET", "/v1/hosts/u1", 200, host)
    assert coordinator_check(canned.url, "adm")(T, version) is connected


@pytest.mark.parametrize("session, connected", [
    ("s-old", False),  # the agent the deploy stopped: Connected until its heartbeat times out
    ("s-new", True),
    (None, True),  # no session (an agent older than sessions): Connected with the version is enough
])
def test_connected_means_in_a_session_other_than_the_stale_ones(canned, session, connected):
    canned.answer("GET", "/v1/hosts/u1", 200, {"state": "Connected", "agent_version": "1.0", "agent_session": session})
    check = coordinator_check(canned.url, "adm")
    assert check(T, "1.0", frozenset({"s-old", "s-older"})) is connected
    assert check(T, "1.0") is True  # nothing stale
    assert check.session(T) == session


def test_a_session_that_is_no_string_is_none(canned):
    canned.answer("GET", "/v1/hosts/u1", 200, {"state": "Connected", "agent_session": 5})
    assert coordinator_check(canned.url, "adm").session(T) is None
    canned.answer("GET", "/v1/hosts/u1", 200, {"state": "Connected"})  # a coordinator older than sessions
    assert coordinator_check(canned.url, "adm").session(T) is None


def test_tokens_keep_the_found_one_or_fail_without_one(canned):
    canned.answer("POST", "/v1/hosts/u1/token", 200, {"token": "t-new", "rotated": True})
    assert coordinator_tokens(canned.url, "adm")(T, "t-old") == "t-new"
    assert canned.seen[-1][3] == {"keep": "t-old"}
    canned.answer("POST", "/v1/hosts/u1/token", 200, {"rotated": True})
    with pytest.raises(CoordinatorError, match="no token for host u1"):
        coordinator_tokens(canned.url, "adm")(T, None)


def test_the_agent_api_tokens_are_the_coordinators_answer(canned):
    canned.answer("POST", "/v1/hosts/u1/agent-api-token", 200, {"api_token": "a" * 43, "metrics_token": None})
    assert coordinator_api_tokens(canned.url, "adm")(T) == AgentApiTokens("a" * 43, None)
    assert canned.seen[-1][1:] == ("/v1/hosts/u1/agent-api-token", "Bearer adm", {})
    canned.answer("POST", "/v1/hosts/u1/agent-api-token", 200, {"api_token": None, "metrics_token": "m" * 20})
    assert coordinator_api_tokens(canned.url, "adm")(T) == AgentApiTokens(None, "m" * 20)  # a console proxy's
    canned.answer("POST", "/v1/hosts/u1/agent-api-token", 200, {"api_token": 5, "metrics_token": None})
    with pytest.raises(CoordinatorError, match="no agent API token for host u1"):
        coordinator_api_tokens(canned.url, "adm")(T)


def test_locks_are_renewed_while_held_and_released_at_the_end(canned):
    canned.answer("POST", "/v1/hosts/u1/deploy-lock", 201, {"lock": "L1"})
    canned.answer("PUT", "/v1/hosts/u1/deploy-lock/L1", 204, raw=b"")
    canned.answer("DELETE", "/v1/hosts/u1/deploy-lock/L1", 204, raw=b"")
    locks = DeployLocks(canned.url, "adm", "me@here", ttl=1)
    locks.take(T)
    assert locks.held == {"u1": "L1"} and canned.seen[0][3] == {"holder": "me@here", "ttl": 1}
    time.sleep(0.8)  # renewals every ttl/3
    locks.release()
    calls = [(m, p) for m, p, _, _ in canned.seen]
    assert calls.count(("PUT", "/v1/hosts/u1/deploy-lock/L1")) >= 1 and calls[-1] == (
        "DELETE", "/v1/hosts/u1/deploy-lock/L1")
    assert locks.held == {}


def test_a_lock_the_coordinator_says_is_lost_is_given_up_and_its_host_named(canned):
    canned.answer("POST", "/v1/hosts/u1/deploy-lock", 201, {"lock": "L1"})
    canned.answer("PUT", "/v1/hosts/u1/deploy-lock/L1", 404, {"error": {"code": "lock_lost", "message": "expired"}})
    lost: list[Target] = []
    locks = DeployLocks(canned.url, "adm", "me@here", ttl=1, on_lost=lost.append)
    locks.take(T)
    deadline = time.monotonic() + 5
    while not lost and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # renewals every ttl/3: none more for it
    locks.release()
    calls = [(m, p) for m, p, _, _ in canned.seen]
    assert lost == [T] and calls.count(("PUT", "/v1/hosts/u1/deploy-lock/L1")) == 1
    assert ("DELETE", "/v1/hosts/u1/deploy-lock/L1") not in calls and locks.held == {}


def test_take_waits_while_another_deploy_holds_the_lock():
    stub = StubCoordinator("adm").start()
    try:
        stub.locks["u1"] = "someone else's"
        threading.Timer(0.5, stub.locks.pop, ("u1",)).start()
        locks = DeployLocks(stub.api_url, "adm", wait=10, poll=0.05)
        t0 = time.monotonic()
        locks.take(T)
        assert time.monotonic() - t0 >= 0.5 and stub.locks == {"u1": "lock-u1"}
        locks.release()
        assert stub.locks == {}
    finally:
        stub.stop()
