"""Bugs crash the process: a task's unexpected exception ends it (here: calls on_crash) after a delay."""

from __future__ import annotations

import asyncio

from agentkit.supervise import Supervisor


async def test_a_crashing_task_ends_the_process_after_the_delay():
    crashed = asyncio.Event()
    sup = Supervisor(exit_delay=0.05, on_crash=crashed.set)

    async def buggy() -> None:
        raise KeyError("bug")

    sup.start(buggy(), "buggy")
    await asyncio.wait_for(crashed.wait(), 2)
    assert isinstance(sup.crashed, KeyError)
    await sup.stop()


async def test_stop_cancels_and_waits_for_every_task():
    ended = []
    sup = Supervisor(on_crash=lambda: ended.append("crash"))

    async def forever(name: str) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            ended.append(name)

    async with sup:
        sup.start(forever("a"), "a")
        sup.start(forever("b"), "b")
        await asyncio.sleep(0)
    assert sorted(ended) == ["a", "b"]  # both ran their cleanup; a cancel is not a crash


async def test_a_task_that_returns_is_not_a_crash():
    sup = Supervisor(exit_delay=0.01, on_crash=lambda: (_ for _ in ()).throw(AssertionError("crashed")))

    async def done() -> int:
        return 1

    await sup.start(done(), "done")
    await asyncio.sleep(0.05)
    assert sup.crashed is None
