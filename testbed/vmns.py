"""A "VM" as a network namespace on a simulated host's bridge, and the DHCP clients guests run.

The VM's NIC is a veth: the host end is named like kvmagent's tap (`NicSpec.tap`) and enslaved to the
L2 bridge; the VM end (`ifname`, tagged per run so client pid/lease files never collide) carries the
NIC's MAC. Each client runs once with a hook script that dumps its environment; `Lease` normalises
the three dialects (dhclient, busybox udhcpc, dhcpcd).
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import socket
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from dnslib import DNSRecord

from agentkit.model import NicSpec
from agentkit.netns import netns_socket
from testbed.flatnethost import SimHost
from testbed.netns import Netns, Run

_DHCPCD_DUID = Path("/var/lib/dhcpcd/duid")
_HOOK = """#!/bin/sh
env > {out}.$$
mv {out}.$$ {out}.${{reason:-$1}}
"""


@dataclass
class Lease:
    """What a client obtained, in one vocabulary."""

    ip: str
    mask: str
    router: list[str] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
    domain: str | None = None
    hostname: str | None = None
    mtu: int | None = None
    routes: list[tuple[str, str]] = field(default_factory=list)
    server_id: str | None = None
    lease_time: int | None = None
    broadcast: str | None = None


class VmNs:
    """One NIC of a VM, simulated by a namespace plugged into a host's bridge."""

    def __init__(self, run: Run, host: SimHost | None, bridge: str, nic: NicSpec, role: str):
        """`host` None: the namespace's interface `ifname` is someone else's to make (`testbed.guesttap`:
        a tap bridged to a real VM's NIC)."""
        self.run = run
        self.nic = nic
        self.role = role
        self.ns: Netns = run.netns(role)
        self.ifname = f"{run.prefix}{role}"[:15]
        self.host_ns, self.tap = host.ns if host else None, nic.tap
        if host is not None:
            run.veth(host.ns, nic.tap, self.ns, self.ifname)
            self.ns.ip("link", "set", self.ifname, "address", nic.mac)
            host.ns.ip("link", "set", nic.tap, "master", bridge)
        self.dir = run.path(f"vm-{role}")
        self.dir.mkdir(exist_ok=True)

    def become(self, tap: str) -> None:
        """Rename the host end to `tap` (still on its bridge): the namespace now sits where that NIC's tap would."""
        assert self.host_ns is not None
        self.host_ns.ip("link", "set", self.tap, "down")
        self.host_ns.ip("link", "set", self.tap, "name", tap)
        self.host_ns.ip("link", "set", tap, "up")
        self.tap = tap

    def _hook(self, client: str) -> tuple[Path, Path]:
        out = self.dir / f"{client}.env"
        hook = self.dir / f"{client}.hook"
        hook.write_text(_HOOK.format(out=shlex.quote(str(out))))
        hook.chmod(0o755)
        for old in self.dir.glob(f"{client}.env.*"):
            old.unlink()
        return hook, out

    def dhclient(self, timeout: float = 10) -> Lease | None:
        hook, out = self._hook("dhclient")
        conf = self.dir / "dhclient.conf"
        conf.write_text(
            "option rfc3442-classless-static-routes code 121 = array of unsigned integer 8;\n"
            "request subnet-mask, broadcast-address, routers, domain-name, domain-name-servers, host-name,"
            " interface-mtu, rfc3442-classless-static-routes;\n")
        pid = self.dir / "dhclient.pid"
        argv = ["dhclient", "-4", "-1", "-cf", str(conf), "-sf", str(hook), "-lf", str(self.dir / "dhclient.leases"),
                "-pf", str(pid), self.ifname]
        try:
            self.ns.sh("timeout", str(timeout), *argv, rcs=(0, 1, 2, 124), timeout=timeout + 5)
        finally:
            _kill_pidfile(pid)
        return _dhclient_lease(_env(out, "BOUND", "REBOOT"))

    def udhcpc(self, timeout: float = 10, tries: int = 3) -> Lease | None:
        hook, out = self._hook("udhcpc")
        argv = ["busybox", "udhcpc", "-i", self.ifname, "-f", "-q", "-n", "-t", str(tries), "-T", "1", "-A", "1",
                "-s", str(hook), "-O", "staticroutes", "-O", "mtu"]
        self.ns.sh("timeout", str(timeout), *argv, rcs=(0, 1, 124), timeout=timeout + 5)
        return _udhcpc_lease(_env(out, "bound"))

    def dhcpcd(self, timeout: float = 10) -> Lease | None:
        """dhcpcd configures the VM namespace itself (address, option-121 routes) and sends a DUID client-id."""
        hook, out = self._hook("dhcpcd")
        conf = self.dir / "dhcpcd.conf"
        conf.write_text("nodelay\nduid\nnoipv4ll\noption classless_static_routes, interface_mtu,"
                        " domain_name_servers, domain_name, host_name, routers\n")
        duid_existed = _DHCPCD_DUID.exists()
        argv = ["dhcpcd", "-4", "-1", "-B", "-A", "-f", str(conf), "-c", str(hook), "-t", str(int(timeout)),
                self.ifname]
        proc = self.ns.popen(argv, log_name=f"vm-{self.role}/dhcpcd")
        try:
            proc.wait(timeout + 2)
        except subprocess.TimeoutExpired:
            pass
        finally:
            self.run.stop(proc)  # the whole session: dhcpcd leaves privilege-separated helpers behind
            (_DHCPCD_DUID.parent / f"{self.ifname}.lease").unlink(missing_ok=True)
            if not duid_existed:
                _DHCPCD_DUID.unlink(missing_ok=True)
        return _dhcpcd_lease(_env(out, "BOUND", "REBOOT"))

    def configure(self, lease: Lease, routes: bool = True) -> None:
        """Set the address, and either the option-121 routes or only the router (a guest ignoring 121)."""
        plen = ipaddress.IPv4Network(f"0.0.0.0/{lease.mask}").prefixlen
        self.ns.ip("addr", "replace", f"{lease.ip}/{plen}", "dev", self.ifname)
        pairs = lease.routes if routes else [("0.0.0.0/0", r) for r in lease.router[:1]]
        for dest, via in pairs:
            self.ns.ip("route", "replace", dest, "via", via, "dev", self.ifname)

    def ping(self, address: str) -> bool:
        return self.ns.sh("busybox", "ping", "-c", "1", "-W", "1", address, rcs=(0, 1)).returncode == 0

    def dns(self, server: str, name: str, qtype: str = "A", tcp: bool = False) -> DNSRecord:
        """One DNS question asked from inside the VM."""
        query = DNSRecord.question(name, qtype).pack()
        kind = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
        with netns_socket(self.ns.name, socket.AF_INET, kind) as sock:
            sock.settimeout(3)
            sock.connect((server, 53))
            if tcp:
                sock.sendall(struct.pack("!H", len(query)) + query)
                (size,) = struct.unpack("!H", _recv_exactly(sock, 2))
                return DNSRecord.parse(_recv_exactly(sock, size))
            sock.send(query)
            return DNSRecord.parse(sock.recv(4096))


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("DNS server closed the connection")
        data += chunk
    return data


