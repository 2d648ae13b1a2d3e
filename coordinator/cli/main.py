"""`hs` entry point: parse, connect, resolve names, make the call, name what its answer refers to (an empty
answer: what the call did to which object), print.
Every expected failure is one `hs: …` line on stderr and exit status 1 (a `--wait` that ran out too, after the
answer); API errors name the field at fault."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

import aiohttp

from agentkit.pipes import emit
from coordinator.cli import config, parser, render
from coordinator.cli.command import Command, LocalCommand
from coordinator.cli.commands import GROUPS
from coordinator.cli.declare import Call
from coordinator.cli.errors import CliError
from coordinator.cli.session import Session, done, naming
from coordinator.client import ApiClientError, Client


async def run(command: Command, a: argparse.Namespace, conn: config.Connection) -> object:
    async with Client(conn.url, conn.token, ca=conn.ca) as client:
        session = Session(client)
        try:
            if isinstance(command.action, Call):
                await session.resolve(command.args, command.action, a)
                result = await session.send(command.action, a)
                if result is None and not a.json:
                    return done(command.action, command.args, a)
            else:
                await session.resolve(command.args, None, a)
                result = await command.action(session, a)
            if not a.json:
                await session.name(result, command.names)
            return result
        except ApiClientError as e:
            where = f" ({naming(command.args, session.last, e.field)})" if e.field else ""
            raise CliError(f"{e.message}{where}") from None
        except asyncio.CancelledError:  # Ctrl-C: a change asked for may be under way (a --wait cut short)
            if session.unanswered is not None and session.unanswered.method != "GET":
                print("hs: interrupted before the coordinator answered: what was asked may still be done; "
                      "look with the show command before asking again", file=sys.stderr)
            raise


def main(argv: list[str] | None = None) -> None:
    a = parser.build(GROUPS).parse_args(argv)
    command: Command = a.command
    if isinstance(command, LocalCommand):
        try:
            emit(render.output(command.run(a), command.columns, a.json))
        except CliError as e:
            sys.exit(f"hs: {e}")
        return
    try:
        conn = config.load(a.url, a.token, os.environ, a.ca)
    except CliError as e:
        sys.exit(f"hs: {e}")
    try:
        result = asyncio.run(run(command, a, conn))
    except CliError as e:
        sys.exit(f"hs: {e}")
    except json.JSONDecodeError:
        sys.exit(f"hs: {conn.url} answered with something other than JSON: is it the coordinator?")
    except (OSError, aiohttp.ClientError) as e:
        sys.exit(f"hs: cannot reach the coordinator at {conn.url}: {e}")
    except KeyboardInterrupt:
        sys.exit(130)
    emit(render.output(result, command.columns, a.json))
    if isinstance(result, dict) and result.get("pending"):  # the API's 202: the wait ran out before the result
        sys.exit(f"hs: --wait {a.wait:g} ran out with {result['pending']} still pending; it goes on, not called off "
                 "(look with the show command)")
