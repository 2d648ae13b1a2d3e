"""Issue 18's acceptance, end to end: a real coordinator on etcd, a KVM host running the real kvmagent with
libvirtd/qemu (TCG) and the tiny guest, a console proxy process registered as a `consoleproxy` host, and a
"user" network namespace that reaches the proxy (and the hosts' addresses) like a person on the network.

The user asks the coordinator for a console URL (`hs vm console`), opens it in Debian's headless Chromium
from the user namespace, sees the guest's screen (compared pixel for pixel with `virsh screenshot`) and types
into its shell; the serial page runs a command; bad tokens are refused with reasons; the VM's consoles
are not reachable on the hypervisor; a killed proxy shows Disconnected within a heartbeat.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from coordinator.client import ApiClientError, Client
from testbed import guest_image, proxyhost
from testbed.coordinators import Coordinator
from testbed.kvmhost import KvmHost
from testbed.netns import Netns, Run
from testbed.proxyhost import ProxyHost
from testbed.switch import Switch

pytestmark = [pytest.mark.real, pytest.mark.timeout(300)]
PROXY_PORT = proxyhost.PORT
TTL = 20


@dataclass
class Lab:
    run: Run
    coordinator: Coordinator
    token: str
    kvm: KvmHost
    proxy: ProxyHost
    user: Netns
    vm: dict

    def api(self) -> Client:
        return Client(self.coordinator.url, self.token)

    def hs(self, *args: str) -> str:
        p = subprocess.run([sys.executable, "-m", "coordinator.cli", "--url", self.coordinator.url,
                            f"--token={self.token}", *args], capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stdout + p.stderr
        return p.stdout.strip()

    def browse(self, kind: str, url: str, out: Path, *extra: str) -> dict:
        """Chromium in the user namespace, as a person at their desk (testbed/browser.py)."""
        p = self.user.sh(sys.executable, "-m", "testbed.browser", kind, url, str(out), *extra, timeout=180)
        return json.loads(p.stdout.strip().splitlines()[-1])

    def serial(self) -> str:
        log = self.kvm.libvirt.dir / "serial" / f"{self.vm['uuid']}.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def wait_serial(self, marker: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while marker not in self.serial():
            assert time.monotonic() < deadline, f"no {marker} in the serial log:\n{self.serial()[-2000:]}"
            time.sleep(0.2)

    def screen(self, path: Path) -> Image.Image:
        """The guest's screen as libvirt has it."""
        self.kvm.libvirt.virsh("screenshot", self.vm["uuid"], str(path))
        return Image.open(path).convert("RGB")


@pytest.fixture(scope="module")
def lab(run, etcd, token):
    net = Switch(run)
    kvm = KvmHost(run, net, "kvm1")
    coordinator = Coordinator(run, etcd, token, name="coord-console", heartbeat_timeout=3, heartbeat_interval=1,
                              leader_ttl=2, kvmagent_port=kvm.api_port, console_proxy_port=PROXY_PORT,
                              console_token_ttl=TTL).start()
    ns = run.netns("cp")
    proxy = ProxyHost(run, ns, str(net.plug(ns).ip))
    user = run.netns("user")
    net.plug(user)
    image = guest_image.build()

    async def setup() -> dict:
        async with Client(coordinator.url, token) as api:
            await kvm.register(api)
            host = await api.post("/v1/hosts", {"name": "cp1", "address": proxy.address, "kind": "consoleproxy"})
            proxy.uuid, proxy.token = host["uuid"], host["token"]
            kvm.start(coordinator, listen="0.0.0.0")  # noqa: S104 - the agent API on the management network
            proxy.start(coordinator)
            vm: dict = await api.post("/v1/vms", {
                "name": "tiny", "host_uuid": kvm.uuid,
                "kernel": {"kernel": str(image.kernel), "initrd": str(image.initrd), "cmdline": image.cmdline("hold")},
            }, wait="60")
            return vm
    vm = asyncio.run(setup())
    lab = Lab(run, coordinator, token, kvm, proxy, user, vm)
    lab.wait_serial("HS-SHELLS")
    yield lab
    kvm.close()
    coordinator.stop()


async def wait_proxy(lab: Lab, state: str, timeout: float) -> float:
    t0 = time.monotonic()
    while True:
        async with lab.api() as api:
            found = (await api.get("/v1/console-proxies"))["console_proxies"]
        if found and found[0]["state"] == state:
            return time.monotonic() - t0
        assert time.monotonic() - t0 < timeout, f"console proxy never {state}: {found}"
        await asyncio.sleep(0.2)


