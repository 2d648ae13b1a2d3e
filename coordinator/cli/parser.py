"""argparse from the command declarations: `hs RESOURCE VERB …`, a help line for every resource and verb."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

from agentkit.usage import Parser
from coordinator.cli.command import Group
from coordinator.cli.declare import Arg

CONNECTION = ("connection: --url or HS_URL (default https://127.0.0.1:8740; a bare HOST:PORT means https), "
              "--token or HS_TOKEN, --ca or HS_CA (default /etc/hoststack/pki/ca.pem), else `url`, `token` and "
              "`ca` in /etc/hoststack/cli.toml (HS_CLI_CONFIG names another file). Arguments that name an object "
              "take its uuid or its unique name.")

JSON_HELP = "print the API's JSON"


def build(groups: Sequence[Group]) -> Parser:
    p = Parser(prog="hs", description="HostStack command line", epilog=CONNECTION)
    p.add_argument("--url", help="coordinator URL, or several comma-separated replicas (env HS_URL)")
    p.add_argument("--token", help="admin token (env HS_TOKEN)")
    p.add_argument("--ca", help="CA certificate that verifies the coordinator (env HS_CA)")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    resources = p.add_subparsers(title="resources", dest="group", required=True, metavar="RESOURCE")
    for group in groups:
        gp = resources.add_parser(group.name, help=group.help, description=group.help)
        verbs = gp.add_subparsers(title="verbs", dest="verb", required=True, metavar="VERB")
        for command in group.commands:
            cp = verbs.add_parser(command.verb, help=command.help, description=command.help)
            exclusive: dict[str, argparse._MutuallyExclusiveGroup] = {}
            for spec in command.args:
                target: argparse._ActionsContainer = cp
                if one_of := spec.exclusive or spec.alternative:
                    if one_of not in exclusive:
                        exclusive[one_of] = cp.add_mutually_exclusive_group(required=spec.exclusive is not None)
                    target = exclusive[one_of]
                target.add_argument(*spec.names, **_options(spec))
            # also after the verb, where one adds it to a command line just run (`hs vm list --json`); left
            # out, it does not undo one given before the resource
            cp.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=JSON_HELP)
            cp.set_defaults(command=command)
    return p


def _options(spec: Arg) -> dict[str, Any]:
    options = dict(spec.options)
    if spec.ref is not None:
        options["help"] = f"{options.get('help') or spec.ref.noun}: uuid or name"
    if not spec.names[0].startswith("-"):
        options["metavar"] = spec.label
    if spec.env:  # a string, so argparse converts it with the argument's `type` as it would the flag's value
        options["default"] = os.environ.get(spec.env)
    return options
