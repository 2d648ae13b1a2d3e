"""Console tokens when a VM moves (issue 18: "a VM that moves gets new tokens pointing at its new host").

Two simulated KVM hosts (real agents, libvirtds, the tiny guest under TCG) on a SharedMountPoint, a
coordinator that migrates live between them, a console proxy process registered as a `consoleproxy` host,
and a "user" namespace on the same switch that speaks to the proxy as a browser does (websockets of
binary messages). Live migration, because the guest keeps running: no second boot to wait for.

What a token does after the move: it is re-pointed, not refused. A token is the permission to open one
console of one VM for a short while, and names no host; the coordinator resolves it to the VM's host each
time it is used. Its holder is usually the console page whose session the move just ended (the source qemu
and its serial port are gone), and that page connects again with the same URL: refusing it would send the
user back for the same permission again, and keep nobody out (the same user gets a new token anyway).
What must not happen is that anything issued before the move still reaches the old host for this VM: the
old host's tunnel refuses the ticket the proxy was given then (no console of that VM there), while the
same ticket opened it before the move. The console that was open during the move is closed (1000), not
left hanging.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from yarl import URL

from agentkit.consoles import websocket_url
from agentkit.netns import netns_socket
from coordinator.client import Client
from testbed import guest_image, guestshell
from testbed.apiwait import until
from testbed.coordinators import Coordinator
from testbed.kvmhost import KvmHost, mounting_hosts
from testbed.netns import Netns
from testbed.ports import free_port
from testbed.proxyhost import PORT, ProxyHost
from testbed.switch import Switch

pytestmark = [pytest.mark.real, pytest.mark.timeout(420)]
MiB = 1 << 20
UPTIME = "cut -d' ' -f1 /proc/uptime"


@pytest.fixture(scope="module")
def agent_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def coordinator(run, etcd, token, agent_port):
    c = Coordinator(run, etcd, token, name="coord-conmove", heartbeat_timeout=3, heartbeat_interval=1, leader_ttl=2,
                    live_migration_uri="qemu+tcp://{address}/system", kvmagent_port=agent_port,
                    console_proxy_port=PORT, console_token_ttl=120).start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def bed(run, coordinator, token, agent_port):
    """The two hosts (each with its own tmpfs where consoles and serial logs go, at the same path on both),
    the console proxy and the user's namespace, all on one switch."""
    shared, smp, common = (run.path(n) for n in ("cm-backing", "cm-smp", "cm-host"))
    for d in (shared, smp, common):
        d.mkdir()
    switch = Switch(run, "swcm")
    hosts = mounting_hosts(run, coordinator, token, ["kvm1", "kvm2"], [(shared, smp)], switch=switch,
                           api_port=agent_port, mounts=[("-t", "tmpfs", "-o", "size=64m", "tmpfs", str(common))],
                           vm={"serial_log_dir": str(common / "serial"), "console_dir": str(common / "consoles")})
    ns = run.netns("cmproxy")
    proxy = ProxyHost(run, ns, str(switch.plug(ns).ip))
    user = run.netns("cmuser")
    switch.plug(user)

    async def setup() -> None:
        async with Client(coordinator.url, token) as api:
            host = await api.post("/v1/hosts", {"name": "cp1", "address": proxy.address, "kind": "consoleproxy"})
            proxy.uuid, proxy.token = host["uuid"], host["token"]
            proxy.start(coordinator)
            ps = await api.post("/v1/primary-storage", {"name": "cm-smp", "type": "SharedMountPoint", "url": str(smp)})
            await until(lambda: api.get(f"/v1/primary-storage/{ps['uuid']}"),
                        lambda s: all((s["hosts"].get(h.uuid) or {}).get("capacity") for h in hosts))
            await until(lambda: api.get("/v1/console-proxies"),
                        lambda found: [p["state"] for p in found["console_proxies"]] == ["Connected"])
    asyncio.run(setup())
    yield hosts, common, proxy, user
    for h in hosts:
        h.close()


