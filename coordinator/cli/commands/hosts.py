"""`hs host …`: register, list, show and forget hosts; their SSH host keys; what the deployer did on one.

Given SSH credentials, `add` reads the host's SSH host key the way a deploy reaches the host (the
deployer's ssh) and records it with the host; the answer shows its fingerprint to compare with the host's
own (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`). `--ssh-host-key` gives it instead. Deploys accept
no other key from the host.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from typing import Any

from coordinator.cli.command import Command, Group
from coordinator.cli.commands.resources import HOST
from coordinator.cli.declare import Call, Nested, arg
from coordinator.cli.errors import CliError
from coordinator.cli.names import Found
from coordinator.cli.session import Session
from coordinator.client import ApiClientError


def _password(value: str) -> str:
    """`--password`: the password itself, or `-`: asked for on the terminal, so that it shows neither in the
    process list nor in the shell's history."""
    if value != "-":
        return value
    if not sys.stdin.isatty():
        raise argparse.ArgumentTypeError("'-' asks for the password on a terminal, and there is none: give "
                                         "--password-file or HS_SSH_PASSWORD")
    return getpass.getpass("SSH password: ")


def _password_file(path: str) -> str:
    """`--password-file`: the password is the file's first line."""
    try:
        with open(path) as f:
            password = f.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as e:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    if not password:
        raise argparse.ArgumentTypeError(f"the first line of {path} is empty: it should be the password")
    return password


HOST_ARG = arg("host", ref=HOST)
SSH_ARGS = (arg("--user", help="SSH user (deploy: default the stored one; else root)"),
            arg("--port", type=int, help="SSH port (deploy: default the stored one; else 22)"),
            arg("--password", type=_password, metavar="PASSWORD|-", alternative="password", env="HS_SSH_PASSWORD",
                help="SSH password; '-' asks for it on the terminal (one given here shows in ps and the shell's "
                     "history); default: env HS_SSH_PASSWORD, else (deploy) the stored credentials"),
            arg("--password-file", dest="password", type=_password_file, metavar="PATH", alternative="password",
                help="SSH password: the first line of this file"),
            arg("--key-file", help="SSH private key file (deploy: default the stored credentials)"))
SSH_BODY = {"user": "user", "port": "port", "password": "password", "key_file": "key_file"}
SSH_GIVEN = tuple(SSH_BODY.values())  # any one given: the host is added with SSH credentials (its agent deployed)
KEY_ARG = arg("--ssh-host-key", action="append", metavar="KEY", help="the host's SSH public host key "
              "('<type> <base64>', repeat for several); default: read from the host, fingerprint shown")
ADD = Call("POST", "/v1/hosts", body={"name": "name", "address": "address", "kind": "kind",
                                      "ssh": Nested(SSH_BODY, when=SSH_GIVEN),
                                      "ssh_host_keys": "ssh_host_key"})
SET_KEYS = Call("PUT", "/v1/hosts/{host}/ssh-host-keys", body={"keys": "ssh_host_key"})
REVEAL = Call("POST", "/v1/hosts/{host}/ssh/reveal")


async def stored_ssh(s: Session, a: argparse.Namespace, host: Found) -> dict[str, Any] | None:
    """The SSH credentials stored for `host` (user, port, password or key), None when it has none."""
    try:
        stored: dict[str, Any] = await s.send(REVEAL, a, host=host)
    except ApiClientError as e:
        if e.status != 404:
            raise
        return None
    return stored


async def scan(address: str, port: int, hint: str = "give it with --ssh-host-key") -> list[str]:
    """The host's key as the deployer's ssh (deployer.toml) reads it; a CliError saying why not, and `hint`."""
    from deployer import hostkeys
    from deployer.deploy import load_settings  # imports ansible: only commands that reach hosts pay for it

    settings = load_settings()
    try:
        return await asyncio.to_thread(hostkeys.scan, address, port, settings.ssh_executable, settings.connect_timeout)
    except hostkeys.KeyScanError as e:
        raise CliError(f"{e} ({hint})") from None


async def add_host(s: Session, a: argparse.Namespace) -> object:
    if a.ssh_host_key is None and any(getattr(a, given) for given in SSH_GIVEN):
        a.ssh_host_key = await scan(a.address, a.port or 22)
    return await s.send(ADD, a)


async def set_host_keys(s: Session, a: argparse.Namespace) -> object:
    host: Found = a.host
    keys = a.ssh_host_key
    if not keys:  # read from the port deploys will use: --port, else the stored credentials', else 22
        stored = await stored_ssh(s, a, host) if a.port is None and host.row.get("ssh_credentials") else None
        keys = await scan(host.row["address"], a.port or (stored or {}).get("port") or 22)
    return await s.send(SET_KEYS, a, ssh_host_key=keys)

GROUP = Group("host", "machines that run an agent: add, list, show, delete, their memory, their deploy log", (
    Command("add", "register a host (prints its agent token once); given SSH credentials, the coordinator "
            "deploys its agent, accepting only the SSH host key recorded now (its fingerprint is shown)",
            add_host, arg("name"), arg("address"),
            arg("--kind", default="kvm", choices=["kvm", "ceph", "consoleproxy", "imagestore"]), *SSH_ARGS, KEY_ARG),
    Command("ssh-host-key", "record the SSH host key deploys accept from a host: the one it presents now, or "
            "the one given",
            set_host_keys, HOST_ARG, KEY_ARG,
            arg("--port", type=int, help="SSH port (default: the port of its stored SSH credentials, else 22)")),
    Command("list", "hosts and their connection state", Call("GET", "/v1/hosts"),
            columns=("uuid", "name", "address", "kind", "state", "health.status", "agent_version")),
    Command("show", "one host", Call("GET", "/v1/hosts/{host}"), HOST_ARG),
    Command("capacity", "each KVM host's memory in MiB as placement counts it: what its agent reported, less "
            "kvm.reservedMemory, x mevoco.overProvisioning.memory (capacity); given to VMs that are not Stopped "
            "(allocated); available", Call("GET", "/v1/capacity"),
            columns=("host_name", "state", "total_mb", "capacity_mb", "allocated_mb", "available_mb", "vms")),
    Command("delete", "forget a host", Call("DELETE", "/v1/hosts/{host}"), HOST_ARG),
    Command("deploy-log", "what the deployer did on a host", Call("GET", "/v1/hosts/{host}/deploy-log"), HOST_ARG,
            columns=("task", "phase", "ok", "duration_ms", "message")),
))
