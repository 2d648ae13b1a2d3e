"""Connection tables, the throttle line and rate-limited log lines (pure, fake clocks)."""

from __future__ import annotations

import asyncio
import logging

from agentkit.buckets import TokenBuckets
from agentkit.fairness.connections import ConnectionTable
from agentkit.fairness.ratelog import RateLimitedLog
from flatnet.fairness.throttle import Throttle


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Conn:
    def __init__(self, name: str):
        self.name = name
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def __repr__(self) -> str:
        return self.name


def test_connections_over_the_source_cap_or_the_total_close_the_idlest_of_the_heaviest():
    table: ConnectionTable[Conn] = ConnectionTable(total=4, per_source=2)
    a1, a2, a3, b1, c1, d1 = (Conn(n) for n in ("a1", "a2", "a3", "b1", "c1", "d1"))
    assert table.admit("a", a1) == [] and table.admit("a", a2) == []
    table.touch(a1)  # a2 is now a's idlest
    assert table.admit("a", a3) == [a2]
    assert table.admit("b", b1) == [] and table.admit("c", c1) == []
    assert len(table) == 4
    assert table.admit("d", d1) == [a1]  # full: the source holding the most pays, not the newcomer
    assert table.held_by("a") == 1 and table.evicted == 2
    table.remove(b1)
    assert table.shed(2) == [a3, c1] and len(table) == 1


def test_rate_limited_log_lines_per_cause_with_the_count_left_out(caplog):
    clock = Clock()
    rlog = RateLimitedLog(logging.getLogger("test.ratelog"), interval=10, burst=2, clock=clock)
    with caplog.at_level(logging.INFO, logger="test.ratelog"):
        for _ in range(1000):
            rlog.log(logging.WARNING, "flood", "refused %s", "x", fields={"src": "10.0.0.1"})
        rlog.log(logging.WARNING, "other", "another cause")
        clock.now += 10
        rlog.log(logging.WARNING, "flood", "refused %s", "y")
    lines = [(r.getMessage(), getattr(r, "fields", {})) for r in caplog.records]
    assert lines == [("refused x", {"src": "10.0.0.1"}), ("refused x", {"src": "10.0.0.1"}), ("another cause", {}),
                     ("refused y", {"suppressed": 998})]
    assert rlog.suppressed_total == 998


async def test_a_throttled_source_waits_in_one_line_with_one_timer():
    resumed: list[str] = []
    buckets = TokenBuckets(100, burst=1)
    throttle: Throttle[str] = Throttle(buckets, resumed.append)
    assert throttle.admit("vm", "c1")  # the burst
    assert not throttle.admit("vm", "c1") and not throttle.admit("vm", "c2") and not throttle.admit("vm", "c3")
    assert not throttle.admit("vm", "c1")  # already waiting: not twice in line
    throttle.forget("c3")
    assert len(asyncio.get_running_loop()._scheduled) == 1  # type: ignore[attr-defined]
    async with asyncio.timeout(5):  # one turn per timer: a slow machine may run c1's with the test's first
        while len(resumed) < 2:
            await asyncio.sleep(0.01)
    assert resumed == ["c1", "c2"] and throttle.parked == 3
