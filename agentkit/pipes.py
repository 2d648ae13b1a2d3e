"""Output to a pipe whose reader went away (`hs vm list | head -1`): a quiet exit, as a process killed by
SIGPIPE, not a traceback. Python ignores SIGPIPE so that sockets fail with an error instead (the CLIs
talk to the coordinator), so stdout gets the same treatment by hand."""

from __future__ import annotations

import os
import sys


def emit(text: str) -> None:
    """Print `text` and a newline to stdout now."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the interpreter's flush at exit fails too
        sys.exit(128 + 13)  # the status of a process SIGPIPE killed
