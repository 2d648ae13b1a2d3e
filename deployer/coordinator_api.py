"""What a deploy asks the coordinator: which tokens to write, whether the agent is Connected, the deploy lock,
the certificate of an agent that serves TLS but never dials in.

Plain urllib calls with the admin token over https, verified against `ca`: the deployer runs in the
operator's CLI or in a child process of the coordinator, never on an event loop. Each question is also a
seam `deploy()` accepts a replacement for (tests, the cephagent's own health check).
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentkit import pki
from agentkit.tls import client_context
from deployer.errors import CoordinatorError
from deployer.model import AgentApiTokens, ApiTokenSource, Target, TokenSource

log = logging.getLogger(__name__)
Body = dict[str, Any]
INTERRUPTED = "the deploy was interrupted"


class Api:
    def __init__(self, api_url: str, admin_token: str | None, timeout: float = 10, ca: Path | None = None):
        self.base, self.timeout = api_url.rstrip("/"), timeout
        self.context = client_context(ca) if self.base.startswith("https:") else None
        self.headers = {"Content-Type": "application/json"}
        if admin_token:
            self.headers["Authorization"] = f"Bearer {admin_token}"

    def call(self, method: str, path: str, body: Body | None = None) -> Body:
        """The answer's JSON object ({} for an empty body); CoordinatorError for any failure."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, headers=self.headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.context) as r:  # noqa: S310
                raw = r.read()
        except urllib.error.HTTPError as e:
            try:
                error = json.loads(e.read())["error"]
                detail, code = error["message"], error["code"]
            except (ValueError, KeyError, TypeError):
                detail, code = e.reason, ""
            raise CoordinatorError(f"coordinator: HTTP {e.code}: {detail}", e.code, code) from None
        except (urllib.error.URLError, OSError) as e:
            raise CoordinatorError(f"coordinator: {getattr(e, 'reason', e)}") from None
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError as e:
            raise CoordinatorError(f"coordinator: {method} {path}: not JSON: {e}") from None
        if not isinstance(answer, dict):
            raise CoordinatorError(f"coordinator: {method} {path}: not a JSON object")
        return answer


class CoordinatorCheck:
    """What the coordinator says of a host's agent (`GET /v1/hosts/{uuid}`): its session (`session`), and whether
    it is Connected with a version (the call)."""

    def __init__(self, api_url: str, admin_token: str | None, ca: Path | None = None):
        self.api = Api(api_url, admin_token, timeout=3, ca=ca)

    def session(self, target: Target) -> str | None:
        """The agent session the host shows (None: none, as from an agent or coordinator older than sessions)."""
        session = self.api.call("GET", f"/v1/hosts/{target.host_uuid}").get("agent_session")
        return session if isinstance(session, str) else None

    def __call__(self, target: Target, version: str, stale: frozenset[str] = frozenset()) -> bool:
        """`"state": "Connected"`, the new version if the host record has one, and a session not in `stale` (the
        ones of agents the deploy stopped: theirs stay Connected until their heartbeat times out) if it has one."""
        body = self.api.call("GET", f"/v1/hosts/{target.host_uuid}")
        reported = body.get("agent_version") or (body.get("facts") or {}).get("agent_version")
        return (body.get("state") == "Connected" and reported in (None, "", version)
                and body.get("agent_session") not in stale)


def coordinator_check(api_url: str, admin_token: str | None, ca: Path | None = None) -> CoordinatorCheck:
    """Asks `GET /v1/hosts/{uuid}` for `"state": "Connected"` (and the new version and another session, if the host
    record has them)."""
    return CoordinatorCheck(api_url, admin_token, ca)


def coordinator_tokens(api_url: str, admin_token: str | None, ca: Path | None = None) -> TokenSource:
    """`POST /v1/hosts/{uuid}/token {"keep": found}`: the same token while valid, else a new one (old one void)."""
    api = Api(api_url, admin_token, ca=ca)

    def token(target: Target, found: str | None) -> str:
        answer = api.call("POST", f"/v1/hosts/{target.host_uuid}/token", {"keep": found}).get("token")
        if not isinstance(answer, str):
            raise CoordinatorError(f"coordinator: no token for host {target.host_uuid} in its answer")
        return answer

    return token


def coordinator_api_tokens(api_url: str, admin_token: str | None, ca: Path | None = None) -> ApiTokenSource:
    """`POST /v1/hosts/{uuid}/agent-api-token`: the host's agent API token (the same one until rotated; null for
    a console proxy, which takes none) and the scrapers' metrics token."""
    api = Api(api_url, admin_token, ca=ca)

    def tokens(target: Target) -> AgentApiTokens:
        answer = api.call("POST", f"/v1/hosts/{target.host_uuid}/agent-api-token", {})
        token, metrics = answer.get("api_token"), answer.get("metrics_token")
        if not isinstance(token, str | None) or not isinstance(metrics, str | None):
            raise CoordinatorError(f"coordinator: no agent API token for host {target.host_uuid} in its answer")
        return AgentApiTokens(token, metrics)

    return tokens


