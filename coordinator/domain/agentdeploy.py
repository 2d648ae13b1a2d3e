"""Deploying agents from the coordinator: one `python -m deployer` child per agent kind, for hosts whose SSH
credentials the coordinator keeps.

Used by the elected replica's automatic deploys and upgrades (leader/autodeploy.py) and by the explicit
redeploy of console proxies (`POST /v1/console-proxies/{uuid}/reconnect`, seed ReconnectConsoleProxyAgent).
ansible forks, keeps process-wide state and sets signal handlers, so it never runs inside the coordinator;
the request, with the hosts' decrypted SSH credentials, goes in on stdin.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

from agentkit.proc import ProcessError, arun, ended
from coordinator.domain import credentials
from coordinator.domain.hosts import Host, open_ssh
from coordinator.settings import CoordinatorSettings

log = logging.getLogger(__name__)
TIMEOUT = 1800.0  # a deploy that installs packages on a slow host may take minutes
AGENTS = {"kvm": "kvmagent", "ceph": "cephagent", "consoleproxy": "consoleproxy", "imagestore": "imagestore"}
# deployer request (as `python -m deployer` reads it) -> {host name: Result as a dict} or {"error": text}
Json = dict[str, Any]
Runner = Callable[[Json], Awaitable[Json]]


def automatic(settings: CoordinatorSettings) -> bool:
    """Does the elected replica deploy the agents of hosts registered with SSH credentials (leader/autodeploy.py)?"""
    return settings.auto_deploy and bool(settings.coordinator_url_for_agents)


def own_url(settings: CoordinatorSettings) -> str:
    """Where the deployer child reaches this replica's API (deploy log, tokens, Connected check)."""
    host = "127.0.0.1" if settings.listen in ("", "0.0.0.0", "::") else settings.listen  # noqa: S104
    return f"{settings.tls.scheme}://{f'[{host}]' if ':' in host else host}:{settings.port}"


async def run_deployer(settings: CoordinatorSettings, request: Json) -> Json:
    """One `python -m deployer` child; its last stdout line is the JSON answer. ansible makes its local
    temporary directory as it loads (default ~/.ansible/tmp): the coordinator's unit has a read-only
    home (ProtectHome=read-only), where that failed every deploy, so the child's is a temporary
    directory (the unit's private /tmp)."""
    env = [f"ANSIBLE_LOCAL_TEMP={tempfile.gettempdir()}"]
    if settings.deployer_config:
        env.append(f"HS_DEPLOYER_CONFIG={settings.deployer_config}")
    argv = ["env", *env, sys.executable, "-m", "deployer"]
    p = await arun(argv, input=json.dumps(request), rcs=(0, 1, 2), timeout=TIMEOUT,
                   logstring="python -m deployer (deploy by the coordinator)")
    lines = p.stdout.strip().splitlines()
    if not lines:
        return {"error": f"the deployer {ended(p.returncode)}: {p.stderr.strip()[-300:]}"}
    answer: Json = json.loads(lines[-1])
    return answer


async def deploy(settings: CoordinatorSettings, agent: str, batch: list[Host], holder: str, runner: Runner,
                 password: Callable[[Host], bool] = lambda host: True) -> dict[str, tuple[bool, str]]:
    """Deploy `agent` to the hosts of `batch` with their stored SSH credentials: host uuid -> (ok, message). A host
    `password` refuses is logged in to without its stored password (with its key alone)."""
    out: dict[str, tuple[bool, str]] = {}
    targets = {}
    for host in batch:
        try:
            ssh = open_ssh(settings, host)
        except credentials.CredentialError as e:
            out[host.uuid] = (False, f"{host.name}: {e}")
            continue
        if ssh is None:
            out[host.uuid] = (False, f"{host.name}: no stored SSH credentials (hs deploy ssh {host.name} ...)")
            continue
        targets[host.name] = {"name": host.name, "address": host.address, "host_uuid": host.uuid,
                              "host_token": None, "port": ssh.port, "user": ssh.user,
                              "password": ssh.password if password(host) else None, "key_file": ssh.key_file,
                              "ssh_host_keys": host.ssh_host_keys or []}
    if not targets:
        return out
    log.info("deploying %s to %s (%s)", agent, ", ".join(targets), holder)
    request = {"agent": agent, "coordinator_url": settings.coordinator_url_for_agents,
               "admin_token": settings.admin_token.get_secret_value(), "api_url": own_url(settings),
               "holder": f"the coordinator ({settings.replica_id}, {holder})", "ca": str(settings.tls.ca_file()),
               "targets": list(targets.values())}
    try:
        results = await runner(request)
    except (ProcessError, OSError, ValueError) as e:
        results = {"error": str(e)}
    for host in batch:
        if host.name in targets:
            r = results.get(host.name) or {}
            out[host.uuid] = (bool(r.get("ok")), r.get("message") or f"{host.name}: {results.get('error')}")
    return out
