"""The one way HostStack runs a subprocess: argv lists only, bounded concurrency, rich errors."""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import subprocess
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger(__name__)
_TRUNC = 2000


@functools.cache
def _slots() -> asyncio.Semaphore:
    """At most 32 subprocesses at once. asyncio is imported where `arun` needs it: a short command that
    only `run`s (hs-ctl backup, as a scheduled job) starts without it."""
    import asyncio

    return asyncio.Semaphore(32)


class ProcessError(Exception):
    """A command failed; carries everything needed to understand why."""

    def __init__(self, args: Sequence[str], rc: int, stdout: str, stderr: str, logstring: str | None = None):
        self.argv = list(args)
        self.rc = rc
        self.stdout = stdout[-_TRUNC:]
        self.stderr = stderr[-_TRUNC:]
        shown = logstring or " ".join(self.argv)
        said = self.stderr.strip() or self.stdout.strip()
        super().__init__(f"{shown!r} {ended(rc)}" + (f": {said}" if said else ""))


def ended(rc: int) -> str:
    """How a process ended, as its return code says: `exited 1`, or `was killed by SIGTERM` (a negative code:
    a signal, such as the one a service manager sends the whole unit when it stops)."""
    if rc >= 0:
        return f"exited {rc}"
    try:
        return f"was killed by {signal.Signals(-rc).name}"
    except ValueError:
        return f"was killed by signal {-rc}"


def run(
    args: Sequence[str],
    *,
    input: str | bytes | None = None,
    rcs: Sequence[int] = (0,),
    timeout: float | None = 120,
    logstring: str | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv synchronously; raise ProcessError unless the exit code is in `rcs`.

    `logstring` replaces the argv in logs and errors when the arguments hold secrets; secrets a command
    can read from its environment go in `env` (the whole environment it gets; default: ours).
    """
    data = input.encode() if isinstance(input, str) else input
    log.debug("run %s", logstring or list(args))
    p = subprocess.run(list(args), input=data, capture_output=True, timeout=timeout, check=False,  # noqa: S603
                       env=env)
    out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    if p.returncode not in rcs:
        raise ProcessError(args, p.returncode, out, err, logstring)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


async def arun(
    args: Sequence[str],
    *,
    input: str | bytes | None = None,
    rcs: Sequence[int] = (0,),
    timeout: float | None = 120,
    logstring: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Async twin of `run`, at most 32 at once per process. A caller cancelled while the command runs (an
    import cancelled at shutdown) leaves no process behind: the command is killed and reaped first."""
    import asyncio

    data = input.encode() if isinstance(input, str) else input
    async with _slots():
        log.debug("arun %s", logstring or list(args))
        p = await asyncio.create_subprocess_exec(
            *args,
            stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            out_b, err_b = await asyncio.wait_for(_communicate(p, data), timeout)
        except TimeoutError:
            await _kill(p)
            raise ProcessError(args, -9, "", f"timed out after {timeout}s", logstring) from None
        except asyncio.CancelledError:
            await _kill(p)
            raise
    out, err = out_b.decode(errors="replace"), err_b.decode(errors="replace")
    if p.returncode not in rcs:
        raise ProcessError(args, p.returncode or 0, out, err, logstring)
    return subprocess.CompletedProcess(list(args), p.returncode or 0, out, err)


async def _communicate(p: asyncio.subprocess.Process, data: bytes | None) -> tuple[bytes, bytes]:
    """`p.communicate(data)`, where a process that ended before it took its input is no error but its own
    ending (an exit code, a signal), as on asyncio's own loop: uvloop, which the coordinator runs, closes the
    pipe once the process has exited, and `communicate`'s write then raised RuntimeError, which crashed the
    coordinator (a deployer child gone at once ended the elected replica)."""
    if data is not None:
        assert p.stdin is not None
        if not p.stdin.is_closing():
            p.stdin.write(data)
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # it ended while it was reading
                await p.stdin.drain()
        p.stdin.close()
    return await p.communicate()


async def _kill(p: asyncio.subprocess.Process) -> None:
    """SIGKILL `p` and wait until it is reaped (it may have ended on its own just before)."""
    with contextlib.suppress(ProcessLookupError):
        p.kill()
    await p.wait()
