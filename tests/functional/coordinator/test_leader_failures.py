"""The elected replica under failure, with real replicas on a real etcd: a bug in a leader loop makes the
replica resign and exit non-zero (another one leads at once); an unreachable etcd makes it stop saying
it leads before its lease can have expired, and it leads again once etcd is back."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from coordinator.client import Client
from testbed.coordinators import Coordinator
from testbed.etcd import Etcd

pytestmark = pytest.mark.real


async def _health(c: Coordinator) -> dict:
    async with Client(c.url, c.token) as api:
        return await api.get("/health")


async def _until(what: str, check, timeout: float) -> float:
    """Seconds until `await check()` is true."""
    start = time.monotonic()
    while not await check():
        assert time.monotonic() - start < timeout, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def test_a_bug_in_a_leader_loop_makes_the_replica_resign_and_exit(run, etcd, token):
    # a long ttl: a takeover well within it shows the crashed replica revoked its lease
    buggy = Coordinator(run, etcd, token, name="buggy", leader_ttl=20, fault_leader_loop_after=4).start()
    await _until("buggy leads", lambda: _leads(buggy), 10)
    healthy = Coordinator(run, etcd, token, name="healthy", leader_ttl=20).start()
    try:
        await _until("the buggy replica exits", lambda: _exited(buggy), 15)
        exited_at = time.monotonic()
        assert buggy.proc is not None and buggy.proc.returncode not in (0, None)
        await _until("the healthy replica leads", lambda: _leads(healthy), 5)
        assert time.monotonic() - exited_at < 5
        async with Client(healthy.url, token) as api:
            assert (await api.get("/v1/leader"))["leader"] == "healthy"
    finally:
        healthy.stop()
        buggy.stop()


async def _leads(c: Coordinator) -> bool:
    return (await _health(c))["leader"] is True


async def _exited(c: Coordinator) -> bool:
    return c.proc is not None and c.proc.poll() is not None


async def test_without_etcd_the_leader_stops_saying_so_and_leads_again_later(run, token):
    paused = Etcd(run, name="etcd-paused").start()
    c = Coordinator(run, paused, token, name="lonely", leader_ttl=2).start()
    try:
        await _until("it leads", lambda: _leads(c), 10)
        assert paused.proc is not None
        os.kill(paused.proc.pid, signal.SIGSTOP)  # etcd stops answering, as in a partition
        try:
            took = await _until("it stops saying it leads", lambda: _not_leading(c), 5)
            assert took <= 2 + 0.5  # never past the lease's ttl
            for _ in range(20):  # nor while etcd stays away
                await asyncio.sleep(0.2)
                assert not await _leads(c)
        finally:
            os.kill(paused.proc.pid, signal.SIGCONT)
        await _until("it leads again", lambda: _leads(c), 30)
        assert c.proc is not None and c.proc.poll() is None
    finally:
        c.stop()
        paused.stop()


async def _not_leading(c: Coordinator) -> bool:
    return not await _leads(c)


async def test_etcd_restarted_after_6_s_a_replica_leads_again_within_the_lease_ttl(run, token):
    ttl = 5
    down = Etcd(run, name="etcd-restarted").start()
    cs = [Coordinator(run, down, token, name=f"restart-{i}", leader_ttl=ttl).start() for i in range(2)]
    try:
        await _until("a replica leads", lambda: _any_leads(cs), 10)
        down.kill()
        await asyncio.sleep(6)
        down.start()
        took = await _until("a replica leads again", lambda: _any_leads(cs), ttl + 10)
        print(f"etcd back after 6 s: a replica leads again after {took:.2f} s")
        assert took <= ttl
        assert all(c.proc is not None and c.proc.poll() is None for c in cs)
    finally:
        for c in cs:
            c.stop()
        down.stop()


async def _any_leads(cs: list[Coordinator]) -> bool:
    return any([await _leads(c) for c in cs])