def certificate(api: Api, target: Target, name: str) -> tuple[str, str, float]:
    """A new key and the coordinator's certificate for it, for the agent `name` of `target`: (chain PEM,
    key PEM, expiry). The key is made here and goes to the host with the agent's config."""
    key = pki.new_key()
    answer = api.call("POST", f"/v1/hosts/{target.host_uuid}/certificate", {"csr": pki.request(key, name).decode()})
    chain, expires = answer.get("certificate"), answer.get("expires_at")
    if not isinstance(chain, str) or not isinstance(expires, int | float):
        raise CoordinatorError(f"coordinator: no certificate for host {target.host_uuid} in its answer")
    return chain, pki.key_pem(key).decode(), float(expires)


def default_holder() -> str:
    """How other deployers are told who holds a lock: user@machine and pid."""
    return f"{getpass.getuser()}@{socket.gethostname()} (pid {os.getpid()})"


class DeployLocks:
    """The coordinator's per-host deploy locks (`/v1/hosts/{uuid}/deploy-lock`, each its host's address's too),
    renewed on a thread while held.

    `take` waits while another deploy holds a host's lock, up to `wait` seconds, so an operator's
    `hs deploy` that meets the coordinator's automatic deploy of the same host runs after it (and
    then finds the host unchanged) instead of racing it. A lock the coordinator says is lost (it
    expired while renewals failed, or another took it since) is no longer renewed, and `on_lost` is told
    of its host (on the renewing thread): the deploy must stop working on it.
    """

    def __init__(self, api_url: str, admin_token: str | None, holder: str | None = None, *, wait: float = 900,
                 ttl: int = 30, poll: float = 1.0, ca: Path | None = None,
                 on_lost: Callable[[Target], None] = lambda target: None):
        self.api = Api(api_url, admin_token, ca=ca)
        self.holder, self.wait, self.ttl, self.poll, self.on_lost = holder, wait, ttl, poll, on_lost
        self.held: dict[str, str] = {}  # host uuid -> lock id
        self._targets: dict[str, Target] = {}  # host uuid -> the target whose lock is held
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def take(self, target: Target) -> None:
        """Block until this deploy holds `target`'s lock; CoordinatorError (with the holder) after `wait` s, or
        once the deploy is interrupted (`cancel`)."""
        body = {"holder": self.holder or default_holder(), "ttl": self.ttl}
        deadline, told = time.monotonic() + self.wait, False
        while True:
            try:
                lock: str = self.api.call("POST", f"/v1/hosts/{target.host_uuid}/deploy-lock", body)["lock"]
                break
            except CoordinatorError as e:
                if e.api_code != "locked" or time.monotonic() >= deadline:
                    raise
                if not told:
                    log.warning("%s: waiting: %s", target.name, str(e).split(": ", 2)[-1])
                    told = True
            if self._stop.wait(self.poll):
                raise CoordinatorError(INTERRUPTED)
        with self._lock:
            self.held[target.host_uuid], self._targets[target.host_uuid] = lock, target
            if self._renewer is None:
                self._renewer = threading.Thread(target=self._renew, name="deploy-locks", daemon=True)
                self._renewer.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            with self._lock:
                held = dict(self.held)
            for uuid, lock in held.items():
                try:
                    self.api.call("PUT", f"/v1/hosts/{uuid}/deploy-lock/{lock}")
                except CoordinatorError as e:
                    if e.api_code != "lock_lost":
                        log.warning("deploy lock of host %s: renewal failed (tried again): %s", uuid, e)
                        continue
                    log.warning("deploy lock of host %s lost: %s", uuid, e)
                    with self._lock:
                        del self.held[uuid]
                        target = self._targets.pop(uuid)
                    self.on_lost(target)

    def cancel(self) -> None:
        """The deploy is interrupted: hosts waiting for their lock give up at once, and renewals stop (`release`
        still releases what is held)."""
        self._stop.set()

    def release(self) -> None:
        """Stop renewing and release every lock held (a lock that expired meanwhile is fine)."""
        self._stop.set()
        if self._renewer:
            self._renewer.join()
        with self._lock:
            held, self.held = self.held, {}
        for uuid, lock in held.items():
            try:
                self.api.call("DELETE", f"/v1/hosts/{uuid}/deploy-lock/{lock}")
            except CoordinatorError as e:
                log.warning("deploy lock of host %s: release failed (it expires by itself): %s", uuid, e)
