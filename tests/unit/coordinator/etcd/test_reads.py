"""Point reads asked for together leave as one request, each caller answered with its own keys."""

from __future__ import annotations

import asyncio

import pytest

from coordinator.etcd.errors import StoreUnavailable
from coordinator.etcd.reads import MAX_OPS, ReadBatch


class Etcd:
    """Answers each range with its key upper-cased; records the requests it was sent."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.requests: list[list[str]] = []
        self.fail = fail
        self.release = asyncio.Event()
        self.release.set()

    async def send(self, ranges: list[str]) -> list[str]:
        self.requests.append(ranges)
        await self.release.wait()
        if self.fail:
            raise self.fail
        return [r.upper() for r in ranges]


async def test_reads_asked_together_go_as_one_request_each_answered_with_its_own():
    etcd = Etcd()
    batch = ReadBatch(etcd.send)
    got = await asyncio.gather(batch.read(["a", "b"]), batch.read(["c"]), batch.read(["d", "e", "f"]))
    assert got == [["A", "B"], ["C"], ["D", "E", "F"]]
    assert etcd.requests == [["a", "b", "c", "d", "e", "f"]]
    assert await batch.read(["g"]) == ["G"]  # a read alone: a request of its own
    assert etcd.requests[-1] == ["g"]


async def test_a_batch_stays_within_etcds_operations_per_transaction_never_splitting_a_caller():
    etcd = Etcd()
    batch = ReadBatch(etcd.send)
    callers = [[f"k{i}-{j}" for j in range(3)] for i in range(100)]
    got = await asyncio.gather(*(batch.read(c) for c in callers))
    assert got == [[k.upper() for k in c] for c in callers]
    assert all(len(r) <= MAX_OPS and len(r) % 3 == 0 for r in etcd.requests)
    assert sum(map(len, etcd.requests)) == 300 and len(etcd.requests) == 3


async def test_a_failed_batch_fails_each_caller_and_a_cancelled_caller_leaves_the_others_answered():
    batch = ReadBatch(Etcd(StoreUnavailable("etcd get failed")).send)
    got = await asyncio.gather(batch.read(["a"]), batch.read(["b"]), return_exceptions=True)
    assert [type(g) for g in got] == [StoreUnavailable, StoreUnavailable]
    etcd = Etcd()
    etcd.release.clear()
    batch = ReadBatch(etcd.send)
    gone, kept = asyncio.create_task(batch.read(["a"])), asyncio.create_task(batch.read(["b"]))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    gone.cancel()
    etcd.release.set()
    assert await kept == ["B"]
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert etcd.requests == [["a", "b"]]
