"""The one way a HostStack process runs its long-lived tasks: bugs crash the process.

A `Supervisor` owns a process's background tasks. A task that ends with an unexpected exception is
a bug: it is logged with its traceback and the process exits non-zero after `exit_delay` seconds (a
short pause so a supervisor such as systemd does not give up on a fast crash loop, as Felix's
`die_and_restart` does). Expected failures never reach here: the task handles its domain errors.
`stop()` cancels every task and waits for all of them (the only cancel-then-await in the tree).
`together()` waits on tasks that live and die together without asyncio.TaskGroup's flaws on Python 3.11.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)
EXIT_CODE = 70  # EX_SOFTWARE: an internal error


def exit_process(code: int = EXIT_CODE) -> None:
    """Leave now, without unwinding: state on disk is consistent by design (journal, fsync)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


async def together(tasks: list[asyncio.Task[Any]]) -> None:
    """Wait on `tasks` as a TaskGroup would: the first error cancels the rest, and all their errors are
    raised together (an ExceptionGroup); a cancel of the waiting task cancels them all and propagates
    (errors that came with it are dropped: the caller is stopping).

    Not asyncio.TaskGroup, which cancels the waiting task to wake it: on Python 3.11.2 (Debian 12) a child
    failing after the group's body ended leaves that task's cancel count raised, so its next
    asyncio.timeout raises CancelledError instead of TimeoutError; and a cancel that comes as a child fails
    is dropped (CPython gh-116720, fixed in 3.13), so a loop that handles the child's error never stops."""
    if not tasks:
        return
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.wait(tasks)
        errors = [e for t in tasks if not t.cancelled() and (e := t.exception()) is not None]
    if errors:
        raise BaseExceptionGroup("tasks failed", errors)


class Supervisor:
    """Starts named tasks; the first crash ends the process (or calls `on_crash`, for tests)."""

    def __init__(self, exit_delay: float = 1.0, on_crash: Callable[[], None] = exit_process):
        self.exit_delay = exit_delay
        self.on_crash = on_crash
        self.crashed: BaseException | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        if self.crashed is None:
            self.crashed = exc
            log.critical("task %s crashed; exiting in %.1f s for a restart", task.get_name(), self.exit_delay,
                         exc_info=(type(exc), exc, exc.__traceback__))
            asyncio.get_running_loop().call_later(self.exit_delay, self.on_crash)

    async def stop(self) -> None:
        """Cancel every task and wait until all have ended (a task may not swallow the cancel)."""
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    async def __aenter__(self) -> Supervisor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
