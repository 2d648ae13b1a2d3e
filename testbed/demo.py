"""`make demo` / `make demo-down`: the whole system on this machine, left running until removed.

`up` starts etcd, a coordinator (port 8740 when free), an image store on a host of its own and a simulated
KVM host (namespace with a private libvirtd and the real kvmagent) on a switch, with a "public" segment and
an "internet" namespace on it. With `hs`, as a user would: the tiny guest's disk is added to the image store
(sha256 checked), a LocalStorage holds the VM's root volume (an overlay on the host's cached copy of the
image), the VM is created from the image with user data, and an EIP makes it answer ping from the internet
namespace. Shown: host registered and Connected, host stream delivered, VM running, its serial log, the
storage's capacity, and its console: a console proxy (in a namespace of its own, registered as a
`consoleproxy` host at 127.0.0.1 and reached there through a portal, so that a browser on this machine
opens the URL `hs vm console` gives) runs a command in the guest through the serial console. Last, `hs-ctl
backup` takes a verified etcd backup as a control node's timer would (its settings in `ctl.toml` beside
the demo's `cli.toml`, so that the operator can take more; a restore restarts etcd as a control node's service,
which the demo's etcd is not). Every hop is
TLS with certificates of a CA made for the demo (`hs pki`'s layout under the demo's directory): `hs`, the
agent, the image store, the console proxy and the test bed verify the coordinator, the agent and the
console proxy serve with certificates the coordinator issued them, the image store serves its own; the
coordinator reaches etcd over TLS with a client certificate and etcd's user/password auth on. Everything
carries the tag `hsdemo` (`HS_DEMO_TAG` names another, so a test can run beside an operator's demo); `down`
removes it all.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from agentkit.consoles import websocket_url
from agentkit.tls import client_context
from coordinator.client import Client
from deployer.render import config_toml
from testbed import guest_image, guestshell
from testbed.coordinators import Coordinator, admin_token
from testbed.etcd import ROOT_PASSWORD, EtcdCluster
from testbed.imagecloud import image_store, local_storage
from testbed.kvmhost import KvmHost
from testbed.netns import RUN_ROOT, Netns, Run, tagged_namespaces, teardown
from testbed.pki import TestPki
from testbed.ports import free_port
from testbed.proxyhost import ProxyHost
from testbed.switch import Switch

TAG = os.environ.get("HS_DEMO_TAG", "demo")
PREFIX = f"hs{TAG}"
PUBLIC = ipaddress.IPv4Network("203.0.113.0/24")
USERDATA = "userdata::#cloud-config\\nhello: from-the-hoststack-demo"


def say(msg: str) -> None:
    print(f"demo: {msg}", flush=True)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


class Demo:
    """The demo's world and the `hs` commands it runs against its coordinator."""

    def __init__(self, run: Run, co: Coordinator, token: str, store_port: int, agent_port: int, console_port: int):
        self.run, self.co, self.token, self.store_port, self.console_port = run, co, token, store_port, console_port
        self.switch, public = Switch(run), Switch(run, "swpub")
        self.host = KvmHost(run, self.switch, "kvm1", public, api_port=agent_port)
        self.internet: Netns = run.netns("inet")
        public.plug(self.internet, "eth0", address=False)
        self.internet.ip("addr", "add", f"{PUBLIC[250]}/24", "dev", "eth0")

    async def hs(self, *args: str) -> Any:
        """`hs --json ARGS` against the demo's coordinator, shown as run; its answer."""
        say("$ hs " + " ".join(args))
        p = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "coordinator.cli", "--url", self.co.url,
                                                     f"--token={self.token}", f"--ca={self.co.ca}", "--json", *args],
                                    capture_output=True, text=True, timeout=300)
        if p.returncode:
            raise RuntimeError(f"hs {' '.join(args)} failed: {p.stderr}")
        return json.loads(p.stdout)

    async def show(self, api: Client) -> None:
        img = guest_image.build()
        await self.host.register(api)
        self.host.relay(self.store_port)  # the host reads the image store at 127.0.0.1:<port>
        self.host.start(self.co)
        await _until(lambda: _connected(api, self.host.uuid), 20, "host connected")
        say(f"host {self.host.name} registered and Connected ({self.host.uuid})")
        await _until(lambda: _answers(self.host), 20, "the agent API answers over TLS")
        say(f"agent API over TLS at https://{self.host.api_address}:{self.host.api_port} with the certificate the "
            f"coordinator issued it ({self.host.state_dir / 'tls' / 'kvmagent.pem'})")
        await image_store(api, self.run, "demo-images", self.store_port, file_roots=[img.disk.parent],
                          pki=self.co.pki)
        sha = hashlib.sha256(img.disk.read_bytes()).hexdigest()
        image = await self.hs("image", "add", "tiny", f"file://{img.disk}", "--backup-storage", "demo-images",
                              "--sha256", sha, "--progress")
        say(f"image tiny {image['status']}: {image['format']}, {image['size']} bytes, sha256 {image['sha256']}")
        ps = await local_storage(api, "demo-local", self.run.path("local"), self.host)
        say(f"LocalStorage demo-local on {self.host.name}: {ps['hosts'][self.host.uuid]['capacity']}")
        await self.networks(api)
        vm = await self.hs("vm", "create", "tiny", "--image", "tiny", "--l3", "demo-flat", "--tag", USERDATA)
        vm = await _running(api, vm["uuid"])
        say(f"VM {vm['uuid']} desired Running, observed {vm['observed']['state']}; root volume "
            f"{vm['spec']['volumes'][0]['uuid']} from image tiny on demo-local")
        await self.agent_and_console(api, vm)
        await self.serial(vm)
        await self.console_proxy(api, vm)
        await self.eip(vm)
        await self.backup()

    async def networks(self, api: Client) -> None:
        net = self.run.subnet()
        l2 = await api.post("/v1/l2-networks", {"name": "demo-data", "physical_interface": "eth1"})
        l3 = await api.post("/v1/l3-networks", {
            "name": "demo-flat", "l2_uuid": l2["uuid"], "cidr": str(net), "gateway": str(net[1]),
            "ip_ranges": [{"start": str(net[10]), "end": str(net[200])}], "domain": "demo.hoststack",
            "services": ["DHCP", "DNS", "Userdata", "EIP"]})
        say(f"networks: L2 {l2['uuid']} on eth1, L3 {l3['cidr']} with DHCP at {l3['dhcp_address']}")
        pub = await api.post("/v1/l2-networks", {"name": "demo-public", "physical_interface": "eth2"})
        await api.post("/v1/l3-networks", {
            "name": "demo-public", "l2_uuid": pub["uuid"], "cidr": str(PUBLIC), "gateway": str(PUBLIC[1]),
            "ip_ranges": [{"start": str(PUBLIC[10]), "end": str(PUBLIC[100])}], "public": True})
        say(f"public L3 {PUBLIC} on eth2; the internet namespace {self.internet.name} is {PUBLIC[250]} there")

    async def agent_and_console(self, api: Client, vm: dict[str, Any]) -> None:
        if (state := self.host.agent_api("/v1/state")) is None:
            raise RuntimeError(f"the agent of {self.host.name} does not answer")
        say(f"host stream delivered revision {state['rev']}; agent applied {state['applied_rev']}; "
            f"VMs on host: {list(state['vms'])}")
        console = await api.get(f"/v1/vms/{vm['uuid']}/console")
        say(f"console: {console['protocol']} on host {console['host']} ({', '.join(console['kinds'])} through a "
            "console proxy)")

    async def serial(self, vm: dict[str, Any]) -> None:
        serial = self.host.libvirt.dir / "serial" / f"{vm['uuid']}.log"
        try:
            await _until(lambda: _has(serial, "HS-USERDATA-END"), 150, "guest printed its user-data")
        except RuntimeError:
            print(serial.read_text(errors="replace") if serial.exists() else "(no serial log)", file=sys.stderr)
            raise
        say(f"serial log {serial}:")
        print(serial.read_text(), flush=True)

    async def console_proxy(self, api: Client, vm: dict[str, Any]) -> None:
        port = self.console_port
        host = await api.post("/v1/hosts", {"name": "console1", "address": "127.0.0.1", "kind": "consoleproxy"})
        ns = self.run.netns("cp")
        self.switch.plug(ns)  # it reaches the hosts' console tunnels on the management network
        ProxyHost(self.run, ns, "127.0.0.1", port, host["uuid"], host["token"]).start(self.co)
        self.run.popen([sys.executable, "-m", "testbed.portal", "--into", ns.name, str(port), str(port), "127.0.0.1"],
                       log_name="console-portal")  # this machine's 127.0.0.1:port is the proxy's

        async def connected() -> bool:
            return any(p["state"] == "Connected" for p in (await api.get("/v1/console-proxies"))["console_proxies"])
        await _until(connected, 30, "the console proxy Connected")
        say(f"console proxy console1 registered and Connected, serving https://127.0.0.1:{port}")
        url = await self.hs("vm", "console", vm["uuid"], "--serial")
        async with aiohttp.ClientSession() as session, session.ws_connect(
                websocket_url(url["url"]), ssl=client_context(self.co.ca), protocols=("binary",)) as ws:
            said = await guestshell.ask_console(ws, "uname -sr; cat /proc/uptime", "DEMO")
        say(f"the serial console through it ran `uname -sr; cat /proc/uptime` in the guest: "
            f"{said.output.strip()!r} (rc {said.rc})")

    async def eip(self, vm: dict[str, Any]) -> None:
        eip = await self.hs("eip", "create", "demo-eip", "--l3", "demo-public")
        await self.hs("eip", "attach", "demo-eip", vm["uuid"])

        async def pingable() -> bool:
            ping = self.internet.sh("ping", "-c1", "-W1", eip["vip"], rcs=(0, 1))
            return ping.returncode == 0
        await _until(pingable, 60, f"EIP {eip['vip']} answering ping from the internet namespace")
        say(f"EIP {eip['vip']} of VM tiny answers ping from the internet namespace ({PUBLIC[250]})")

    async def backup(self) -> None:
        """`hs-ctl backup` with a control node's settings for the demo's etcd: the coordinator's etcd client
        settings, etcd's root user (a snapshot is root's alone), a backup directory."""
        d = self.run.dir
        coordinator, root, ctl = d / "coordinator-etcd.toml", d / "etcd-root.toml", d / "ctl.toml"
        coordinator.write_text(config_toml(self.co.etcd.client_settings()))
        root.touch(mode=0o600)
        root.write_text(config_toml({"etcd_user": "root", "etcd_password": ROOT_PASSWORD}))
        ctl.write_text(config_toml({"backup_dir": str(d / "backups"), "coordinator_config": str(coordinator),
                                    "etcd_root": str(root)}))
        say(f"$ hs-ctl --config {ctl} backup --keep-amount 14")
        p = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "coordinator.ctl.main", "--config", str(ctl),
                                                     "backup", "--keep-amount", "14"],
                                    capture_output=True, text=True, timeout=120)
        if p.returncode:
            raise RuntimeError(f"hs-ctl backup failed: {p.stderr}")
        say(p.stdout.strip())


