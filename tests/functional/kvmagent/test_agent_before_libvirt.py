"""An agent that starts before libvirtd (boot order on a host, or a fresh deploy): the host is
Connected at once, and the VMs desired meanwhile run as soon as libvirtd answers."""

from __future__ import annotations

import asyncio
import time

import pytest

from coordinator.client import Client
from testbed import guest_image
from testbed.kvmhost import KvmHost
from testbed.switch import Switch

pytestmark = pytest.mark.real


async def test_connected_without_libvirtd_then_vm_runs_when_it_comes(run, coordinator, token):
    image = guest_image.build()
    host = KvmHost(run, Switch(run), "late")
    try:
        async with Client(coordinator.url, token) as api:
            await host.register(api)
            host.start(coordinator, start_libvirt=False)
            deadline = time.monotonic() + 20
            while (await api.get(f"/v1/hosts/{host.uuid}"))["state"] != "Connected":
                assert time.monotonic() < deadline, "agent never connected without libvirtd"
                await asyncio.sleep(0.2)
            vm = await api.post("/v1/vms", {"name": "waits", "host_uuid": host.uuid, "kernel": {
                "kernel": str(image.kernel), "initrd": str(image.initrd), "cmdline": image.cmdline("hold")}}, wait="2")
            assert vm["pending"], "no libvirtd yet: the VM cannot be running"
            host.libvirt.start()
            deadline = time.monotonic() + 60
            while ((await api.get(f"/v1/vms/{vm['uuid']}"))["observed"] or {}).get("state") != "Running":
                assert time.monotonic() < deadline, host.log()[-3000:]
                await asyncio.sleep(0.5)
            await api.delete(f"/v1/vms/{vm['uuid']}", wait="60")
    finally:
        host.close()
