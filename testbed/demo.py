"""`make demo` / `make demo-down`: the whole system on this machine, left running until removed.

`up` starts etcd, a coordinator (port 8740 when free) and a simulated KVM host (namespace with a private
libvirtd and the real kvmagent), creates a network and a VM of the tiny guest with user data, and shows
it working: host registered, host stream delivered, VM running, its console address and serial log.
Everything carries the tag `hsdemo`; `down` removes it all.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from coordinator.client import Client
from testbed import guest_image
from testbed.coordinators import Coordinator, admin_token
from testbed.etcd import Etcd
from testbed.kvmhost import KvmHost
from testbed.netns import RUN_ROOT, Run, tagged_namespaces, teardown
from testbed.switch import Switch

TAG = "demo"
PREFIX = f"hs{TAG}"


def say(msg: str) -> None:
    print(f"demo: {msg}", flush=True)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


async def _show(co: Coordinator, token: str, run: Run) -> None:
    img = guest_image.build()
    host = KvmHost(run, Switch(run), "kvm1")
    async with Client(co.url, token) as api:
        await host.register(api)
        host.start(co)
        await _until(lambda: _connected(api, host.uuid), 20, "host connected")
        say(f"host {host.name} registered and Connected ({host.uuid})")
        net = run.subnet()
        l2 = await api.post("/v1/l2-networks", {"name": "demo-data", "physical_interface": "eth1"})
        l3 = await api.post("/v1/l3-networks", {
            "name": "demo-flat", "l2_uuid": l2["uuid"], "cidr": str(net), "gateway": str(net[1]),
            "ip_ranges": [{"start": str(net[10]), "end": str(net[200])}], "domain": "demo.hoststack",
            "services": ["DHCP", "DNS", "Userdata"]})
        say(f"networks: L2 {l2['uuid']} on eth1, L3 {l3['cidr']} with DHCP at {l3['dhcp_address']}")
        vm = await api.post("/v1/vms", {
            "name": "tiny", "host_uuid": host.uuid, "l3_network_uuids": [l3["uuid"]],
            "kernel": {"kernel": str(img.kernel), "initrd": str(img.initrd), "cmdline": img.cmdline("hold")},
            "system_tags": ["userdata::#cloud-config\\nhello: from-the-hoststack-demo"]}, wait="60")
        say(f"VM {vm['uuid']} desired Running, observed {vm['observed'] and vm['observed']['state']}")
        if (state := host.agent_api("/v1/state")) is None:
            raise RuntimeError(f"the agent of {host.name} does not answer")
        say(f"host stream delivered revision {state['rev']}; agent applied {state['applied_rev']}; "
            f"VMs on host: {list(state['vms'])}")
        console = await api.get(f"/v1/vms/{vm['uuid']}/console")
        say(f"consoles on {console['host']}: {', '.join(console['kinds'])} (through a console proxy: hs vm console)")
        serial = host.libvirt.dir / "serial" / f"{vm['uuid']}.log"
        try:
            await _until(lambda: _has(serial, "HS-USERDATA-END"), 90, "guest printed its user-data")
        except RuntimeError:
            print(serial.read_text(errors="replace") if serial.exists() else "(no serial log)", file=sys.stderr)
            raise
        say(f"serial log {serial}:")
        print(serial.read_text(), flush=True)


async def _connected(api: Client, uuid: str) -> bool:
    state: str = (await api.get(f"/v1/hosts/{uuid}"))["state"]
    return state == "Connected"


async def _has(path: Path, marker: str) -> bool:
    return path.exists() and marker in path.read_text(errors="replace")


async def _until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.5)


def up() -> None:
    if (RUN_ROOT / PREFIX).exists() or tagged_namespaces(PREFIX):
        sys.exit("demo: already up; run `make demo-down` first")
    run = Run(tag=TAG, keep_dir=True)
    try:
        etcd = Etcd(run).start()
        token = admin_token()
        co = Coordinator(run, etcd, token, name="coordinator")
        if _port_free(8740):
            co.port = 8740
        co.start()
        say(f"etcd on {etcd.endpoint}, coordinator on {co.url}")
        asyncio.run(_show(co, token, run))
        (run.dir / "cli.toml").write_text(f'url = "{co.url}"\ntoken = "{token}"\n')
        run.detach()
    except BaseException:
        run.close()
        raise
    say("up. Try:")
    print(f"  export HS_CLI_CONFIG={run.dir / 'cli.toml'}\n  .venv/bin/hs vm list\n  .venv/bin/hs host list\n"
          "then `make demo-down` removes everything.")


def down() -> None:
    removed = teardown(PREFIX)
    say(f"removed {len(removed)} namespaces and {RUN_ROOT / PREFIX}")


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("up", "down"):
        sys.exit("usage: python -m testbed.demo up|down")
    up() if sys.argv[1] == "up" else down()
