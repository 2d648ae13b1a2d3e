"""`hs-coordinator`: run one coordinator replica."""

from __future__ import annotations

import sys

from aiohttp import web

from agentkit import config
from coordinator.app import build
from coordinator.etcd.endpoints import EtcdConfig
from coordinator.settings import CoordinatorSettings


def main(argv: list[str] | None = None) -> None:
    settings = config.from_command_line(CoordinatorSettings, "coordinator", "run one coordinator replica", argv)
    try:
        EtcdConfig.from_settings(settings)
    except ValueError as e:
        sys.exit(f"coordinator: etcd settings: {e}")
    web.run_app(build(settings), host=settings.listen, port=settings.port, shutdown_timeout=2,
                print=None, access_log=None, handle_signals=True)


if __name__ == "__main__":
    main()
