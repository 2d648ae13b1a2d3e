"""Long-running agent work (image imports) as tasks the coordinator polls for progress and result.

Tasks live in memory: after an agent restart the coordinator re-submits, which is safe because the work
is idempotent. Submitting work whose key matches a queued or running task returns that task, so a
retried request never starts a second import of the same image; deleting the image cancels its task
(queued or running) and waits until it has ended. At most `concurrency` tasks run at
once; the rest wait in state `queued`, at most `max_open` queued and running (one more is refused
`TooManyTasks`, so the table is bounded). Finished tasks are kept for polling, the oldest dropped first.
An expected failure (a `CephAgentError`) is the task's result; any other exception is a bug and ends the
process through the Supervisor that runs the tasks (agentkit.supervise), for systemd to restart it.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import get_args

from agentkit.metrics import LabelValues, Registry, every
from agentkit.supervise import Supervisor
from cephagent.errors import CephAgentError, TaskNotFound, TooManyTasks
from cephagent.wire import ImageInfo, Progress, TaskError, TaskInfo, TaskState

KINDS = ("image-import",)  # what `submit` is given
STATES: tuple[TaskState, ...] = get_args(TaskState)

Work = Callable[[Callable[[Progress], None]], Awaitable[ImageInfo]]


@dataclass
class Task:
    kind: str
    key: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    state: TaskState = "queued"
    progress: Progress = field(default_factory=lambda: Progress(phase="queued"))
    result: ImageInfo | None = None
    error: TaskError | None = None
    job: asyncio.Task[None] | None = field(default=None, repr=False)
    cancelled_because: str = "the agent is shutting down"

    def report(self, progress: Progress) -> None:
        """Progress callback; may be called from worker threads (a plain attribute swap)."""
        self.progress = progress

    def stopped(self) -> None:
        """The work was cancelled (the agent stopping, or the image deleted)."""
        self.state, self.error = "failed", TaskError(code="cancelled", message=self.cancelled_because)

    def info(self) -> TaskInfo:
        return TaskInfo(id=self.id, kind=self.kind, state=self.state, progress=self.progress,
                        percent=self.progress.percent, result=self.result, error=self.error)


class Tasks:
    def __init__(self, concurrency: int = 2, keep: int = 500, supervisor: Supervisor | None = None,
                 max_open: int = 100):
        self._slots = asyncio.Semaphore(concurrency)
        self._keep, self._max_open = keep, max_open
        self._tasks: dict[str, Task] = {}
        self._supervisor = supervisor or Supervisor()

    def submit(self, kind: str, key: str, work: Work) -> Task:
        if (same := self.ongoing(key)) is not None:
            return same
        open_tasks = [t for t in self._tasks.values() if t.state in ("queued", "running")]
        if len(open_tasks) >= self._max_open:
            raise TooManyTasks(count=len(open_tasks))
        task = Task(kind=kind, key=key)
        self._tasks[task.id] = task
        task.job = self._supervisor.start(self._run(task, work), name=f"{kind}:{key}")
        self._prune()
        return task

    def ongoing(self, key: str) -> Task | None:
        """The queued or running task of `key`, if any."""
        return next((t for t in self._tasks.values() if t.key == key and t.state in ("queued", "running")), None)

    def get(self, task_id: str) -> Task:
        try:
            return self._tasks[task_id]
        except KeyError:
            raise TaskNotFound(task_id=task_id) from None

    async def cancel(self, key: str, because: str) -> None:
        """Cancel the queued or running task of `key`, if any, and wait until its work has ended."""
        for t in list(self._tasks.values()):
            if t.key == key and t.job is not None and not t.job.done():
                t.cancelled_because = because
                t.job.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t.job
                if t.error is None:  # cancelled before its first step: `_run` never ran
                    t.stopped()

    async def _run(self, task: Task, work: Work) -> None:
        try:
            async with self._slots:
                task.state = "running"
                task.progress = Progress(phase="starting")
                task.result = await work(task.report)
                task.state = "succeeded"
                task.progress = Progress(phase="done", done=task.result.size, total=task.result.size)
        except CephAgentError as e:
            task.state, task.error = "failed", TaskError(code=e.code, message=e.message)
        except asyncio.CancelledError:
            task.stopped()
            raise
        except Exception as e:  # a bug: shown on the task until the Supervisor ends the process
            task.state, task.error = "failed", TaskError(code="internal", message=f"{type(e).__name__}: {e}")
            raise

    def _prune(self) -> None:
        done = [t for t in self._tasks.values() if t.state in ("succeeded", "failed")]
        for t in done[: max(0, len(done) - self._keep)]:
            del self._tasks[t.id]

    def tracked(self) -> list[tuple[LabelValues, float]]:
        """The tasks in the table by kind and state, every known pair shown (zeros too)."""
        return every(Counter((t.kind, t.state) for t in self._tasks.values()), KINDS, STATES)

    def register(self, registry: Registry) -> None:
        """The table as a series of `registry`, read when scraped."""
        registry.gauge("hoststack_ceph_tasks", "tasks tracked, by kind and state (image-import queued and running: "
                       "the imports waiting for and holding an import_concurrency slot; the last 500 finished "
                       "ones are kept)", self.tracked, ("kind", "state"))

    async def close(self) -> None:
        """Cancel running work and wait for it to stop."""
        await self._supervisor.stop()
