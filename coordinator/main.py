"""`hs-coordinator`: run one coordinator replica.

It runs on uvloop: its TLS is compiled where asyncio's is Python, which made TLS cost a replica about
0.1 ms of CPU per API request (`bench/run tls`), and its loop is cheaper for every request besides."""

from __future__ import annotations

import sys

import uvloop

from agentkit import config
from agentkit.web import serve
from coordinator.app import build
from coordinator.etcd.endpoints import EtcdConfig
from coordinator.settings import CoordinatorSettings


def main(argv: list[str] | None = None) -> None:
    settings = config.from_command_line(CoordinatorSettings, "coordinator", "run one coordinator replica", argv)
    try:
        EtcdConfig.from_settings(settings)
    except ValueError as e:
        sys.exit(f"coordinator: etcd settings: {e}")
    serve("coordinator", settings, build, shutdown_timeout=2, loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
