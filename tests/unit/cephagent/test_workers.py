"""Worker threads by kind (no Ceph needed): long calls, however many, leave quick ones their threads."""

from __future__ import annotations

import asyncio
import threading

from cephagent.workers import Workers


async def test_quick_calls_answer_while_long_ones_fill_their_threads_and_queue():
    """More flattens than any default pool has threads (32 at most): /health and the reads still answer, and
    only `long_operations` of them run at once, the others waiting their turn."""
    workers, release, lock, running = Workers(long_operations=4, imports=1), threading.Event(), threading.Lock(), []

    def flatten() -> str:
        with lock:
            running.append(1)
        release.wait(10)
        return "flattened"

    flattens = [asyncio.ensure_future(workers.run("long", flatten)) for _ in range(40)]
    try:
        async with asyncio.timeout(5):
            while len(running) < 4:  # every flatten was handed to the workers in the first loop turn
                await asyncio.sleep(0.01)
            assert await workers.run("quick", lambda: "healthy") == "healthy"
        assert len(running) == 4 and not any(f.done() for f in flattens)
    finally:
        release.set()
    assert await asyncio.gather(*flattens) == ["flattened"] * 40
    workers.close()
