"""The task runner behind image imports: deduplication, queueing, progress and errors (no Ceph needed)."""

from __future__ import annotations

import asyncio

import pytest

from agentkit.supervise import Supervisor
from cephagent.errors import ImportFailed, TaskNotFound, TooManyTasks
from cephagent.tasks import Tasks
from cephagent.wire import ImageInfo, Progress


async def settled(*tasks, states=("running",)) -> None:
    """Until every task is in one of `states`: its steps take loop turns, however slowly the machine runs them
    (a fixed sleep can end first); bounded, so a task that never gets there fails the test."""
    async with asyncio.timeout(5):
        while any(t.info().state not in states for t in tasks):
            await asyncio.sleep(0.01)


async def test_same_key_while_running_is_one_task_and_others_queue():
    tasks = Tasks(concurrency=1)
    release = asyncio.Event()

    async def work(report):
        report(Progress(phase="write", done=1, total=4))
        await release.wait()
        return ImageInfo(pool="p", name="i", size=4)

    a = tasks.submit("image-import", "p/i", work)
    assert tasks.submit("image-import", "p/i", work) is a
    b = tasks.submit("image-import", "p/j", work)
    await settled(a)
    assert (a.info().state, a.info().percent, b.info().state) == ("running", 25.0, "queued")
    release.set()
    await settled(a, b, states=("succeeded",))
    assert a.info().state == b.info().state == "succeeded" and a.info().result.size == 4
    assert tasks.submit("image-import", "p/i", work) is not a  # finished: a new request is a new task
    await tasks.close()


async def test_open_tasks_are_bounded_and_a_retry_still_finds_its_own():
    """Whoever holds the token could queue imports without end: each one more is a coroutine in the table."""
    tasks = Tasks(concurrency=1, max_open=3)
    release = asyncio.Event()

    async def work(report):
        await release.wait()
        return ImageInfo(pool="p", name="i", size=4)

    first = [tasks.submit("image-import", f"p/i{n}", work) for n in range(3)]
    with pytest.raises(TooManyTasks, match="3 imports are queued or running"):
        tasks.submit("image-import", "p/i3", work)
    assert tasks.submit("image-import", "p/i2", work) is first[2]
    release.set()
    await settled(*first, states=("succeeded",))
    assert tasks.submit("image-import", "p/i3", work).info().state in ("queued", "running")
    await tasks.close()


async def test_failures_are_reported_with_their_code():
    tasks = Tasks()

    async def fails(report):
        raise ImportFailed(spec="p/i", url="http://x/", reason="HTTP 404")

    t1 = tasks.submit("image-import", "p/i", fails)
    await settled(t1, states=("failed",))
    assert t1.info().error.model_dump() == {"code": "import_failed",
                                            "message": "importing p/i from http://x/: HTTP 404"}
    with pytest.raises(TaskNotFound):
        tasks.get("nope")


async def test_a_bug_ends_the_process():
    """An unexpected exception is a bug: shown on its task, then the process exits for systemd to restart it
    (it used to keep serving with the bug's state)."""
    crashed = asyncio.Event()
    tasks = Tasks(supervisor=Supervisor(exit_delay=0, on_crash=crashed.set))

    async def crashes(report):
        raise ZeroDivisionError("bug")

    t = tasks.submit("image-import", "p/k", crashes)
    async with asyncio.timeout(5):
        await crashed.wait()
    assert t.info().error.model_dump() == {"code": "internal", "message": "ZeroDivisionError: bug"}
    await tasks.close()


async def test_close_cancels_running_work():
    tasks = Tasks()

    async def forever(report):
        await asyncio.Event().wait()

    t = tasks.submit("image-import", "p/i", forever)
    await settled(t)
    await tasks.close()
    assert (t.state, t.error.code) == ("failed", "cancelled")


async def test_cancel_ends_the_queued_and_running_tasks_of_a_key_and_waits_for_them():
    """Deleting an image cancels its import wherever it is: the work has ended when `cancel` returns (a DELETE
    removes the image next), and the task says why."""
    tasks = Tasks(concurrency=1)
    ended: list[str] = []

    async def forever(report):
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0.05)  # cleanup that takes loop turns: cancel must wait for it
            ended.append("running")

    running = tasks.submit("image-import", "p/i", forever)
    queued = tasks.submit("image-import", "p/j", forever)
    other = tasks.submit("image-import", "p/k", forever)
    await settled(running)
    await tasks.cancel("p/i", "the image was deleted")
    assert ended == ["running"]
    await tasks.cancel("p/j", "the image was deleted")
    await tasks.cancel("p/nothing", "the image was deleted")
    for t in (running, queued):
        assert (t.info().state, t.info().error.model_dump()) == (
            "failed", {"code": "cancelled", "message": "the image was deleted"})
    await settled(other)  # the slot was given back
    fresh = tasks.submit("image-import", "p/n", forever)
    await tasks.cancel("p/n", "the image was deleted")  # before its first step
    assert (fresh.info().state, fresh.info().error.code) == ("failed", "cancelled")
    await tasks.close()
