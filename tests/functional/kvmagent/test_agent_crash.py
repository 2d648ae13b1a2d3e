"""Bugs crash the process: an exception of no expected kind inside a component ends the real agent
process non-zero (70, EX_SOFTWARE) within 5 s, so that its supervisor restarts it.

The fault is injected through the test-only hook of the VMs component (`HS_KVMAGENT_TEST_FAULT=<VM
name>`, `kvmagent/components.py`): the desired state reaching the agent holds a VM of that name. The
agent has its libvirtd: the VMs component runs only after anti-spoofing filtered the revision, which
needs the host's domains listed.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from coordinator.client import Client
from testbed.kvmhost import KvmHost
from testbed.switch import Switch

pytestmark = pytest.mark.real


async def test_a_bug_in_a_component_ends_the_agent_within_5_s(run, coordinator, token):
    host = KvmHost(run, Switch(run), "crash")
    try:
        async with Client(coordinator.url, token) as api:
            await host.register(api)
            host.start(coordinator, test_fault="boom")
            deadline = time.monotonic() + 20
            while (await api.get(f"/v1/hosts/{host.uuid}"))["state"] != "Connected":
                assert time.monotonic() < deadline, "agent never connected"
                await asyncio.sleep(0.2)
            await api.post("/v1/vms", {"name": "calm", "host_uuid": host.uuid, "kernel": {"kernel": "none"}})
            await asyncio.sleep(1)
            assert host.agent.poll() is None, "an ordinary VM must not crash the agent"
            await api.post("/v1/vms", {"name": "boom", "host_uuid": host.uuid, "kernel": {"kernel": "none"}})
            t0 = time.monotonic()
            while host.agent.poll() is None:
                assert time.monotonic() - t0 < 5, "the agent still runs 5 s after a bug in a component"
                await asyncio.sleep(0.05)
        assert host.agent.returncode == 70, host.log()[-3000:]
        assert "task component vms crashed" in host.log()
    finally:
        host.close()