def serial(host: KvmHost, common, vm: str) -> str:
    p = host.inside(common / "serial" / f"{vm}.log")
    return p.read_text(errors="replace") if p.exists() else ""


def from_namespace(ns: Netns) -> aiohttp.ClientSession:
    """A client whose connections start in `ns`: a user at a desk on the network."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(
        socket_factory=lambda ai: netns_socket(ns.name, ai[0], ai[1], proto=ai[2])))


async def answers(session: aiohttp.ClientSession, url: str, tag: str) -> float:
    """The guest's uptime, asked through the console page `url` opens."""
    async with session.ws_connect(websocket_url(url), protocols=("binary",)) as ws:
        said = await guestshell.ask_console(ws, UPTIME, tag)
    assert said.rc == 0, said
    return float(said.output)


async def test_a_console_token_follows_the_vm_to_its_new_host(api, bed):
    (h1, h2), common, proxy, user = bed
    image = guest_image.build()
    vm = await api.post("/v1/vms", {"name": "moving", "host_uuid": h1.uuid, "primary_storage_uuid": "cm-smp",
                                    "data_disks": [4 * MiB], "kernel": {
                                        "kernel": str(image.kernel), "initrd": str(image.initrd),
                                        "cmdline": image.cmdline("hold")}}, wait="60")
    uuid = vm["uuid"]
    await until(lambda: asyncio.to_thread(serial, h1, common, uuid), lambda t: "HS-SHELLS" in t, 120)
    old = await api.post(f"/v1/vms/{uuid}/console", {"kind": "serial"})
    grant = await api.post(f"/v1/console-proxies/{proxy.uuid}/grants", {"token": old["token"]})
    assert URL(grant["tunnel_url"]).host == str(h1.address.ip)  # what the proxy was told: the VM's host now
    ticket = {"Authorization": f"Ticket {grant['ticket']}"}
    async with from_namespace(user) as session:
        async with session.ws_connect(grant["tunnel_url"], headers=ticket, protocols=("binary",)):
            pass  # the ticket opens the first host's tunnel while the VM is there
        opened = await session.ws_connect(websocket_url(old["url"]), protocols=("binary",))
        up = float((await guestshell.ask_console(opened, UPTIME, "UP1")).output)

        await api.post(f"/v1/vms/{uuid}/migrate", {"host_uuid": h2.uuid, "live": True})
        await until(lambda: api.get(f"/v1/vms/{uuid}"),
                    lambda v: v["host_uuid"] == h2.uuid and (v["observed"] or {}).get("state") == "Running"
                    and v["observed"].get("host") == h2.uuid)
        async with asyncio.timeout(30):  # the source qemu, and the serial port it served, are gone
            while (ended := await opened.receive()).type is aiohttp.WSMsgType.BINARY:
                pass  # what the guest printed before
        assert (ended.type, ended.data) == (aiohttp.WSMsgType.CLOSE, 1000), ended  # closed, not dropped
        await opened.close()

        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(grant["tunnel_url"], headers=ticket, protocols=("binary",))
        assert refused.value.status in (404, 503)  # no console of this VM there (503: a socket file left behind)
        regrant = await api.post(f"/v1/console-proxies/{proxy.uuid}/grants", {"token": old["token"]})
        assert URL(regrant["tunnel_url"]).host == str(h2.address.ip)

        assert await answers(session, old["url"], "UP2") > up  # the token from before: the same guest, running on
        await until(lambda: asyncio.to_thread(serial, h2, common, uuid), lambda t: "HS-OUT-UP2" in t, 10)
        assert "HS-OUT-UP2" not in serial(h1, common, uuid)  # the answer came from the second host's qemu
        new = await api.post(f"/v1/vms/{uuid}/console", {"kind": "serial"})
        assert await answers(session, new["url"], "UP3") > up
        await until(lambda: asyncio.to_thread(serial, h2, common, uuid), lambda t: "HS-OUT-UP3" in t, 10)
    assert "HS-INIT-START" not in serial(h2, common, uuid)  # not booted again there
    await api.delete(f"/v1/vms/{uuid}", wait="30")
