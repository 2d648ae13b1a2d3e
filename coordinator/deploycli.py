"""`hs deploy ...`: install or upgrade agents on registered hosts from the operator's machine.

The CLI resolves each host at the coordinator (address, kind, stored SSH credentials unless flags
give them), then runs `deployer.deploy()` in its own main thread, which ansible needs. Targets carry
no token: the deployer keeps the token already in a host's agent config while the coordinator accepts
it and asks the coordinator for a new one otherwise, so an unchanged host stays unchanged. The
deployer posts its log to the coordinator (`hs host deploy-log HOST`). `coordinator/cli.py` registers
the commands listed in COMMANDS under `hs deploy`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

from coordinator.client import ApiClientError, Client
from coordinator.cliregistry import arg

Arg = tuple[tuple, dict]


class DeployCliError(Exception):
    """Shown as one `hs: ...` line; the exit status is 1."""


SSH_FLAGS = (arg("--user", help="SSH user (deploy: default the stored one; else root)"),
             arg("--port", type=int, help="SSH port (deploy: default the stored one; else 22)"),
             arg("--password", help="SSH password (deploy: default the stored credentials)"),
             arg("--key-file", help="SSH private key file (deploy: default the stored credentials)"))
DEPLOY_FLAGS = (arg("hosts", nargs="+", metavar="HOST", help="registered host, by name or uuid"), *SSH_FLAGS,
                arg("--agent-url", help="coordinator URL written into the agents' config, as hosts reach it "
                     "(env HS_AGENT_URL; default: --url)"))


async def _ssh(c: Client, host: dict, a) -> dict:
    """SSH access to `host`: the flags, else its stored credentials (--user/--port still apply)."""
    if a.password or a.key_file:
        return {"user": a.user or "root", "port": a.port or 22, "password": a.password, "key_file": a.key_file}
    try:
        stored = await c.post(f"/v1/hosts/{host['uuid']}/ssh/reveal")
    except ApiClientError as e:
        if e.status != 404:
            raise
        raise DeployCliError(f"host {host['name']} has no stored SSH credentials: pass --password or --key-file, "
                             f"or store them with `hs deploy ssh {host['name']} ...`") from None
    return {**stored, "user": a.user or stored["user"], "port": a.port or stored["port"]}


async def _deploy(c: Client, a, agent: str, kind: str) -> object:
    """Resolve the hosts, deploy, and answer one line per host (or the results as JSON with --json)."""
    from deployer import BuildError, Target, deploy  # ansible is slow to import: only deploys pay for it

    targets = []
    for ref in a.hosts:
        h = await c.get(f"/v1/hosts/{ref}")
        if h["kind"] != kind:
            raise DeployCliError(f"host {h['name']} is a {h['kind']} host; {agent} goes on {kind} hosts")
        targets.append(Target(name=h["name"], address=h["address"], host_uuid=h["uuid"], host_token=None,
                              **await _ssh(c, h, a)))
    agent_url = a.agent_url or os.environ.get("HS_AGENT_URL") or c.url
    try:
        results = deploy(agent, targets, agent_url, admin_token=c.token, api_url=c.url)
    except (BuildError, ValueError) as e:
        raise DeployCliError(str(e)) from None
    out: object = "\n".join(results[t.name].message for t in targets)
    if a.json:
        out = {n: dataclasses.asdict(r) for n, r in results.items()}
    failed = [n for n, r in results.items() if not r.ok]
    if failed:
        print(json.dumps(out, indent=2) if a.json else out)
        raise DeployCliError(f"deploy failed on {len(failed)} of {len(results)} hosts: {', '.join(failed)}")
    return out


async def deploy_kvmagent(c: Client, a) -> object:
    """install or upgrade the KVM agent on kvm hosts over SSH (a host's valid token is kept)"""
    return await _deploy(c, a, "kvmagent", "kvm")


async def deploy_cephagent(c: Client, a) -> object:
    """install or upgrade the Ceph agent on ceph hosts over SSH, with the coordinator's cephagent_token"""
    return await _deploy(c, a, "cephagent", "ceph")


def ssh_body(a) -> dict:
    """The SSH_FLAGS as the API's `ssh` object."""
    return {"user": a.user or "root", "port": a.port or 22, "password": a.password, "key_file": a.key_file}


async def deploy_ssh(c: Client, a) -> object:
    """store a host's SSH credentials (encrypted) for deploys and automatic agent deploys and upgrades"""
    return await c.put(f"/v1/hosts/{a.host}/ssh", ssh_body(a))


async def deploy_token(c: Client, a) -> object:
    """issue a new agent token for a host (the old one stops working at once); shown only now"""
    return await c.post(f"/v1/hosts/{a.host}/token", {})


COMMANDS: list[tuple[str, Callable, list[Arg]]] = [
    ("kvmagent", deploy_kvmagent, list(DEPLOY_FLAGS)),
    ("cephagent", deploy_cephagent, list(DEPLOY_FLAGS)),
    ("ssh", deploy_ssh, [arg("host"), *SSH_FLAGS]),
    ("token", deploy_token, [arg("host")]),
]
