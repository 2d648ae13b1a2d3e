"""`hs console-proxy …`: the console proxies' state and version, and redeploying them (seed 1.1:
QueryConsoleProxyAgent, ReconnectConsoleProxyAgent). Console proxies are registered as hosts of kind
`consoleproxy` (`hs host add NAME ADDRESS --kind consoleproxy`) and deployed with `hs deploy consoleproxy`."""

from __future__ import annotations

import argparse

from coordinator.cli.command import Command, Group
from coordinator.cli.commands.resources import CONSOLE_PROXY
from coordinator.cli.declare import Call, arg
from coordinator.cli.session import Session

RECONNECT_ONE = Call("POST", "/v1/console-proxies/{proxy}/reconnect")
RECONNECT_ALL = Call("POST", "/v1/console-proxies/reconnect")


async def reconnect(s: Session, a: argparse.Namespace) -> object:
    """One line per redeployed proxy (the deployer's own summary), or the results as JSON."""
    got = await s.send(RECONNECT_ONE if a.proxy else RECONNECT_ALL, a)
    return got if a.json else "\n".join(r["message"] for r in got["results"]) or "no console proxy is registered"


GROUP = Group("console-proxy", "console proxies: their state and version; redeploy them", (
    Command("list", "console proxies with state, version and URL", Call("GET", "/v1/console-proxies"),
            columns=("uuid", "name", "address", "state", "agent_version", "url")),
    Command("reconnect", "redeploy a console proxy (or all): install what changed, restart it, wait for it",
            reconnect, arg("proxy", nargs="?", ref=CONSOLE_PROXY, help="console proxy (default: all)")),
))
