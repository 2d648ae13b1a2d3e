"""The request loop against stand-in attempts (channels are made but never connect): a failing member
is suspected and left for the next one, a deadline bounds the request, errors another attempt cannot
mend end it at once, and the highest revision seen is kept."""

from __future__ import annotations

import time
from types import SimpleNamespace

import grpc
import pytest

from coordinator.etcd.cluster import Cluster, Member
from coordinator.etcd.endpoints import EtcdConfig
from coordinator.etcd.errors import Compacted, Fault, StoreUnavailable, fault


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


def answer(revision: int) -> SimpleNamespace:
    return SimpleNamespace(header=SimpleNamespace(revision=revision))


@pytest.fixture
async def cluster():
    c = Cluster(EtcdConfig.of("127.0.0.1:1,127.0.0.1:2,127.0.0.1:3", timeout=1.0, attempt_timeout=0.3,
                              spread=False))
    await c.connect()
    yield c
    await c.close()


@pytest.mark.parametrize("code, details, kind", [
    (grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader", Fault.MEMBER),
    (grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses", Fault.MEMBER),
    (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", Fault.MEMBER),
    (grpc.StatusCode.UNKNOWN, "raft proposal dropped", Fault.MEMBER),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "etcdserver: too many requests", Fault.BUSY),
    (grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token", Fault.TOKEN),
    (grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: revision of auth store is old", Fault.TOKEN),
    (grpc.StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted", Fault.COMPACTED),
    (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: request is too large", Fault.FINAL),
    (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: authentication failed, invalid user ID or password",
     Fault.FINAL),
    (grpc.StatusCode.PERMISSION_DENIED, "etcdserver: permission denied", Fault.FINAL),
])
def test_faults(code: grpc.StatusCode, details: str, kind: Fault):
    assert fault(rpc_error(code, details)) is kind


async def test_a_failing_member_is_suspected_and_the_request_moves_on(cluster: Cluster):
    asked: list[Member] = []

    async def attempt(m: Member, timeout: float, md: object) -> SimpleNamespace:
        asked.append(m)
        if m is cluster.members[0]:
            raise rpc_error(grpc.StatusCode.UNAVAILABLE, "Socket closed")
        return answer(7)

    assert (await cluster.call("get", attempt)).header.revision == 7
    assert asked == cluster.members[:2] and cluster.revision == 7
    assert cluster.members[0].suspected.is_set()
    asked.clear()
    await cluster.call("get", attempt)  # sticks to the member that answered
    assert asked == [cluster.members[1]]


async def test_each_attempt_gets_at_most_the_attempt_timeout_and_all_of_them_the_timeout(cluster: Cluster):
    given: list[float] = []
    ends: list[float] = []  # when each attempt's own deadline falls, from the request's start

    async def attempt(m: Member, timeout: float, md: object) -> SimpleNamespace:
        given.append(timeout)
        ends.append(time.monotonic() - start + timeout)
        raise rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")

    start = time.monotonic()
    with pytest.raises(StoreUnavailable, match="no member answered within 1 s"):
        await cluster.call("txn", attempt)
    assert max(ends) <= 1.05  # no attempt may run past the request's deadline, however late it started
    assert len(given) >= 3 and max(given) <= 0.3  # every member, then again after a pause


async def test_what_another_attempt_cannot_mend_ends_the_request_at_once(cluster: Cluster):
    calls = 0

    async def attempt(m: Member, timeout: float, md: object) -> SimpleNamespace:
        nonlocal calls
        calls += 1
        raise rpc_error(grpc.StatusCode.PERMISSION_DENIED, "etcdserver: permission denied")

    with pytest.raises(StoreUnavailable, match="permission denied"):
        await cluster.call("txn", attempt)
    assert calls == 1 and not cluster.members[0].suspected.is_set()


async def test_compacted_is_its_own_answer(cluster: Cluster):
    async def attempt(m: Member, timeout: float, md: object) -> SimpleNamespace:
        raise rpc_error(grpc.StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted")

    with pytest.raises(Compacted):
        await cluster.call("get", attempt)


async def test_when_every_member_is_suspected_the_one_suspected_longest_ago_is_tried(cluster: Cluster):
    for m in (cluster.members[1], cluster.members[2], cluster.members[0]):
        m.suspect("down")
    assert cluster.pick(set()) is cluster.members[1]
    cluster.members[2].trust()
    assert cluster.pick(set()) is cluster.members[2]
    assert cluster.pick(set(cluster.members)) is None


@pytest.mark.parametrize("code, details", [
    (grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token"),
    (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"),  # how a restored etcd answers an old token
    (grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses"),  # a restarted one forgot it
])
async def test_after_a_refused_token_or_a_failed_member_the_next_attempt_authenticates_again(
        code: grpc.StatusCode, details: str):
    c = Cluster(EtcdConfig.of("127.0.0.1:1,127.0.0.1:2", timeout=1.0, attempt_timeout=0.3, spread=False,
                              user="hoststack", password="secret"))
    await c.connect()
    issued = iter(["t1", "t2"])

    async def authenticate(req: object, timeout: float) -> SimpleNamespace:
        return SimpleNamespace(token=next(issued))
    for m in c.members:
        m.auth = SimpleNamespace(Authenticate=authenticate)
    sent: list[str] = []

    async def attempt(m: Member, timeout: float, md: tuple[tuple[str, str], ...]) -> SimpleNamespace:
        sent.append(dict(md)["token"])
        if len(sent) == 1:
            raise rpc_error(code, details)
        return answer(3)

    try:
        await c.call("get", attempt)
        await c.call("get", attempt)
    finally:
        await c.close()
    assert sent == ["t1", "t2", "t2"]
