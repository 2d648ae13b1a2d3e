"""An `hs` command is data, not code: a verb, its arguments and the one API call it makes.

A `Group` (one resource: `vm`, `l3`, `ceph`, …) lists its `Command`s; `commands/` declares them.
Only commands that are more than one call (progress bars, deploys) give a handler instead.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from coordinator.cli.declare import Arg, Call, Named
from coordinator.cli.session import Session

Handler = Callable[[Session, argparse.Namespace], Awaitable[object]]


class Command:
    """One verb of a group: its help line, its arguments, and the call it makes (or its handler).
    `columns` are the table columns (dotted paths) when the answer is a list; `names` the uuids in the
    answer that print with the name of the object they refer to (not with --json)."""

    def __init__(self, verb: str, help: str, action: Call | Handler, *args: Arg, columns: tuple[str, ...] = (),
                 names: tuple[Named, ...] = ()):
        self.verb, self.help, self.action, self.args, self.columns = verb, help, action, args, columns
        self.names = names


@dataclass(frozen=True)
class Group:
    """A resource's commands: `hs <name> <verb> …`; `help` is its line in `hs --help`."""

    name: str
    help: str
    commands: tuple[Command, ...]


class LocalCommand(Command):
    """A verb that needs no coordinator and no token (`hs pki`): `run(arguments)` is its answer;
    `hs` calls it without connecting."""

    def __init__(self, verb: str, help: str, run: Callable[[argparse.Namespace], object], *args: Arg):
        super().__init__(verb, help, self._session_free, *args)
        self.run = run

    async def _session_free(self, session: Session, a: argparse.Namespace) -> object:
        return self.run(a)
