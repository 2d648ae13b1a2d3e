"""The watch over stand-in gRPC streams (the real etcd: tests/functional/coordinator/etcd/): a stream etcd
ended is a member failure however the watch learns it, and the watch goes on on the next member; a
watch given a timeline goes on only on data of that timeline."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import grpc
import pytest
from aetcd import rpc

from coordinator.etcd.cluster import Cluster
from coordinator.etcd.endpoints import EtcdConfig
from coordinator.etcd.errors import Rewound
from coordinator.etcd.store import Change, _group_by_revision
from coordinator.etcd.timeline import KEY
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


@pytest.mark.parametrize("marker, rewound", [(None, False), ({"id": "t1"}, True)])
async def test_a_watch_goes_on_only_on_the_timeline_it_was_given(cluster: Cluster, marker: object, rewound: bool):
    """Restored and written past the watch's revision before it reconnected: etcd is not behind, but its
    data is another restore's."""
    async def timeline(request: rpc.RangeRequest, **kw: object) -> rpc.RangeResponse:
        assert request.key == KEY.encode()
        kvs = [rpc.KeyValue(key=request.key, value=json.dumps(marker).encode())] if marker else []
        return rpc.RangeResponse(header=rpc.ResponseHeader(revision=9), kvs=kvs)
    for m in cluster.members:
        m.watch = SimpleNamespace(Watch=lambda metadata: Call(created(9), put("/p/a", 10)))
        m.kv = SimpleNamespace(Range=timeline)
    cluster.revision = 20  # the revisions handed out before the restore

    async def first_batch() -> list[Change]:
        async for batch in watch(cluster, "/p/", 6, _group_by_revision, on=""):
            return batch
        raise AssertionError("the watch ended")

    if rewound:
        with pytest.raises(Rewound, match="etcd's data is from another restore: timeline 't1', the watch started on "
                                          "'original'"):
            await first_batch()
        assert cluster.revision == 9
    else:
        assert [ch.key for ch in await first_batch()] == ["/p/a"]
