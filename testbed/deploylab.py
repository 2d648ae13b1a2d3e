"""What the deployer's tests and benchmark deploy against, besides the sshd targets.

- `StubCoordinator`: the coordinator endpoints a deploy touches (deploy-log POST, host GET, deploy
  lock) plus a `hello` the stub agent sends with its host token; served on loopback for the deployer and
  on the controller namespace's address for agents in the targets. A host stays Connected for
  `heartbeat_timeout` (10 s, the coordinator's default) after its agent's last hello, in that agent's session.
- `coordinator_writable()`: what a coordinator that deploys may write in its unit's sandbox here.
- `deploy_apart()`: a deploy in a process of its own, as the coordinator runs it.
- `deploy_processes()`: what is left of a deploy (its processes, ansible's workers, their ssh), `SLOW_VENV`: a
  target's python3 under which the install step lasts long enough to be interrupted.
- `agent_source()`: a frozen copy of the wheel build input (pyproject.toml + packages) with kvmagent
  replaced by a stub that loads its deployed config, imports the agent's dependencies from the
  installed venv, then connects to a real coordinator (facts with its version and session, heartbeats) or says
  hello to the stub every second: the real kvmagent needs libvirtd, which these tests are not about.
  A copy also keeps the wheel stable while the shared tree changes, and lets a test bump the version.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import re
import secrets
import shutil
import socket
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from aiohttp import web

from coordinator.ctl.layout import DEPLOYER_CACHE
from deployer.deploy import deploy
from deployer.model import Result
from deployer.wheelhouse import source_files
from testbed.netns import Netns
from testbed.sshd import SshLab

REPO = Path(__file__).resolve().parents[1]
STUB_AGENT = '''\
"""Stub kvmagent for deployer tests: proves the venv, the config and the route to the coordinator.

Speaks the agent side of the real protocol (connect with its facts and version, then heartbeats, and
connect again after any failure); a stand-in coordinator without it (404 on connect) gets a hello.
"""

import importlib.metadata
import json
import os
import socket
import sys
import time
import tomllib
import urllib.error
import urllib.request

import aiohttp  # noqa: F401  (the dependency wheels must import on the host)
import dnslib  # noqa: F401
import libvirt  # noqa: F401
import pydantic  # noqa: F401
import pyroute2  # noqa: F401

from agentkit import SESSION, __version__


def post(url: str, token: str, body: dict) -> dict | None:
    headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(req, timeout=2) as r:
        data = r.read()
    return json.loads(data) if data else None


def main() -> None:
    path = os.environ.get("HS_KVMAGENT_CONFIG", "/etc/hoststack/kvmagent.toml")
    with open(path, "rb") as f:
        cfg = tomllib.load(f)
    hello = {"version": __version__, "session": SESSION, "pid": os.getpid(), "config": path,
             "wheel": importlib.metadata.version("hoststack")}
    facts = {"hostname": socket.gethostname(), "agent_version": __version__, "agent_session": SESSION}
    base, token = cfg["coordinator_url"] + "/v1/hosts/" + cfg["host_uuid"], cfg["host_token"]
    mode, interval = "connect", 1.0
    while True:
        try:
            if mode == "connect":
                interval = min(post(base + "/connect", token, facts)["heartbeat_interval"], 1.0)
                mode = "heartbeat"
            else:
                post(base + "/" + mode, token, hello if mode == "hello" else {})
        except urllib.error.HTTPError as e:
            if (mode, e.code) == ("connect", 404):  # a stand-in coordinator: hello at once
                mode = "hello"
                continue
            mode = "connect" if mode == "heartbeat" else mode
            print(mode, "after", e, file=sys.stderr, flush=True)
        except OSError as e:
            mode = "connect" if mode == "heartbeat" else mode
            print("coordinator unreachable:", e, file=sys.stderr, flush=True)
        time.sleep(interval)
'''


def agent_source(dest: Path, version: str | None = None, stub: bool = True) -> Path:
    """Copy the build input to `dest`, with the stub kvmagent unless `stub` is False (the real agent, which
    connects to the coordinator before libvirtd answers); `version` rewrites both version strings."""
    for f in source_files(REPO):
        rel = f.relative_to(REPO)
        if rel.parts[0] == "kvmagent" and stub:
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dest / rel)
    if stub:
        (dest / "kvmagent").mkdir(exist_ok=True)
        (dest / "kvmagent" / "__init__.py").write_text('"""Stub kvmagent (deployer tests)."""\n')
        (dest / "kvmagent" / "main.py").write_text(STUB_AGENT)
    if version:
        set_version(dest, version)
    return dest


def set_version(source: Path, version: str) -> None:
    """A release: the wheel's version and the one agents report."""
    for path, key in ((source / "pyproject.toml", "version"), (source / "agentkit" / "__init__.py", "__version__")):
        text = path.read_text()
        path.write_text(re.sub(rf'^{key} = "[^"]+"', f'{key} = "{version}"', text, count=1, flags=re.M))


