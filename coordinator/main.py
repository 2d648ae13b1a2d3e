"""`hs-coordinator`: run one coordinator replica."""

from __future__ import annotations

import sys

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
    serve("coordinator", settings, build, shutdown_timeout=2)


if __name__ == "__main__":
    main()
