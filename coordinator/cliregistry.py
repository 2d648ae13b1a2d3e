"""The `hs` command registry: resource modules declare their commands here, `coordinator.cli` runs them."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from coordinator.client import Client

Handler = Callable[[Client, argparse.Namespace], object]
COMMANDS: dict[tuple[str, str], tuple[Handler, list[tuple[tuple, dict]], str]] = {}
def command(group: str, verb: str, *args: tuple[tuple, dict], help: str = ""):
    def deco(fn: Handler) -> Handler:
        COMMANDS[(group, verb)] = (fn, list(args), help or (fn.__doc__ or "").strip())
        return fn
    return deco


def arg(*names, **kw) -> tuple[tuple, dict]:
    return names, kw


WAIT = arg("--wait", type=float, default=0, help="seconds to wait for the observed result")


class CliError(Exception):
    """A mistake in the command line, reported as one line."""
