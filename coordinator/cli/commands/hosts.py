"""`hs host …`: register, list, show and forget hosts; what the deployer did on one."""

from __future__ import annotations

from coordinator.cli.command import Command, Group
from coordinator.cli.commands.resources import HOST
from coordinator.cli.declare import Call, Nested, arg

HOST_ARG = arg("host", ref=HOST)
SSH_ARGS = (arg("--user", help="SSH user (deploy: default the stored one; else root)"),
            arg("--port", type=int, help="SSH port (deploy: default the stored one; else 22)"),
            arg("--password", help="SSH password (deploy: default the stored credentials)"),
            arg("--key-file", help="SSH private key file (deploy: default the stored credentials)"))
SSH_BODY = {"user": "user", "port": "port", "password": "password", "key_file": "key_file"}

GROUP = Group("host", "machines that run an agent: register, list, show, forget", (
    Command("add", "register a host (prints its agent token once); given SSH credentials, the coordinator "
            "deploys its agent",
            Call("POST", "/v1/hosts", body={"name": "name", "address": "address", "kind": "kind",
                                             "ssh": Nested(SSH_BODY, when=("password", "key_file"))}),
            arg("name"), arg("address"),
            arg("--kind", default="kvm", choices=["kvm", "ceph", "consoleproxy", "imagestore"]),
            *SSH_ARGS),
    Command("list", "hosts and their connection state", Call("GET", "/v1/hosts"),
            columns=("uuid", "name", "address", "kind", "state", "agent_version")),
    Command("show", "one host", Call("GET", "/v1/hosts/{host}"), HOST_ARG),
    Command("delete", "forget a host", Call("DELETE", "/v1/hosts/{host}"), HOST_ARG),
    Command("deploy-log", "what the deployer did on a host", Call("GET", "/v1/hosts/{host}/deploy-log"), HOST_ARG,
            columns=("task", "phase", "ok", "duration_ms", "message")),
))