class StubCoordinator:
    """The coordinator as a deploy sees it. Runs its own event loop on a thread."""

    def __init__(self, admin_token: str, agent_socket: socket.socket | None = None, heartbeat_timeout: float = 10.0):
        self.admin_token = admin_token
        self.heartbeat_timeout = heartbeat_timeout
        self.agent_socket = agent_socket
        self.host_tokens: dict[str, str] = {}
        self.entries: list[dict[str, Any]] = []  # deploy-log posts, each with its "uuid"
        self.hellos: dict[str, dict[str, Any]] = {}  # host uuid -> last hello (+ "at")
        self.locks: dict[str, str] = {}  # host uuid -> deploy lock id (no expiry: tests release them)
        self.api_tokens: dict[str, str] = {}  # host uuid -> its agent API token (made when first asked)
        self.metrics_token = "metrics-" + secrets.token_hex(8)
        self.api_url = ""
        self.agent_url = "http://{}:{}".format(*agent_socket.getsockname()) if agent_socket else ""
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="stub-coordinator", daemon=True)

    def add_host(self, uuid: str, token: str) -> None:
        self.host_tokens[uuid] = token

    def _auth(self, request: web.Request, token: str | None) -> None:
        if token is None or request.headers.get("Authorization") != f"Bearer {token}":
            raise web.HTTPUnauthorized()

    async def _deploy_log(self, request: web.Request) -> web.Response:
        self._auth(request, self.admin_token)
        self.entries.append({**await request.json(), "uuid": request.match_info["uuid"]})
        return web.Response(status=204)

    async def _hello(self, request: web.Request) -> web.Response:
        uuid = request.match_info["uuid"]
        self._auth(request, self.host_tokens.get(uuid))
        self.hellos[uuid] = {**await request.json(), "at": time.time()}
        return web.Response(status=204)

    async def _host(self, request: web.Request) -> web.Response:
        self._auth(request, self.admin_token)
        hello = self.hellos.get(request.match_info["uuid"])
        connected = hello is not None and time.time() - hello["at"] < self.heartbeat_timeout
        return web.json_response({"uuid": request.match_info["uuid"], "state": "Connected" if connected
                                  else "Disconnected", "agent_version": hello["version"] if hello else None,
                                  "agent_session": hello.get("session") if hello else None})

    async def _agent_api_token(self, request: web.Request) -> web.Response:
        self._auth(request, self.admin_token)
        token = self.api_tokens.setdefault(request.match_info["uuid"], "api-" + secrets.token_hex(12))
        return web.json_response({"api_token": token, "metrics_token": self.metrics_token})

    async def _take_lock(self, request: web.Request) -> web.Response:
        self._auth(request, self.admin_token)
        uuid = request.match_info["uuid"]
        if uuid in self.locks:
            return web.json_response({"error": {"code": "locked", "message": f"host {uuid} is being deployed"}},
                                     status=409)
        self.locks[uuid] = f"lock-{uuid}"
        return web.json_response({"lock": self.locks[uuid]}, status=201)

    async def _renew_or_release_lock(self, request: web.Request) -> web.Response:
        self._auth(request, self.admin_token)
        uuid = request.match_info["uuid"]
        if self.locks.get(uuid) != request.match_info["lock"]:
            return web.json_response({"error": {"code": "lock_lost", "message": "lost"}}, status=404)
        if request.method == "DELETE":
            del self.locks[uuid]
        return web.Response(status=204)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/hosts/{uuid}/deploy-log", self._deploy_log)
        app.router.add_post("/v1/hosts/{uuid}/hello", self._hello)
        app.router.add_get("/v1/hosts/{uuid}", self._host)
        app.router.add_post("/v1/hosts/{uuid}/deploy-lock", self._take_lock)
        app.router.add_post("/v1/hosts/{uuid}/agent-api-token", self._agent_api_token)
        app.router.add_route("*", "/v1/hosts/{uuid}/deploy-lock/{lock}", self._renew_or_release_lock)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        loopback = web.TCPSite(self._runner, "127.0.0.1", 0)
        await loopback.start()
        if self.agent_socket:
            await web.SockSite(self._runner, self.agent_socket).start()
        port = next(a[1] for a in self._runner.addresses if a[0] == "127.0.0.1")
        self.api_url = f"http://127.0.0.1:{port}"

    def start(self) -> StubCoordinator:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._runner:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def coordinator_writable() -> tuple[str, ...]:
    """The directories a coordinator that runs deploys may write in its unit's sandbox (testbed.sandbox), as
    the lab uses them: the deployer's cache (the unit's CacheDirectory, made here as systemd makes it) and
    /tmp (its PrivateTmp; the runs live there)."""
    DEPLOYER_CACHE.mkdir(parents=True, exist_ok=True)
    return ("/tmp", str(DEPLOYER_CACHE))


