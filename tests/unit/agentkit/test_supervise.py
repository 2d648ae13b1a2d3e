"""Bugs crash the process: a task's unexpected exception ends it (here: calls on_crash) after a delay.
Tasks that live and die together end together, and the task waiting on them never loses its cancel."""

from __future__ import annotations

import asyncio

import pytest

from agentkit.supervise import Supervisor, together


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


async def idle() -> None:
    await asyncio.Event().wait()


async def test_a_failing_task_ends_the_others_and_its_error_is_raised():
    async def buggy() -> None:
        await asyncio.sleep(0)
        raise KeyError("bug")

    other = asyncio.create_task(idle())
    with pytest.raises(ExceptionGroup) as e:
        await asyncio.wait_for(together([asyncio.create_task(buggy()), other]), 2)
    assert [type(x) for x in e.value.exceptions] == [KeyError] and other.cancelled()


async def test_after_a_failure_the_waiting_task_times_out_as_any_other():
    async def buggy() -> None:
        await asyncio.sleep(0)  # fails after the wait began (a TaskGroup's body had ended)
        raise KeyError("bug")

    with pytest.raises(ExceptionGroup):
        await together([asyncio.create_task(buggy())])
    assert asyncio.current_task().cancelling() == 0  # (3.11.2's TaskGroup leaves 1: the timeout below is a cancel)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await idle()


async def test_a_cancel_that_comes_as_a_task_fails_ends_the_wait():
    async def loop() -> None:  # handles its tasks' failures and goes on: only a cancel ends it
        while True:
            try:
                await together([asyncio.create_task(buggy()), asyncio.create_task(idle())])
            except* KeyError:
                log.append("handled")

    async def buggy() -> None:
        await asyncio.sleep(0)
        waiter.cancel()  # the stop arrives as the task fails
        raise KeyError("bug")

    log: list[str] = []
    waiter = asyncio.create_task(loop())
    done, _ = await asyncio.wait([waiter], timeout=2)
    assert waiter in done and waiter.cancelled() and log == []