def _kill_pidfile(path: Path) -> None:
    try:
        os.kill(int(path.read_text().strip()), 15)
    except (OSError, ValueError):
        pass


def _env(out: Path, *reasons: str) -> dict[str, str] | None:
    """The environment of the hook run for the first of `reasons` that happened."""
    paths = [p for p in (out.with_name(f"{out.name}.{r}") for r in reasons) if p.exists()]
    if not paths:
        return None
    path = paths[0]
    env = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            env[key] = value.strip("'")
    return env


def _pairs(words: list[str]) -> list[tuple[str, str]]:
    return list(zip(words[::2], words[1::2], strict=True))


def _dhclient_lease(env: dict[str, str] | None) -> Lease | None:
    if env is None:
        return None
    routes, nums = [], [int(x) for x in env.get("new_rfc3442_classless_static_routes", "").split()]
    while nums:
        width, nums = nums[0], nums[1:]
        size = (width + 7) // 8
        dest = ".".join(str(x) for x in (nums[:size] + [0, 0, 0, 0])[:4])
        routes.append((f"{dest}/{width}", ".".join(str(x) for x in nums[size:size + 4])))
        nums = nums[size + 4:]
    return _lease(env, "new_", routes)


def _udhcpc_lease(env: dict[str, str] | None) -> Lease | None:
    if env is None:
        return None
    return Lease(ip=env["ip"], mask=env["subnet"], router=env.get("router", "").split(), dns=env.get("dns", "").split(),
                 domain=env.get("domain"), hostname=env.get("hostname"),
                 mtu=int(env["mtu"]) if "mtu" in env else None,
                 routes=_pairs(env.get("staticroutes", "").split()), server_id=env.get("serverid"),
                 lease_time=int(env["lease"]) if "lease" in env else None, broadcast=env.get("broadcast"))


def _dhcpcd_lease(env: dict[str, str] | None) -> Lease | None:
    if env is None:
        return None
    return _lease(env, "new_", _pairs(env.get("new_classless_static_routes", "").split()))


def _lease(env: dict[str, str], p: str, routes: list[tuple[str, str]]) -> Lease:
    return Lease(ip=env[f"{p}ip_address"], mask=env[f"{p}subnet_mask"], router=env.get(f"{p}routers", "").split(),
                 dns=env.get(f"{p}domain_name_servers", "").split(), domain=env.get(f"{p}domain_name"),
                 hostname=env.get(f"{p}host_name"),
                 mtu=int(env[f"{p}interface_mtu"]) if f"{p}interface_mtu" in env else None, routes=routes,
                 server_id=env.get(f"{p}dhcp_server_identifier"),
                 lease_time=int(env[f"{p}dhcp_lease_time"]) if f"{p}dhcp_lease_time" in env else None,
                 broadcast=env.get(f"{p}broadcast_address"))