def deploy_apart(*args: Any, **kwargs: Any) -> dict[str, Result]:
    """deploy() in a process of its own, as the coordinator runs it (`python -m deployer`), in its main thread
    (ansible sets signal handlers): ansible forks its workers, and a test's process holds threads (librados'
    of the ceph fixture's admin handle, a `StubCoordinator`'s loop) which a forked child may find mid-operation
    (a worker died of a segfault in its garbage collector once). The arguments cross to that process: a
    `connected` check too, so it is a module's function (bound with functools.partial), not a closure."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(deploy, *args, **kwargs).result()


def deployer_toml(path: Path, ssh: SshLab, source: Path, control_path_dir: Path) -> Path:
    """A deployer config for the lab's sshd targets, building wheels from `source`."""
    values = {"source_dir": str(source), "ssh_executable": str(ssh.ssh_executable),
              "control_path_dir": str(control_path_dir), "refresh_index": False}
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))
    return path


# python3 for `SshTarget.replace_python`, except that a venv takes {delay} s to make: the install step runs that long
SLOW_VENV = '#!/bin/sh\n[ "$1 $2" = "-m venv" ] && sleep {delay}\nexec /usr/bin/python3.11 "$@"\n'


def deploy_processes(config: Path, control_path_dir: Path) -> list[str]:
    """The processes of deploys with `config` (ansible's workers are their deployer's copies) and their ssh clients
    (those with a control socket in `control_path_dir`), but the ControlPersist master, which outlives a deploy by
    design."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            environ, cmdline = (proc / "environ").read_bytes(), (proc / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        deployer = f"HS_DEPLOYER_CONFIG={config}".encode() in environ.split(b"\0")
        if deployer or (str(control_path_dir).encode() in cmdline and b"[mux]" not in cmdline):
            found.append(f"{proc.name}: {cmdline.decode(errors='replace')[:200]}")
    return found


def wait_listening(ns: Netns, port: int) -> None:
    """Until something listens on TCP `port` in `ns` (a portal)."""
    deadline = time.monotonic() + 10
    while not ns.sh("ss", "-Htln", f"sport = :{port}").stdout.strip():
        assert time.monotonic() < deadline, "portal did not listen"
        time.sleep(0.05)
