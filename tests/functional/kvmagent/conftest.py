"""kvmagent test bed: a simulated KVM host (private libvirtd in a namespace) wired to a service
namespace with dnsmasq (DHCP) and a metadata HTTP server at 169.254.169.254, plus the tiny guest."""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agentkit.model import ImageRef, KernelBoot, L2Spec, L3Spec, NicSpec, VmSpec
from kvmagent.bridges import Bridges, BridgesComponent
from kvmagent.libvirt_driver import DomainEvent, LibvirtDriver
from kvmagent.storage.tickets import Source
from kvmagent.view import HostView
from kvmagent.vms import VmReconciler, VmSettings
from testbed import guest_image
from testbed.coordinators import bed_file_roots
from testbed.libvirthost import LibvirtHost
from testbed.netns import Netns, Run

USERDATA = "#cloud-config\nhs-user-data: hello-from-hoststack\n"


class Reports(list):
    """The `report` callback: records (monotonic time, kind, id, body)."""

    def __call__(self, kind: str, ident: str, body: dict) -> None:
        self.append((time.monotonic(), kind, ident, body))

    def states(self, ident: str) -> list[str]:
        return [b["state"] for _, _, i, b in self if i == ident]

    async def wait(self, ident: str, state: str, timeout: float = 5.0, since: float = 0.0, **match) -> tuple:
        """The newest (time, body) reported for `ident` with `state` (and `match`), after `since`."""
        end = time.monotonic() + timeout
        while True:
            for t, _, i, b in reversed(self):
                if t >= since and i == ident and b["state"] == state and all(b.get(k) == v for k, v in match.items()):
                    return t, b
            assert time.monotonic() < end, f"{ident} never reported {state} {match}; got {self.states(ident)}"
            await asyncio.sleep(0.02)


@pytest.fixture
def reports() -> Reports:
    return Reports()


@dataclass
class Lab:
    run: Run
    host: LibvirtHost
    svc: Netns
    l2: L2Spec
    l3: L3Spec
    mgmt: str
    guest: guest_image.GuestImage
    nics: int = 0

    def serial(self, vm_uuid: str) -> str:
        p = self.host.vm_dir / f"{vm_uuid}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    async def wait_serial(self, vm_uuid: str, pattern: str, timeout: float = 60, count: int = 1) -> list[str]:
        """All lines matching `pattern` once there are `count` of them."""
        end = time.monotonic() + timeout
        while True:
            found = re.findall(pattern, self.serial(vm_uuid))
            if len(found) >= count:
                return found
            assert time.monotonic() < end, f"no {pattern!r} x{count} in serial log of {vm_uuid}:\n" + \
                self.serial(vm_uuid)[-3000:]
            await asyncio.sleep(0.2)

    def vm(self, uuid: str, action: str = "hold", **kw) -> VmSpec:
        """A tiny guest booting its kernel directly, with one NIC on the lab's L3."""
        self.nics += 1
        nic = NicSpec(uuid=f"{self.nics:08x}-nic", l3_uuid=self.l3.uuid, mac=f"52:54:00:18:00:{self.nics:02x}",
                      ip="198.18.0.10", default=True)
        base = dict(uuid=uuid, name=f"tiny-{uuid[:4]}", memory_mb=256, nics=[nic],
                    kernel=KernelBoot(kernel=str(self.guest.kernel), initrd=str(self.guest.initrd),
                                      cmdline=self.guest.cmdline(action)))
        base.update(kw)
        return VmSpec(**base)

    @property
    def nets(self) -> tuple[dict, dict]:
        return {self.l2.uuid: self.l2}, {self.l3.uuid: self.l3}


class ImageServer:
    """Image files served over HTTP (aiohttp, with Range) on loopback, standing in for the image store:
    `publish` serves a file as an image, `locate` is what a host's read ticket says, `gets` the paths
    fetched (the access log)."""

    def __init__(self, root: Path):
        self.root = root
        self.gets: list[str] = []
        self.urls: dict[str, str] = {}
        app = web.Application()
        app.router.add_get("/{name}", self._file)
        self.server = TestServer(app, host="127.0.0.1")

    async def _file(self, request: web.Request) -> web.StreamResponse:
        self.gets.append(request.path)
        path = self.root / request.match_info["name"]
        return web.FileResponse(path) if path.exists() else web.Response(status=404)

    def publish(self, path: Path, uuid: str, fmt: str, sha256: str | None = None) -> ImageRef:
        """Serve `path` as image `uuid` (copied in unless it is there); its ImageRef (a wrong `sha256` if given)."""
        dst = self.root / f"{uuid}.{fmt}"
        if path != dst:
            shutil.copy(path, dst)
        data = dst.read_bytes()
        self.urls[uuid] = str(self.server.make_url(f"/{dst.name}"))
        return ImageRef(uuid=uuid, format=fmt, sha256=sha256 or hashlib.sha256(data).hexdigest(), size=len(data))

    async def locate(self, session: object, image: ImageRef) -> Source:
        return Source(self.urls[image.uuid], {})