async def _running(api: Client, uuid: str) -> dict[str, Any]:
    async def running() -> bool:
        return ((await api.get(f"/v1/vms/{uuid}"))["observed"] or {}).get("state") == "Running"
    await _until(running, 150, "VM running (its root volume made from the cached image)")
    vm: dict[str, Any] = await api.get(f"/v1/vms/{uuid}")
    return vm


async def _show(demo: Demo) -> None:
    async with demo.co.client() as api:
        await demo.show(api)


async def _answers(host: KvmHost) -> bool:
    return host.agent_api("/health", quiet=True) is not None


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
        etcd = EtcdCluster(run, size=1, tls=True, auth=True).start()
        token = admin_token()
        store_port = free_port()
        pki = TestPki(run)
        agent_port, console_port = free_port(), 8743 if _port_free(8743) else free_port()
        # the demo starts its agents itself: no automatic deploys (nor the warning that they cannot run)
        co = Coordinator(run, etcd, token, name="coordinator", pki=pki, imagestore_port=store_port,
                         kvmagent_port=agent_port, console_proxy_port=console_port, auto_deploy="false")
        if _port_free(8740):
            co.port = 8740
        co.start()
        say(f"etcd on {etcd.endpoints[0]} (TLS, client certificates, user {etcd.client_settings()['etcd_user']}), "
            f"coordinator on {co.url} (CA {pki.ca})")
        asyncio.run(_show(Demo(run, co, token, store_port, agent_port, console_port)))
        (run.dir / "cli.toml").write_text(f'url = "{co.url}"\ntoken = "{token}"\nca = "{pki.ca}"\n')
        run.detach()
    except BaseException:
        run.close()
        raise
    say("up. Try:")
    print(f"  export HS_CLI_CONFIG={run.dir / 'cli.toml'}\n  .venv/bin/hs vm list\n  .venv/bin/hs image list\n"
          "  .venv/bin/hs host list   (connection state, and the health each agent reports)\n"
          "  .venv/bin/hs host capacity   (memory, as placement counts it)\n"
          "  .venv/bin/hs storage show demo-local\n"
          f"  .venv/bin/hs-ctl --config {run.dir / 'ctl.toml'} backup   (restores: docs/operations.md)\n"
          "  .venv/bin/hs vm console tiny --browser   (open the URL within a minute; your browser must trust\n"
          f"        the demo's CA {pki.ca}, or be told to go on)\n"
          "then `make demo-down` removes everything.")


def down() -> None:
    removed = teardown(PREFIX)
    say(f"removed {len(removed)} namespaces and {RUN_ROOT / PREFIX}")


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("up", "down"):
        sys.exit("usage: python -m testbed.demo up|down")
    up() if sys.argv[1] == "up" else down()
