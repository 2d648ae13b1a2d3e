"""A host stream's bounded queue: lines are taken joined, idleness is reported, a laggard is cut off."""

from __future__ import annotations

import asyncio

from coordinator.fanout.subscription import Subscription


async def test_pending_lines_are_taken_together():
    sub = Subscription("h", limit=100)
    assert sub.offer(b"a\n") and sub.offer(b"b\n")
    assert sub.pending == 4
    assert await sub.next(1.0) == b"a\nb\n"
    assert sub.pending == 0


async def test_an_idle_stream_gets_an_empty_read_after_the_idle_time():
    sub = Subscription("h", limit=100)
    assert await sub.next(0.01) == b""


async def test_a_waiting_writer_wakes_at_the_first_line():
    sub = Subscription("h", limit=100)
    reader = asyncio.create_task(sub.next(10.0))
    await asyncio.sleep(0)
    sub.offer(b"x\n")
    assert await asyncio.wait_for(reader, 1.0) == b"x\n"


async def test_a_consumer_too_far_behind_is_cut_off_and_its_lines_dropped():
    sub = Subscription("h", limit=10)
    assert sub.offer(b"a" * 30) and not sub.cut  # one line always fits an empty queue
    assert not sub.offer(b"b")  # this one cuts it off
    assert sub.cut and sub.pending == 0
    assert sub.offer(b"c") and sub.pending == 0
    assert await sub.next(1.0) is None


async def test_a_cut_off_wakes_the_writer():
    sub = Subscription("h", limit=10)
    reader = asyncio.create_task(sub.next(10.0))
    await asyncio.sleep(0)
    sub.cut_off()
    assert await asyncio.wait_for(reader, 1.0) is None
