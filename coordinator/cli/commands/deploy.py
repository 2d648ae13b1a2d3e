"""`hs deploy …`: install or upgrade agents on registered hosts from the operator's machine.

The hosts are resolved at the coordinator (address, kind, stored SSH credentials unless flags give
them), then `deployer.deploy()` runs in this process's main thread, which ansible needs. Targets carry
no token: the deployer keeps the token already in a host's agent config while the coordinator accepts
it and asks the coordinator for a new one otherwise, so an unchanged host stays unchanged. The
deployer posts its log to the coordinator (`hs host deploy-log HOST`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

from agentkit.pipes import emit
from coordinator.cli import render
from coordinator.cli.command import Command, Group
from coordinator.cli.commands.hosts import HOST_ARG, SSH_ARGS, SSH_BODY, stored_ssh
from coordinator.cli.commands.resources import HOST
from coordinator.cli.declare import Call, arg
from coordinator.cli.errors import CliError
from coordinator.cli.names import Found
from coordinator.cli.session import Session

DEPLOY_ARGS = (arg("hosts", nargs="+", metavar="HOST", ref=HOST, help="registered host"), *SSH_ARGS,
               arg("--agent-url", help="coordinator URL written into the agents' config, as hosts reach it "
                   "(env HS_AGENT_URL; default: --url)"))


async def _ssh(s: Session, host: Found, a: argparse.Namespace) -> dict[str, Any]:
    """SSH access to `host`: the flags, else its stored credentials (--user/--port still apply)."""
    if a.password or a.key_file:
        return {"user": a.user or "root", "port": a.port or 22, "password": a.password, "key_file": a.key_file}
    stored = await stored_ssh(s, a, host)
    if stored is None:
        name = host.row["name"]
        raise CliError(f"host {name} has no stored SSH credentials: pass --password or --key-file, "
                       f"or store them with `hs deploy ssh {name} ...`")
    return {**stored, "user": a.user or stored["user"], "port": a.port or stored["port"]}


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt in the deploy, as in `python -m deployer`. asyncio.run's SIGINT handler only
    cancels the main task, which the deploy, blocking the loop's thread, saw once it had run to its end: its waits
    for a lock (up to 15 minutes) and for Connected went on, then its results were dropped. (A SIGINT ignored, as by
    a shell's `&`, stays ignored.)"""
    before = signal.getsignal(signal.SIGINT)
    if before != signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


async def _deploy(s: Session, a: argparse.Namespace, agent: str, kind: str) -> object:
    """Deploy, and answer one line per host (or the results as JSON with --json)."""
    from deployer import BuildError, Target  # ansible is slow to import: only deploys pay for it
    from deployer.deploy import deploy
    from deployer.engine import DEPLOY_INTERRUPTED

    targets = []
    for host in dict.fromkeys(a.hosts):  # a host named twice (by name and uuid) is deployed once
        h = host.row
        if h["kind"] != kind:
            raise CliError(f"host {h['name']} is a {h['kind']} host; {agent} goes on {kind} hosts")
        targets.append(Target(name=h["name"], address=h["address"], host_uuid=h["uuid"], host_token=None,
                              ssh_host_keys=tuple(h.get("ssh_host_keys") or ()), **await _ssh(s, host, a)))
    url, token = s.client.url, s.client.token
    try:
        with _interruptible():
            results = deploy(agent, targets, a.agent_url or os.environ.get("HS_AGENT_URL") or url, admin_token=token,
                             api_url=url, ca=s.client.ca)
    except (BuildError, ValueError) as e:
        raise CliError(str(e)) from None
    except KeyboardInterrupt:  # the deploy let go of its locks and ansible of its workers; main exits 130
        print(f"hs: {DEPLOY_INTERRUPTED}", file=sys.stderr)
        raise
    out: object = "\n".join(results[t.name].message for t in targets)
    if a.json:
        out = {n: dataclasses.asdict(r) for n, r in results.items()}
    failed = [n for n, r in results.items() if not r.ok]
    if failed:
        emit(render.output(out, (), a.json))
        raise CliError(f"deploy failed on {len(failed)} of {len(results)} hosts: {', '.join(failed)}")
    return out


async def deploy_kvmagent(s: Session, a: argparse.Namespace) -> object:
    return await _deploy(s, a, "kvmagent", "kvm")


async def deploy_cephagent(s: Session, a: argparse.Namespace) -> object:
    return await _deploy(s, a, "cephagent", "ceph")


async def deploy_consoleproxy(s: Session, a: argparse.Namespace) -> object:
    return await _deploy(s, a, "consoleproxy", "consoleproxy")


async def deploy_imagestore(s: Session, a: argparse.Namespace) -> object:
    return await _deploy(s, a, "imagestore", "imagestore")


GROUP = Group("deploy", "install or upgrade agents over SSH; store SSH credentials; rotate agent tokens", (
    Command("kvmagent", "install or upgrade the KVM agent on kvm hosts over SSH (a host's valid token is kept)",
            deploy_kvmagent, *DEPLOY_ARGS),
    Command("cephagent", "install or upgrade the Ceph agent on ceph hosts over SSH (each with a token of its own, "
            "kept while valid)", deploy_cephagent, *DEPLOY_ARGS),
    Command("consoleproxy", "install or upgrade the console proxy on consoleproxy hosts over SSH",
            deploy_consoleproxy, *DEPLOY_ARGS),
    Command("imagestore", "install or upgrade the image store agent on imagestore hosts over SSH",
            deploy_imagestore, *DEPLOY_ARGS),
    Command("ssh", "store a host's SSH credentials (encrypted) for deploys and automatic agent deploys and upgrades",
            Call("PUT", "/v1/hosts/{host}/ssh", body=SSH_BODY), HOST_ARG, *SSH_ARGS),
    Command("token", "issue a new agent token for a host (the old one stops working at once); shown only now",
            Call("POST", "/v1/hosts/{host}/token", body={}), HOST_ARG),
))
