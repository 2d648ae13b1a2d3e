"""The exactly-once write path against a scripted cluster: an unanswered attempt is checked before it is
sent again, the resend is guarded by what the check read, and a compare failure is told apart from a
first attempt that committed after all."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from aetcd import rpc

from coordinator.etcd import writes
from coordinator.etcd.cluster import Unanswered
from coordinator.etcd.txn import Txn, dump

LOST = object()  # the attempt gets no answer


def answer(revision: int, succeeded: bool = True) -> rpc.TxnResponse:
    return rpc.TxnResponse(header=rpc.ResponseHeader(revision=revision), succeeded=succeeded)


def holding(revision: int, *kvs: tuple[str, object, int] | None) -> rpc.TxnResponse:
    """What a check reads: per put key (key, value, mod_revision) or None for absent."""
    ops = [rpc.ResponseOp(response_range=rpc.RangeResponse(
        kvs=[rpc.KeyValue(key=kv[0].encode(), value=dump(kv[1]), mod_revision=kv[2])] if kv else []))
        for kv in kvs]
    return rpc.TxnResponse(header=rpc.ResponseHeader(revision=revision), succeeded=True, responses=ops)


class Script:
    """A stand-in cluster answering `txn` and `txn check` calls from two queues, recording the requests."""

    def __init__(self, sends: list[Any], checks: list[rpc.TxnResponse], revision: int = 10):
        self.sends, self.checks = sends, checks
        self.revision, self.timeout = revision, 5.0
        self.sent: list[rpc.TxnRequest] = []

    async def call(self, what: str, attempt: Any, once: bool = False, deadline: float | None = None) -> Any:
        box: list[rpc.TxnRequest] = []

        async def txn(req: rpc.TxnRequest, **kw: Any) -> Any:
            box.append(req)
            return None
        await attempt(SimpleNamespace(kv=SimpleNamespace(Txn=txn)), 1.0, ())
        if what == "txn check":
            return self.checks.pop(0)
        self.sent.append(box[0])
        out = self.sends.pop(0)
        if out is LOST:
            assert once
            raise Unanswered("lost")
        return out


def guard_revisions(req: rpc.TxnRequest) -> list[tuple[str, int, int]]:
    return [(c.key.decode(), c.target, c.mod_revision) for c in req.compare]


async def test_an_answered_attempt_is_all_there_is():
    s = Script([answer(11)], [])
    assert await writes.commit(s, Txn().put("/k", 1)) == 11  # type: ignore[arg-type]
    s = Script([answer(11, succeeded=False)], [])
    assert await writes.commit(s, Txn().absent("/k").put("/k", 1)) is None  # type: ignore[arg-type]


async def test_an_unanswered_attempt_that_committed_is_found_and_not_sent_again():
    s = Script([LOST], [holding(14, ("/a", 1, 12), ("/b", 2, 12))])
    assert await writes.commit(s, Txn().put("/a", 1).put("/b", 2)) == 12  # type: ignore[arg-type]
    assert len(s.sent) == 1


@pytest.mark.parametrize("kvs", [
    (("/a", 1, 12), None),  # one key missing
    (("/a", 1, 12), ("/b", 3, 12)),  # other bytes
    (("/a", 1, 12), ("/b", 2, 13)),  # not one revision
    (("/a", 1, 9), ("/b", 2, 9)),  # older than the first attempt
])
async def test_what_the_first_attempt_did_not_write_is_not_taken_for_it(kvs):
    s = Script([LOST, answer(20)], [holding(14, *kvs)])
    assert await writes.commit(s, Txn().put("/a", 1).put("/b", 2)) == 20  # type: ignore[arg-type]
    resend = s.sent[1]
    assert guard_revisions(resend)[-2:] == [
        ("/a", rpc.Compare.MOD if kvs[0] else rpc.Compare.CREATE, kvs[0][2] if kvs[0] else 0),
        ("/b", rpc.Compare.MOD if kvs[1] else rpc.Compare.CREATE, kvs[1][2] if kvs[1] else 0)]


async def test_a_first_attempt_committing_between_check_and_resend_is_found_by_the_second_check():
    s = Script([LOST, answer(16, succeeded=False)], [holding(14, None), holding(16, ("/a", 1, 15))])
    assert await writes.commit(s, Txn().put("/a", 1)) == 15  # type: ignore[arg-type]


async def test_a_guarded_transaction_whose_resend_fails_its_compares_failed():
    s = Script([LOST, answer(16, succeeded=False)], [holding(14, None), holding(16, ("/a", 7, 15))])
    assert await writes.commit(s, Txn().absent("/a").put("/a", 1)) is None  # type: ignore[arg-type]


async def test_a_blind_put_overtaken_between_check_and_resend_goes_round_again():
    s = Script([LOST, answer(16, succeeded=False), answer(18)],
               [holding(14, None), holding(16, ("/a", 7, 15)), holding(16, ("/a", 7, 15))])
    assert await writes.commit(s, Txn().put("/a", 1)) == 18  # type: ignore[arg-type]
    assert guard_revisions(s.sent[2]) == [("/a", rpc.Compare.MOD, 15)]


async def test_a_delete_only_transaction_landed_when_its_keys_are_gone():
    gone = rpc.TxnResponse(header=rpc.ResponseHeader(revision=14), succeeded=True,
                           responses=[rpc.ResponseOp(response_range=rpc.RangeResponse(count=0))])
    s = Script([LOST], [gone])
    assert await writes.commit(s, Txn().delete("/a")) == 14  # type: ignore[arg-type]
