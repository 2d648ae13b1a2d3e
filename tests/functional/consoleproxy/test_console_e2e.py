"""Issue 18's acceptance, end to end: a real coordinator on etcd, a KVM host running the real kvmagent with
libvirtd/qemu (TCG) and the tiny guest, a console proxy process registered as a `consoleproxy` host, and a
"user" network namespace that reaches the proxy (and the hosts' addresses) like a person on the network.

The user asks the coordinator for a console URL (`hs vm console`), opens it in Debian's headless Chromium
from the user namespace, sees the guest's screen (compared pixel for pixel with `virsh screenshot`) and types
into its shell; the serial page runs a command; native clients no one here wrote (vncdotool's `vncdo`, SPICE's
`spicy-screenshot`) read the screens of a VNC and a SPICE VM through `hs vm console --listen` at the user's
desk; bad tokens are refused with reasons, each counted in the proxy's /metrics; the VM's consoles are not
reachable on the hypervisor; a killed proxy shows Disconnected within a heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from coordinator.client import ApiClientError, Client
from testbed import guest_image, promtext, proxyhost
from testbed.coordinators import Coordinator
from testbed.deploylab import wait_listening
from testbed.kvmhost import KvmHost
from testbed.netns import Netns, Run
from testbed.ports import free_port
from testbed.proxyhost import ProxyHost
from testbed.switch import Switch

pytestmark = [pytest.mark.real, pytest.mark.timeout(300)]
PROXY_PORT = proxyhost.PORT
TTL = 20
# vncdotool's `vncdo` (PyPI, a test dependency), a VNC client, without pyOpenSSL: the venv sees Debian's
# python3-openssl (system site packages), which does not load with the venv's newer cryptography, and Twisted
# imports it for TLS, which a VNC client of 127.0.0.1 does not use
VNCDO = [sys.executable, "-c", "import sys; sys.modules['OpenSSL'] = None; sys.argv[0] = 'vncdo'; "
         "from vncdotool.command import vncdo; sys.exit(vncdo())"]


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

    def serial(self, uuid: str | None = None) -> str:
        log = self.kvm.libvirt.dir / "serial" / f"{uuid or self.vm['uuid']}.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def wait_serial(self, marker: str, timeout: float = 60, uuid: str | None = None) -> None:
        deadline = time.monotonic() + timeout
        while marker not in self.serial(uuid):
            assert time.monotonic() < deadline, f"no {marker} in the serial log:\n{self.serial(uuid)[-2000:]}"
            time.sleep(0.2)

    def screen(self, path: Path, uuid: str | None = None) -> Image.Image:
        """The guest's screen as libvirt has it."""
        self.kvm.libvirt.virsh("screenshot", uuid or self.vm["uuid"], str(path))
        return Image.open(path).convert("RGB")

    @contextlib.contextmanager
    def listen(self, vm: str) -> Iterator[int]:
        """`hs vm console VM --listen 0` at the user's desk (their namespace, reaching the coordinator through
        a portal as the proxy does) while the block runs: the port it printed. Then Ctrl-C, which ends it
        with status 130 and no traceback."""
        port = free_port()
        self.run.popen([sys.executable, "-m", "testbed.portal", self.user.name, str(port), str(self.coordinator.port)],
                       log_name="user-portal")
        wait_listening(self.user, port)
        name = f"hs-listen-{vm}"
        p = self.user.popen([sys.executable, "-m", "coordinator.cli", "--url", f"http://127.0.0.1:{port}",
                             f"--token={self.token}", "vm", "console", vm, "--listen", "0"], log_name=name)
        log = self.run.path(f"{name}.log")
        deadline = time.monotonic() + 30
        while not (printed := re.search(r"^(vnc|spice)://127\.0\.0\.1:(\d+)$", log.read_text(), re.M)):
            assert p.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        try:
            yield int(printed[2])
        finally:
            p.send_signal(signal.SIGINT)
            assert p.wait(20) == 130 and "Traceback" not in log.read_text(), log.read_text()


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


async def test_a_vnc_client_reads_the_guests_screen_through_hs_listen(lab, artefacts):
    await wait_proxy(lab, "Connected", 20)
    seen = artefacts / "vncdo-capture.png"
    with lab.listen("tiny") as port:
        lab.user.sh(*VNCDO, "-s", f"127.0.0.1::{port}", "capture", str(seen), timeout=60)
    assert same(Image.open(seen).convert("RGB"), lab.screen(artefacts / "virsh-screenshot-vncdo.ppm")), \
        "what vncdo read differs from the guest's screen"


