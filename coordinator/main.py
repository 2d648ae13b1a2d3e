"""`hs-coordinator`: run one coordinator replica."""

from __future__ import annotations

import argparse
import sys

from aiohttp import web

from agentkit import config, logs
from coordinator.app import build
from coordinator.settings import CoordinatorSettings


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="hs-coordinator", description=__doc__)
    p.add_argument("--config", help="TOML file (default /etc/hoststack/coordinator.toml)")
    args = p.parse_args(argv)
    try:
        settings = config.load(CoordinatorSettings, "coordinator", args.config)
    except config.ConfigError as e:
        sys.exit(f"hs-coordinator: {e}")
    logs.setup(settings.log_level)
    web.run_app(build(settings), host=settings.listen, port=settings.port, shutdown_timeout=2,
                print=None, access_log=None, handle_signals=True)


if __name__ == "__main__":
    main()
