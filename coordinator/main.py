"""`hs-coordinator`: run one coordinator replica.

It runs on uvloop: its TLS is compiled where asyncio's is Python, which made TLS cost a replica about
0.1 ms of CPU per API request (`bench/run tls`), and its loop is cheaper for every request besides."""

from __future__ import annotations

import sys

import uvloop
from aiohttp import web

from agentkit import config, tls
from coordinator.app import build
from coordinator.etcd.endpoints import EtcdConfig
from coordinator.settings import CoordinatorSettings


def main(argv: list[str] | None = None) -> None:
    settings = config.from_command_line(CoordinatorSettings, "coordinator", "run one coordinator replica", argv)
    try:
        EtcdConfig.from_settings(settings)
    except ValueError as e:
        sys.exit(f"coordinator: etcd settings: {e}")
    try:
        ssl_context = tls.listener(settings.tls, "coordinator")
    except tls.TlsError as e:
        sys.exit(f"coordinator: {e}")
    web.run_app(build(settings), host=settings.listen, port=settings.port, shutdown_timeout=2,
                print=None, access_log=None, handle_signals=True, ssl_context=ssl_context,
                loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