async def test_a_spice_client_reads_a_spice_vms_screen_through_hs_listen(lab, artefacts):
    """A SPICE client opens a connection per channel (main, display): each goes through the bridge."""
    await wait_proxy(lab, "Connected", 20)
    image = guest_image.build()
    async with lab.api() as api:
        vm = await api.post("/v1/vms", {
            "name": "tiny-spice", "host_uuid": lab.kvm.uuid, "console_mode": "spice",
            "kernel": {"kernel": str(image.kernel), "initrd": str(image.initrd), "cmdline": image.cmdline("hold")},
        }, wait="60")
    try:
        await asyncio.to_thread(lab.wait_serial, "HS-SHELLS", 60, vm["uuid"])
        seen = artefacts / "spicy-screenshot.ppm"
        with lab.listen("tiny-spice") as port:
            lab.user.sh("spicy-screenshot", "-h", "127.0.0.1", "-p", str(port), "-o", str(seen), timeout=60)
        channels = lab.run.path("hs-listen-tiny-spice.log").read_text().count(": connected to the console proxy\n")
        assert channels >= 2, "the main and display channels each make a connection"
        # the tiny guest's kernel drives no QXL: a SPICE VM's screen stays in the BIOS's text mode (its VM uuid
        # on it), whose cursor blinks; what the client read is one of the two screens libvirt sees by turns
        read, deadline = Image.open(seen).convert("RGB"), time.monotonic() + 10
        while not same(read, lab.screen(artefacts / "virsh-screenshot-spice.ppm", vm["uuid"])):
            assert time.monotonic() < deadline, "what spicy-screenshot read is not the VM's screen"
            await asyncio.sleep(0.1)
    finally:
        async with lab.api() as api:
            await api.delete(f"/v1/vms/{vm['uuid']}", wait="60")


def status_and_code(lab: Lab, url: str) -> tuple[int, str]:
    out = lab.user.sh("curl", "-s", "-w", "\n%{http_code}", url).stdout.rsplit("\n", 1)
    return int(out[1]), json.loads(out[0])["error"]["code"]


def refusals(lab: Lab) -> dict[str, float]:
    """The proxy's refusals as its scraper reads them: "kind/reason" -> count."""
    text = lab.user.sh("curl", "-s", "-H", f"Authorization: Bearer {lab.proxy.metrics_token}",
                       f"http://{lab.proxy.address}:{PROXY_PORT}/metrics").stdout
    return {f"{dict(labels)['kind']}/{dict(labels)['reason']}": value
            for (name, labels), value in promtext.series(text).items() if name == "hoststack_console_refused_total"}


async def test_tokens_are_refused_with_a_reason(lab):
    await wait_proxy(lab, "Connected", 20)
    async with lab.api() as api:
        mine = await api.post(f"/v1/vms/{lab.vm['uuid']}/console", {"kind": "vnc"})
    base = f"http://{lab.proxy.address}:{PROXY_PORT}/consoles"
    uuid = lab.vm["uuid"]
    before = refusals(lab)
    assert status_and_code(lab, f"{base}/{uuid}/vnc") == (401, "token_missing")
    assert status_and_code(lab, f"{base}/{uuid}/vnc?token=forged") == (403, "token_unknown")
    other = "c0ffee00-0000-4000-8000-000000000000"
    assert status_and_code(lab, f"{base}/{other}/vnc?token={mine['token']}") == (403, "token_mismatch")
    assert status_and_code(lab, f"{base}/{uuid}/serial?token={mine['token']}") == (403, "token_mismatch")
    await asyncio.sleep(max(0.0, mine["expires_at"] - time.time()) + 1)
    assert status_and_code(lab, f"{base}/{uuid}/vnc?token={mine['token']}") == (403, "token_expired")
    after = refusals(lab)
    assert {k: n - before[k] for k, n in after.items() if n != before[k]} == {
        "vnc/token_missing": 1, "vnc/token_unknown": 1, "vnc/token_mismatch": 1, "serial/token_mismatch": 1,
        "vnc/token_expired": 1}
    assert status_and_code(lab, base.replace("/consoles", "/metrics")) == (401, "unauthorized")  # no scraper


async def test_the_hypervisor_has_no_console_to_reach(lab):
    kvm_ip = str(lab.kvm.address.ip)
    assert "qemu" not in lab.kvm.ns.sh("ss", "-Hltnp").stdout  # qemu listens on nothing but unix sockets
    for port in range(5900, 5906):
        assert lab.user.sh("nc", "-z", "-w", "2", kvm_ip, str(port), rcs=(0, 1)).returncode == 1
    tunnel = f"http://{kvm_ip}:{lab.kvm.api_port}/v1/consoles/{lab.vm['uuid']}/vnc"
    assert status_and_code(lab, tunnel) == (401, "unauthorized")  # the agent's tunnel wants a ticket
    scraped = lab.kvm.agent_api("/metrics")
    assert scraped is not None and promtext.value(scraped["text"], "hoststack_http_requests_total",
                                                  route="/v1/consoles/{vm}/{kind}", method="GET", code="401") >= 1


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
