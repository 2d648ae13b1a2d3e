"""kvmagent end to end: coordinator API → host stream → real libvirtd (qemu TCG) → events → API.

One simulated KVM host runs the real agent process (drift policy `adopt`, so out-of-band changes stay
visible); the tiny guest boots by direct kernel boot and holds.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from agentkit.model import stream_key_vm
from coordinator.client import Client
from coordinator.etcd import keys
from testbed import guest_image
from testbed.kvmhost import KvmHost
from testbed.switch import Switch

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def image():
    return guest_image.build()


@pytest.fixture(scope="module")
def kvm(run, coordinator, token):
    host = KvmHost(run, Switch(run), "kvm1")
    asyncio.run(_register(host, coordinator, token))
    host.start(coordinator, vm={"drift_policy": "adopt"})
    yield host
    host.close()


async def _register(host, coordinator, token):
    async with Client(coordinator.url, token) as api:
        await host.register(api)


@pytest.fixture(scope="module")
def l3(run, coordinator, token):
    async def make():
        async with Client(coordinator.url, token) as api:
            net = run.subnet()
            l2 = await api.post("/v1/l2-networks", {"name": "e2e", "physical_interface": "eth1"})
            return await api.post("/v1/l3-networks", {
                "name": "e2e", "l2_uuid": l2["uuid"], "cidr": str(net), "gateway": str(net[1]),
                "ip_ranges": [{"start": str(net[10]), "end": str(net[50])}], "services": ["DHCP", "Userdata"]})
    return asyncio.run(make())


async def observed(api, vm_uuid: str) -> dict:
    return (await api.get(f"/v1/vms/{vm_uuid}"))["observed"] or {}


async def until_state(api, vm_uuid: str, state: str, timeout: float) -> float:
    t0 = time.monotonic()
    while (await observed(api, vm_uuid)).get("state") != state:
        assert time.monotonic() - t0 < timeout, f"VM never observed {state}"
        await asyncio.sleep(0.02)
    return time.monotonic() - t0


async def create(api, kvm, l3, image, name: str) -> dict:
    return await api.post("/v1/vms", {
        "name": name, "host_uuid": kvm.uuid, "l3_network_uuids": [l3["uuid"]],
        "kernel": {"kernel": str(image.kernel), "initrd": str(image.initrd), "cmdline": image.cmdline("hold")},
    }, wait="60")


async def test_lifecycle_through_the_api(api, kvm, l3, image):
    vm = await create(api, kvm, l3, image, "life")
    assert vm["observed"]["state"] == "Running" and vm["pending"] is None
    assert kvm.libvirt.virsh("domstate", vm["uuid"]).strip() == "running"
    for action, state, virsh in (("stop", "Stopped", "shut off"), ("start", "Running", "running"),
                                 ("pause", "Paused", "paused"), ("resume", "Running", "running")):
        got = await api.post(f"/v1/vms/{vm['uuid']}/actions", {"action": action}, wait="60")
        assert got["observed"]["state"] == state, action
        assert kvm.libvirt.virsh("domstate", vm["uuid"]).strip() == virsh
    console = await api.get(f"/v1/vms/{vm['uuid']}/console")
    assert console == {"protocol": "vnc", "kinds": ["vnc", "serial"], "host": str(kvm.address.ip)}
    gone = await api.delete(f"/v1/vms/{vm['uuid']}", wait="60")
    assert gone["pending"] is None
    assert vm["uuid"] not in kvm.libvirt.virsh("list", "--all", "--uuid").replace("-", "")


async def test_a_start_right_after_a_stop_power_cycles_and_its_wait_answers_once_it_runs_again(api, kvm, l3, image):
    """The guest heard the power button and goes down whatever is asked next: a start asked meanwhile is
    carried out once it is down (not adopted away as an out-of-band stop), and `?wait=` answers when the
    agent applied it, not on the running state reported from before the stop. (An agent that gets both
    changes in one batch applies only the start, level-triggered: the guest then never stops, also right.)"""
    vm = await create(api, kvm, l3, image, "cycle")
    serial = kvm.libvirt.dir / "serial" / f"{vm['uuid']}.log"
    deadline = time.monotonic() + 60
    while "HS-HOLD" not in (serial.read_text(errors="replace") if serial.exists() else ""):
        assert time.monotonic() < deadline, "the guest never came up"
        await asyncio.sleep(0.2)  # booted: it hears the power button
    stop = await api.post(f"/v1/vms/{vm['uuid']}/actions", {"action": "stop"})
    got = await api.post(f"/v1/vms/{vm['uuid']}/actions", {"action": "start"}, wait="60")
    assert got["spec"]["generation"] == stop["spec"]["generation"] + 1
    assert (got["observed"]["state"], got["observed"]["applied"]) == ("Running", got["spec"]["generation"])
    after = kvm.libvirt.virsh("domid", vm["uuid"]).strip()
    await asyncio.sleep(6)  # past the stop's forced end: the answer's guest still runs, no drift was adopted
    now = await api.get(f"/v1/vms/{vm['uuid']}")
    assert (now["spec"]["state"], now["observed"]["state"]) == ("Running", "Running")
    assert kvm.libvirt.virsh("domid", vm["uuid"]).strip() == after
    await api.delete(f"/v1/vms/{vm['uuid']}", wait="60")


async def test_a_nic_detached_while_the_guest_boots_is_unplugged_once_it_hears_it(api, kvm, l3, image):
    """A guest still booting misses the unplug request; the agent asks again until the device is gone (and
    only of the running domain: the persistent definition no longer has it, and a request there failed)."""
    vm = await create(api, kvm, l3, image, "unplug")  # answered once qemu runs: the guest is booting
    await api.delete(f"/v1/vms/{vm['uuid']}/nics/{l3['uuid']}")
    deadline = time.monotonic() + 60
    while plugged := kvm.libvirt.virsh("domiflist", vm["uuid"]).strip():
        assert time.monotonic() < deadline, f"still plugged: {plugged}; {await observed(api, vm['uuid'])}"
        await asyncio.sleep(0.5)
    assert kvm.libvirt.virsh("domiflist", "--inactive", vm["uuid"]).strip() == ""
    assert (await observed(api, vm["uuid"])).get("error") is None
    await api.delete(f"/v1/vms/{vm['uuid']}", wait="60")


async def desired(api, vm_uuid: str, state: str, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while (spec := (await api.get(f"/v1/vms/{vm_uuid}"))["spec"])["state"] != state:
        assert time.monotonic() < deadline, f"desired state still {spec['state']}, not the adopted {state}"
        await asyncio.sleep(0.1)
    return spec


async def test_out_of_band_destroy_and_start_reach_the_api_fast_and_are_adopted(api, kvm, l3, image):
    vm = await create(api, kvm, l3, image, "oob")
    kvm.libvirt.virsh("destroy", vm["uuid"])
    await until_state(api, vm["uuid"], "Stopped", 5)  # libvirt's event, not the resync, brought it
    stopped = await desired(api, vm["uuid"], "Stopped")  # drift policy adopt: the user's stop is the intent now
    assert stopped["generation"] > vm["spec"]["generation"]
    kvm.libvirt.virsh("start", vm["uuid"])
    await until_state(api, vm["uuid"], "Running", 5)
    await desired(api, vm["uuid"], "Running")
    await asyncio.sleep(1)  # adopted, not fought over: the VM stays running, the report carries no drift
    assert (await observed(api, vm["uuid"])).get("drift") is None
    assert kvm.libvirt.virsh("domstate", vm["uuid"]).strip() == "running"
    await api.delete(f"/v1/vms/{vm['uuid']}", wait="60")


async def test_a_second_agent_started_on_the_host_ends_at_once_and_the_first_serves_on(api, kvm, l3, image, tmp_path):
    """An operator runs `kvmagent` by hand while the service runs: the copy ends within seconds with one line
    and started nothing (given a state directory of its own, it holds only its lock); the first one's VMs
    and stream go on, and a change to the desired state still applies."""
    vm = await create(api, kvm, l3, image, "first")
    assert kvm.agent is not None
    t0 = time.monotonic()
    same = kvm.second_agent()
    assert (same.returncode, same.stderr.splitlines()) == (1, [
        f"kvmagent: {kvm.state_dir}: another kvmagent process (pid {kvm.agent.pid}) uses it "
        f"(it holds {kvm.state_dir}/lock)"])
    other = tmp_path / "other-state"
    elsewhere = kvm.second_agent(state_dir=str(other))
    assert (elsewhere.returncode, elsewhere.stderr.splitlines()[-1]) == (
        1, f"kvmagent: cannot listen on {kvm.api_address}:{kvm.api_port}: Address already in use")
    assert "Traceback" not in elsewhere.stderr  # before it: the log's warning of a test bed's plain HTTP
    assert time.monotonic() - t0 < 20  # both: Python's start-up, then one line
    assert [p.name for p in other.iterdir()] == ["lock"]
    assert kvm.agent.poll() is None and kvm.agent_api("/health") is not None
    assert (await api.get(f"/v1/hosts/{kvm.uuid}"))["state"] == "Connected"
    assert kvm.libvirt.virsh("domstate", vm["uuid"]).strip() == "running"
    got = await api.post(f"/v1/vms/{vm['uuid']}/actions", {"action": "stop"}, wait="60")
    assert got["observed"]["state"] == "Stopped"
    await api.delete(f"/v1/vms/{vm['uuid']}", wait="60")


async def test_event_while_coordinator_down_arrives_after_restart(api, kvm, l3, image, coordinator):
    vm = await create(api, kvm, l3, image, "journal")
    coordinator.stop()
    try:
        kvm.libvirt.virsh("suspend", vm["uuid"])
        await asyncio.sleep(1.0)
        assert kvm.agent_api("/metrics")["text"].count("hoststack_journal_pending 0") == 0
    finally:
        coordinator.start()
    await until_state(api, vm["uuid"], "Paused", 20)
    kvm.libvirt.virsh("resume", vm["uuid"])
    await until_state(api, vm["uuid"], "Running", 5)
    await api.delete(f"/v1/vms/{vm['uuid']}", wait="60")


async def test_libvirtd_restart_resyncs(api, kvm, l3, image):
    vm = await create(api, kvm, l3, image, "resync")
    kvm.libvirt.restart_libvirtd()
    got = await api.post(f"/v1/vms/{vm['uuid']}/actions", {"action": "stop"}, wait="60")
    assert got["observed"]["state"] == "Stopped"
    await api.delete(f"/v1/vms/{vm['uuid']}", wait="60")


async def test_destroy_while_agent_down_completes_when_it_returns(api, kvm, l3, image, coordinator):
    vm = await create(api, kvm, l3, image, "gc")
    agent, logged = kvm.agent, len(kvm.log())
    kvm.stop_agent()  # SIGTERM: a clean stop, libvirt's connection closed before the event loop
    assert agent is not None and agent.returncode == 0 and "Traceback" not in kvm.log()[logged:], kvm.log()[logged:]
    try:
        answer = await api.delete(f"/v1/vms/{vm['uuid']}", wait="1")
        assert answer["pending"]
        assert vm["uuid"] in kvm.libvirt.virsh("list", "--uuid").replace("-", "")
    finally:
        kvm.start(coordinator, vm={"drift_policy": "adopt"})
    deadline = time.monotonic() + 30
    while vm["uuid"] in kvm.libvirt.virsh("list", "--all", "--uuid").replace("-", ""):
        assert time.monotonic() < deadline, "VM not removed after the agent came back"
        await asyncio.sleep(0.2)


async def test_the_hosts_health_names_a_failing_component_until_it_is_mended(api, kvm, l3):
    """An operator sees in `hs host list` that a host's agent fails to apply something, and what, without
    scraping the agent itself."""
    async def health_is(status: str) -> dict:
        t0 = time.monotonic()
        while (health := (await api.get(f"/v1/hosts/{kvm.uuid}"))["health"] or {}).get("status") != status:
            assert time.monotonic() - t0 < 30, f"the host's health never became {status}: {health}"
            await asyncio.sleep(0.1)
        return health

    assert (await health_is("ok"))["errors"] == {}
    l2 = await api.post("/v1/l2-networks", {"name": "e2e-broken", "physical_interface": "hsnone9"})
    try:
        health = await health_is("degraded")
        assert list(health["errors"]) == ["bridges"] and "hsnone9" in health["errors"]["bridges"]
        listed = {h["uuid"]: h for h in (await api.get("/v1/hosts"))["hosts"]}
        assert listed[kvm.uuid]["health"]["status"] == "degraded"
    finally:
        await api.delete(f"/v1/l2-networks/{l2['uuid']}")
    assert (await health_is("ok"))["errors"] == {}


async def test_a_vm_whose_desired_item_its_restarted_agent_cannot_read_runs_on_and_the_host_says_so(
        api, kvm, l3, image, coordinator, store):
    """A coordinator newer than the agent wrote a value the agent's models reject (a new choice of a known field),
    and the agent restarted since: it has no earlier value to keep. The VM's domain runs on, untouched, the host's
    health names the item, and once the value is one the agent reads (or the agent is upgraded) all is as before."""
    vm = await create(api, kvm, l3, image, "held")
    domain = kvm.libvirt.virsh("domid", vm["uuid"]).strip()
    key = keys.desired_for(kvm.uuid, stream_key_vm(vm["uuid"]))
    readable = (await store.get(key)).value
    kvm.stop_agent()
    try:
        await store.put(key, {**readable, "cpu_mode": "a-mode-of-a-newer-release"})
    finally:
        kvm.start(coordinator, vm={"drift_policy": "adopt"})
    t0 = time.monotonic()
    while "desired" not in (health := (await api.get(f"/v1/hosts/{kvm.uuid}"))["health"] or {}).get("errors", {}):
        assert time.monotonic() - t0 < 30, f"the host's health never named the held item: {health}"
        await asyncio.sleep(0.1)
    assert health["status"] == "degraded" and f"vm/{vm['uuid']}: cpu_mode: Input should be" in \
        health["errors"]["desired"]
    assert kvm.agent_api("/v1/state")["held"] == {f"vm/{vm['uuid']}": health["errors"]["desired"].split(": ", 2)[2]}
    await store.put(key, readable)
    t0 = time.monotonic()
    while (health := (await api.get(f"/v1/hosts/{kvm.uuid}"))["health"] or {}).get("status") != "ok":
        assert time.monotonic() - t0 < 30, f"the host's health stayed {health}"
        await asyncio.sleep(0.1)
    assert kvm.libvirt.virsh("domid", vm["uuid"]).strip() == domain  # the same qemu all along
    assert (await observed(api, vm["uuid"]))["state"] == "Running"
    await api.delete(f"/v1/vms/{vm['uuid']}", wait="60")
