"""agentkit.proc running real commands: a cancelled or timed-out `arun` leaves no process behind, and a command
that ends before it takes its input fails as itself, on either loop."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import uvloop

from agentkit.proc import ProcessError, arun


async def started(pidfile: Path) -> int:
    """The pid the command wrote once it runs (bounded: a command that never starts fails the test)."""
    async with asyncio.timeout(10):
        while not pidfile.exists() or not pidfile.read_text().strip():
            await asyncio.sleep(0.01)
    return int(pidfile.read_text())


def sleeper(pidfile: Path) -> list[str]:
    """A command that writes its pid, then sleeps for a minute (`exec`: the pid is the sleep's)."""
    return ["sh", "-c", f'echo $$ > "{pidfile}"; exec sleep 60']


async def test_a_cancelled_caller_leaves_no_process_behind(tmp_path):
    pidfile = tmp_path / "pid"
    call = asyncio.create_task(arun(sleeper(pidfile), timeout=None))
    pid = await started(pidfile)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert not os.path.exists(f"/proc/{pid}")  # killed and reaped: not even a zombie is left


async def test_a_command_past_its_timeout_is_killed(tmp_path):
    pidfile = tmp_path / "pid"
    with pytest.raises(ProcessError, match="timed out after 1s") as e:
        await arun(sleeper(pidfile), timeout=1)
    assert e.value.rc == -9 and not os.path.exists(f"/proc/{await started(pidfile)}")


@pytest.mark.parametrize("event_loop_policy", [asyncio.DefaultEventLoopPolicy(), uvloop.EventLoopPolicy()],
                         ids=["asyncio", "uvloop"])
async def test_a_command_that_ends_before_taking_its_input_fails_with_its_own_exit_code():
    """On uvloop (the coordinator's) the write of the input raised RuntimeError in about one call of four, once
    the process had exited (it closes the pipe then): here every call must end as the command did."""
    for _ in range(40):
        with pytest.raises(ProcessError) as e:
            await arun(["sh", "-c", "exit 3"], input="the request the command never reads")
        assert e.value.rc == 3