def same(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and ImageChops.difference(a, b).getbbox() is None


async def test_the_proxy_registers_like_an_agent(lab):
    await wait_proxy(lab, "Connected", 20)
    rows = lab.hs("console-proxy", "list").splitlines()
    assert "cp1" in rows[-1] and "Connected" in rows[-1] and f"http://{lab.proxy.address}:{PROXY_PORT}" in rows[-1]
    async with lab.api() as api:
        info = await api.get(f"/v1/vms/{lab.vm['uuid']}/console")
    assert info == {"protocol": "vnc", "kinds": ["vnc", "serial"], "host": str(lab.kvm.address.ip)}


async def test_the_browser_shows_the_guests_screen_and_types_into_it(lab, artefacts):
    await wait_proxy(lab, "Connected", 20)
    url = lab.hs("vm", "console", "tiny", "--browser")
    assert url.startswith(f"http://{lab.proxy.address}:{PROXY_PORT}/consoles/{lab.vm['uuid']}/vnc?token=")
    typed = "echo HS-E2E-VNC-$((6*7)) >/dev/ttyS0\n"
    result = await asyncio.to_thread(lab.browse, "vnc", url, artefacts, "--type", typed)
    assert result["state"] == "connected"
    lab.wait_serial("HS-E2E-VNC-42")  # the keys reached the guest's shell on its screen
    screen = lab.screen(artefacts / "virsh-screenshot.ppm")
    assert same(Image.open(artefacts / "vnc-seen-typed.png").convert("RGB"), screen), \
        "the browser's screenshot differs from the guest's screen"
    assert not same(Image.open(artefacts / "vnc-seen.png").convert("RGB"), screen)  # typing changed the screen


async def test_the_serial_page_runs_a_command(lab, artefacts):
    await wait_proxy(lab, "Connected", 20)
    url = lab.hs("vm", "console", "tiny", "--serial")
    assert f"/consoles/{lab.vm['uuid']}/serial?token=" in url
    result = await asyncio.to_thread(lab.browse, "serial", url, artefacts, "--type", "echo HS-E2E-SERIAL-$((6*7))\n",
                                     "--expect", "\nHS-E2E-SERIAL-42")
    assert "echo HS-E2E-SERIAL-$((6*7))" in result["text"]


def status_and_code(lab: Lab, url: str) -> tuple[int, str]:
    out = lab.user.sh("curl", "-s", "-w", "\n%{http_code}", url).stdout.rsplit("\n", 1)
    return int(out[1]), json.loads(out[0])["error"]["code"]


async def test_tokens_are_refused_with_a_reason(lab):
    await wait_proxy(lab, "Connected", 20)
    async with lab.api() as api:
        mine = await api.post(f"/v1/vms/{lab.vm['uuid']}/console", {"kind": "vnc"})
    base = f"http://{lab.proxy.address}:{PROXY_PORT}/consoles"
    uuid = lab.vm["uuid"]
    assert status_and_code(lab, f"{base}/{uuid}/vnc") == (401, "token_missing")
    assert status_and_code(lab, f"{base}/{uuid}/vnc?token=forged") == (403, "token_unknown")
    other = "c0ffee00-0000-4000-8000-000000000000"
    assert status_and_code(lab, f"{base}/{other}/vnc?token={mine['token']}") == (403, "token_mismatch")
    assert status_and_code(lab, f"{base}/{uuid}/serial?token={mine['token']}") == (403, "token_mismatch")
    await asyncio.sleep(max(0.0, mine["expires_at"] - time.time()) + 1)
    assert status_and_code(lab, f"{base}/{uuid}/vnc?token={mine['token']}") == (403, "token_expired")


async def test_the_hypervisor_has_no_console_to_reach(lab):
    kvm_ip = str(lab.kvm.address.ip)
    assert "qemu" not in lab.kvm.ns.sh("ss", "-Hltnp").stdout  # qemu listens on nothing but unix sockets
    for port in range(5900, 5906):
        assert lab.user.sh("nc", "-z", "-w", "2", kvm_ip, str(port), rcs=(0, 1)).returncode == 1
    tunnel = f"http://{kvm_ip}:{lab.kvm.api_port}/v1/consoles/{lab.vm['uuid']}/vnc"
    assert status_and_code(lab, tunnel) == (401, "unauthorized")  # the agent's tunnel wants a ticket


async def test_a_killed_proxy_is_disconnected_within_a_heartbeat(lab):
    await wait_proxy(lab, "Connected", 20)
    lab.proxy.kill()
    # the coordinator's heartbeat_timeout (3 s) after the last beat, plus the time one poll of the API takes
    assert await wait_proxy(lab, "Disconnected", 3 + 5) <= 3 + 1.5
    async with lab.api() as api:
        with pytest.raises(ApiClientError) as refused:
            await api.post(f"/v1/vms/{lab.vm['uuid']}/console", {})
    assert refused.value.status == 503 and refused.value.code == "no_console_proxy"
    lab.proxy.start(lab.coordinator)
    await wait_proxy(lab, "Connected", 20)
