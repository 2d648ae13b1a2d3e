"""The watch over stand-in gRPC streams (the real etcd: tests/functional/coordinator/etcd/): a stream etcd
ended is a member failure however the watch learns it, and the watch goes on on the next member."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import grpc
import pytest
from aetcd import rpc

from coordinator.etcd.cluster import Cluster
from coordinator.etcd.endpoints import EtcdConfig
from coordinator.etcd.store import Change, _group_by_revision
from coordinator.etcd.watch import watch


class Call:
    """A watch RPC as gRPC's aio call behaves: responses read in order; once etcd ended it, a write raises
    InvalidStateError before the read under way is told how it ended (the status arrives first)."""

    def __init__(self, *responses: object):
        self.responses: asyncio.Queue[object] = asyncio.Queue()
        for r in responses:
            self.responses.put_nowait(r)
        self.reads = 0
        self.ended: Exception | None = None

    def end(self, error: Exception) -> None:
        self.ended = error

    async def write(self, request: object) -> None:
        if self.ended is not None:
            self.responses.put_nowait(self.ended)  # the read learns it next
            raise asyncio.InvalidStateError("RPC already finished.")

    async def read(self) -> object:
        self.reads += 1
        r = await self.responses.get()
        if isinstance(r, Exception):
            raise r
        return r

    def cancel(self) -> None:
        pass


def created(revision: int) -> rpc.WatchResponse:
    return rpc.WatchResponse(header=rpc.ResponseHeader(revision=revision), created=True)


def put(key: str, revision: int) -> rpc.WatchResponse:
    kv = rpc.KeyValue(key=key.encode(), value=b"1", mod_revision=revision)
    return rpc.WatchResponse(header=rpc.ResponseHeader(revision=revision), events=[rpc.Event(kv=kv)])


@pytest.fixture
async def cluster():
    c = Cluster(EtcdConfig.of("127.0.0.1:1,127.0.0.1:2", timeout=2.0, attempt_timeout=0.3, spread=False))
    await c.connect()
    yield c
    await c.close()


async def test_a_stream_etcd_ended_as_another_stream_failed_moves_on_to_the_next_member(cluster: Cluster):
    """etcd stopping ends every watch stream at once: the first failure suspects the member, which wakes
    the other watches to probe their streams, and a probe of a stream that has ended is refused."""
    first, second = Call(created(5)), Call(created(5), put("/p/a", 6))
    calls = iter([first, second])
    for m in cluster.members:
        m.watch = SimpleNamespace(Watch=lambda metadata: next(calls))

    async def first_batch() -> list[Change]:
        async for batch in watch(cluster, "/p/", 6, _group_by_revision):
            return batch
        raise AssertionError("the watch ended")

    task = asyncio.create_task(first_batch())
    async with asyncio.timeout(5):
        while first.reads < 2:  # created, then waiting for events
            await asyncio.sleep(0.01)
        first.end(grpc.aio.AioRpcError(grpc.StatusCode.INTERNAL, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                       details="Stream removed"))
        cluster.members[0].suspect("another watch on it failed")
        batch = await task
    assert [(ch.key, ch.revision) for ch in batch] == [("/p/a", 6)]
