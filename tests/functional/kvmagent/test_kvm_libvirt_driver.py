"""The libvirt driver against libvirt's own `test:///default` driver (events included; the pure parts:
tests/unit/kvmagent/test_libvirt_driver.py)."""

from __future__ import annotations

import asyncio
import threading

import libvirt
import libvirtaio
import pytest

from agentkit.model import VmState
from agentkit.supervise import Supervisor
from kvmagent.libvirt_driver import DriverError, LibvirtDriver, NoDomain

XML = """<domain type='test'><name>drv1</name><uuid>11111111-2222-3333-4444-555555555555</uuid>
<memory unit='MiB'>64</memory><os><type>hvm</type></os>
<metadata><hs:vm xmlns:hs='urn:x-test' vm-uuid='drv1'/></metadata>
<devices><disk type='file' device='cdrom'><source file='/a.iso'/><target dev='hdc' bus='ide'/><readonly/>
<alias name='ua-cdrom'/></disk></devices></domain>"""
UUID = "11111111-2222-3333-4444-555555555555"


@pytest.fixture
async def driver():
    d = LibvirtDriver("test:///default")
    events = []
    d.on_event(events.append)
    await d.connect(timeout=2)
    d.events = events
    yield d
    await d.close()


async def until(pred, timeout=2.0):
    end = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < end, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_lifecycle_and_events(driver):
    assert await driver.define(XML) == UUID
    assert await driver.state(UUID) is VmState.STOPPED
    await driver.start(UUID)
    await driver.pause(UUID)
    assert await driver.state(UUID) is VmState.PAUSED
    await driver.resume(UUID)
    assert await driver.stop(UUID, timeout=2) is True
    await driver.start(UUID)
    await driver.destroy(UUID)
    await driver.destroy(UUID)  # idempotent
    await driver.undefine(UUID)
    want = ["DEFINED", "STARTED", "SUSPENDED", "RESUMED", "STOPPED", "STARTED", "STOPPED", "UNDEFINED"]
    await until(lambda: [e.event for e in driver.events] == want)
    assert {e.uuid for e in driver.events} == {UUID}
    with pytest.raises(NoDomain):
        await driver.state(UUID)


async def test_out_of_band_changes_arrive_as_events(driver):
    await driver.define(XML)
    other = libvirt.open("test:///default")
    try:
        other.lookupByUUIDString(UUID).create()
        await until(lambda: any(e.event == "STARTED" for e in driver.events))
        other.lookupByUUIDString(UUID).destroy()
        await until(lambda: any(e.event == "STOPPED" for e in driver.events))
    finally:
        other.close()
        await driver.undefine(UUID)


async def test_list_and_metadata(driver):
    await driver.define(XML)
    try:
        infos = {i.name: i for i in await driver.list_domains("urn:x-test")}
        assert 'vm-uuid="drv1"' in infos["drv1"].meta
        assert infos["test"].meta is None  # the test driver's own domain is foreign
        await driver.set_metadata(UUID, "<vm vm-uuid='drv1' intent='Running'/>", "hs", "urn:x-test")
        assert "intent" in (await driver.domain_info(UUID, "urn:x-test")).meta
        assert await driver.domain_info("99999999-2222-3333-4444-555555555555", "urn:x-test") is None
        assert "/a.iso" in await driver.xml(UUID, inactive=True)
    finally:
        await driver.undefine(UUID)


async def test_errors_are_driver_errors(driver):
    with pytest.raises(DriverError):
        await driver.define("<domain type='test'><name>broken</name></domain>")


async def test_not_connected_is_a_driver_error():
    d = LibvirtDriver("qemu:///system?socket=/nonexistent/sock")
    with pytest.raises(DriverError):
        await d.connect(timeout=0.1)
    with pytest.raises(DriverError, match="not connected"):
        await d.start(UUID)
    await d.close()


async def test_a_bug_in_an_event_hook_ends_the_process():
    crashed = asyncio.Event()
    d = LibvirtDriver("test:///default", tasks=Supervisor(exit_delay=0.01, on_crash=crashed.set))
    d.on_event(lambda ev: {}[ev.name])  # a hook with a bug: libvirt's C caller would swallow it
    await d.connect(timeout=2)
    try:
        await d.define(XML)
        await asyncio.wait_for(crashed.wait(), 2)
        await d.undefine(UUID)
    finally:
        await d.close()


async def test_close_lets_a_running_call_end_first_and_leaves_libvirt_idle():
    """A call still running on the pool holds the connection: one returning after the event loop closed would
    call back into libvirtaio there (kvmagent's shutdown logged "Event loop is closed")."""
    d = LibvirtDriver("test:///default", close_grace=5)
    await d.connect(timeout=2)
    started, release = threading.Event(), threading.Event()

    def slow(conn: libvirt.virConnect) -> int:
        started.set()
        release.wait(5)
        return conn.getVersion()

    call = asyncio.create_task(d._call("a slow call", slow))
    assert await asyncio.to_thread(started.wait, 5)
    call.cancel()  # as stopping the component waiting on it does: the call runs on all the same
    closing = asyncio.create_task(d.close())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not closing.done()
    release.set()
    await asyncio.wait_for(closing, 5)
    impl = libvirtaio.getCurrentImpl()
    assert impl is not None and impl.is_idle() and not d.connected
