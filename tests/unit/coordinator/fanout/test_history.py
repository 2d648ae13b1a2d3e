"""The bounded window of recent revisions a resuming agent's diff is made from."""

from __future__ import annotations

from coordinator.etcd.keys import Scope
from coordinator.fanout.history import History
from coordinator.fanout.state import Touch


def touches(n: int, key: str) -> list[Touch]:
    return [Touch(Scope.ALL, "", f"{key}/{i}") for i in range(n)]


def test_the_window_covers_every_revision_after_its_start():
    h = History(capacity=100)
    h.reset(10)
    for rev in (11, 12, 15):
        h.add(rev, touches(2, f"r{rev}"))
    assert h.covers(10) and not h.covers(9)
    assert [t.key for t in h.after(11)] == ["r12/0", "r12/1", "r15/0", "r15/1"]
    assert list(h.after(15)) == []


def test_a_full_window_forgets_its_oldest_revisions():
    h = History(capacity=10)
    h.reset(1)
    for rev in range(2, 9):
        h.add(rev, touches(2, f"r{rev}"))
    assert not h.covers(3) and h.covers(h.start) and h.start > 1
    assert sum(1 for _ in h.after(h.start)) <= 10
    assert [t.key for t in h.after(7)] == ["r8/0", "r8/1"]


def test_one_revision_larger_than_the_window_is_kept():
    h = History(capacity=4)
    h.reset(1)
    h.add(2, touches(9, "big"))
    assert h.covers(1) and len(list(h.after(1))) == 9
    h.add(3, touches(1, "next"))
    assert h.start == 2 and [t.key for t in h.after(2)] == ["next/0"]