@pytest.fixture
async def images(tmp_path):
    root = tmp_path / "srv"
    root.mkdir()
    srv = ImageServer(root)
    await srv.server.start_server()
    yield srv
    await srv.server.close()


@pytest.fixture(scope="session")
def guest() -> guest_image.GuestImage:
    return guest_image.build()


@pytest.fixture(scope="module")
def lab(guest):
    run = Run()
    host = None
    try:
        host = LibvirtHost(run, "hv")
        svc = run.netns("svc")
        host.connect(svc, "svc0")
        net = run.subnet()
        gw, mgmt = str(net[1]), str(net[2])
        host.add_address(f"{mgmt}/32")
        svc.ip("addr", "add", f"{gw}/24", "dev", "svc0")
        svc.ip("addr", "add", "169.254.169.254/32", "dev", "svc0")
        www = run.path("www")
        (www / "latest").mkdir(parents=True)
        (www / "latest" / "user-data").write_text(USERDATA)
        svc.popen(["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--interface=svc0",
                   "--bind-interfaces", "--except-interface=lo", "--port=0",
                   f"--dhcp-range={net[100]},{net[200]},255.255.255.0,1h", f"--dhcp-option=option:router,{gw}",
                   f"--dhcp-leasefile={run.path('leases')}", f"--log-facility={run.path('dnsmasq.log')}"],
                  log_name="dnsmasq")
        svc.popen([sys.executable, "-m", "http.server", "80", "--bind", "169.254.169.254", "--directory", str(www)],
                  log_name="metadata")
        host.start()
        l2 = L2Spec(uuid=run.tag + "00l2flat", name="flat", physical_interface="eth0")
        l3 = L3Spec(uuid="l3flat", name="flat", l2_uuid=l2.uuid, cidr=str(net), gateway=gw)
        yield Lab(run, host, svc, l2, l3, mgmt, guest)
    finally:
        if host is not None:
            host.close()
        run.close()


@dataclass
class Agent:
    """What kvmagent's composition root builds: driver, bridges and the VM reconciler, started."""

    lab: Lab
    reports: Reports
    driver: LibvirtDriver
    bridges: BridgesComponent
    rec: VmReconciler
    events: list[DomainEvent] = field(default_factory=list)

    async def apply(self, *vms: VmSpec, configs: dict | None = None) -> None:
        """The agent's order: the bridges for the view, then the VMs."""
        l2s, l3s = self.lab.nets
        await self.bridges.apply(HostView(l2s=l2s))
        await self.rec.apply({v.uuid: v for v in vms}, l2s, l3s, configs or {})

    def event_time(self, name: str, event: str, since: float = 0.0) -> float:
        """When our driver saw libvirt's `event` for domain `name` (monotonic)."""
        return next(e.at for e in self.events if e.name == name and e.event == event and e.at >= since)

    async def stop(self, clean: bool = True) -> None:
        """Shut the agent down; `clean` first removes every VM (desired state: none)."""
        try:
            if clean:
                await self.apply()
        finally:
            await self.rec.close()
            await self.bridges.close()
            await self.driver.close()


@pytest.fixture
async def make_agent(lab, reports):
    agents: list[Agent] = []

    async def make(**settings) -> Agent:
        driver = LibvirtDriver(lab.host.uri)
        events: list[DomainEvent] = []
        driver.on_event(events.append)
        await driver.connect(timeout=10)
        base = dict(domain_type="qemu", serial_log_dir=str(lab.host.vm_dir), volume_dir=str(lab.run.path("vols")),
                    stop_timeout=20, console_dir=str(lab.run.path("consoles")), host_address=lab.mgmt,
                    restart_backoff_max=2, file_roots=bed_file_roots())
        base.update(settings)
        bridges = BridgesComponent(Bridges(netns=lab.host.ns.name))
        rec = VmReconciler(driver, bridges, VmSettings(**base), reports)
        await rec.start()
        agents.append(Agent(lab, reports, driver, bridges, rec, events))
        return agents[-1]

    yield make
    for agent in agents:
        if agent.driver.connected:
            await agent.stop()
