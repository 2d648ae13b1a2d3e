"""Two simulated hosts on a private and a public L2, an "internet" and a router, for EIP tests.

    internet (203.0.113.1, also the public L3's gateway) ──┐
    router  (priv: <private>.1 = private L3's gateway, pub: 203.0.113.254, masquerade)
                                                            │
    switch namespace: bridges `pub` and `priv` ─────────────┤
    host A / host B: bridges L2Spec.bridge, uplinks L2Spec.uplink (veths to the switch)
    VMs: namespaces whose `eth0` is peered with NicSpec.tap on their host's private bridge

VMs without an EIP reach the internet through the router (seen there as 203.0.113.254). Sockets are
created inside namespaces by this process (no helper processes), so tests read peers directly.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
import threading
import time
import uuid as uuidlib
from dataclasses import dataclass, field

from pyroute2 import netns as pr_netns

from agentkit.model import EipBinding, L2Spec, L3Spec, NicSpec, Service, VmSpec
from testbed.netns import Netns, Run, kill_namespace

PUBLIC_NET = ipaddress.IPv4Network("203.0.113.0/24")
INTERNET_IP, ROUTER_PUBLIC_IP = "203.0.113.1", "203.0.113.254"
_TIMERS = "hello_timer|tcn_timer|topology_change_timer|gc_timer|hold_timer|message_age_timer|forward_delay_timer"
_BRIDGE_TIMERS = re.compile(rf"\b({_TIMERS})\s+[0-9.]+")


def _uuid(prefix: str) -> str:
    return prefix + uuidlib.uuid4().hex[len(prefix):]


@dataclass
class Host:
    """A simulated host: its namespace (bridges, taps) and the prefix of the EIP namespaces it owns."""

    ns: Netns
    eip_prefix: str


@dataclass
class EipLab:
    """The built topology and the desired-state objects that describe it."""

    run: Run
    switch: Netns
    internet: Netns
    router: Netns
    hosts: dict[str, Host]
    private_l2: L2Spec
    public_l2: L2Spec
    private_l3: L3Spec
    public_l3: L3Spec
    vm_ns: dict[str, Netns] = field(default_factory=dict)

    @property
    def l2s(self) -> dict[str, L2Spec]:
        return {self.private_l2.uuid: self.private_l2, self.public_l2.uuid: self.public_l2}

    @property
    def l3s(self) -> dict[str, L3Spec]:
        return {self.private_l3.uuid: self.private_l3, self.public_l3.uuid: self.public_l3}

    def private_ip(self, n: int) -> str:
        return str(self.private_l3.network.network_address + n)

    def vm(self, host: str, name: str, ip_index: int, vip: str | None = None, plug: bool = True) -> VmSpec:
        """A VM whose NIC has the `ip_index`-th private address, on `host`'s private bridge (a namespace
        when `plug`), with an EIP when `vip` is given."""
        eip = EipBinding(uuid=_uuid("e"), vip=vip, public_l3_uuid=self.public_l3.uuid) if vip else None
        mac = "52:54:00:" + ":".join(f"{b:02x}" for b in uuidlib.uuid4().bytes[:3])
        nic = NicSpec(uuid=_uuid("n"), l3_uuid=self.private_l3.uuid, mac=mac, ip=self.private_ip(ip_index),
                      default=True, eip=eip)
        spec = VmSpec(uuid=_uuid("v"), name=name, nics=[nic])
        if plug:
            self.plug(host, name, nic)
        return spec

    def plug(self, host: str, name: str, nic: NicSpec) -> Netns:
        """(Re)create the VM namespace `name` behind `nic.tap` on `host`. A move unplugs the old one first (a
        socket of the test may keep its namespace alive: the old VM answered from the old host with the
        same MAC and address). It announces itself (gratuitous ARP) as qemu does after a live migration: the
        bridges learn where its MAC is now (the new host's sent frames for it to its uplink until it spoke)."""
        old = self.vm_ns.pop(name, None)
        if old is not None:
            old.ip("link", "del", "eth0")
            kill_namespace(old.name)
        ns = self.run.netns(f"vm-{name}")
        self.run.veth(ns, "eth0", self.hosts[host].ns, nic.tap)
        ns.ip("link", "set", "eth0", "address", nic.mac)
        ns.ip("addr", "add", f"{nic.ip}/{self.private_l3.network.prefixlen}", "dev", "eth0")
        if (gateway := self.private_l3.gateway) is None:
            raise ValueError(f"the private L3 {self.private_l3.uuid} has no gateway")
        ns.ip("route", "add", "default", "via", gateway)
        self.hosts[host].ns.ip("link", "set", nic.tap, "master", self.private_l2.bridge)
        ns.sh("busybox", "arping", "-U", "-c", "1", "-I", "eth0", nic.ip)
        self.vm_ns[name] = ns
        return ns

    def eip_namespaces(self) -> list[str]:
        prefixes = tuple(h.eip_prefix for h in self.hosts.values())
        return sorted(n for n in pr_netns.listnetns() if n.startswith(prefixes))

    def close(self) -> None:
        for name in self.eip_namespaces():
            kill_namespace(name)


def build(run: Run) -> EipLab:
    """The whole topology; everything lives in namespaces tagged by `run` (removed by `close`/`run.close`)."""
    private_net = run.subnet()
    private_l2 = L2Spec(uuid=_uuid("a"), name="private", physical_interface="uplpriv")
    public_l2 = L2Spec(uuid=_uuid("b"), name="public", physical_interface="uplpub")
    private_l3 = L3Spec(uuid=_uuid("c"), name="private", l2_uuid=private_l2.uuid, cidr=str(private_net),
                        gateway=str(private_net.network_address + 1), services=[Service.DHCP, Service.EIP])
    public_l3 = L3Spec(uuid=_uuid("d"), name="public", l2_uuid=public_l2.uuid, cidr=str(PUBLIC_NET),
                       gateway=INTERNET_IP, public=True)
    switch = run.netns("sw")
    for br in ("pub", "priv"):
        switch.ip("link", "add", br, "type", "bridge")
        switch.ip("link", "set", br, "up")
    hosts: dict[str, Host] = {}
    for h in ("a", "b"):
        ns = run.netns(f"host{h}")
        for l2, sw_br in ((private_l2, "priv"), (public_l2, "pub")):
            ns.ip("link", "add", l2.bridge, "type", "bridge")
            ns.ip("link", "set", l2.bridge, "up")
            run.veth(ns, l2.uplink, switch, f"{h}-{sw_br}")
            ns.ip("link", "set", l2.uplink, "master", l2.bridge)
            switch.ip("link", "set", f"{h}-{sw_br}", "master", sw_br)
        hosts[h] = Host(ns, f"{run.prefix}-{h}-e")
    internet = run.netns("inet")
    run.veth(internet, "eth0", switch, "inet")
    switch.ip("link", "set", "inet", "master", "pub")
    internet.ip("addr", "add", f"{INTERNET_IP}/24", "dev", "eth0")
    router = run.netns("rt")
    for dev, br, addr in (("priv", "priv", f"{private_l3.gateway}/{private_net.prefixlen}"),
                          ("pub", "pub", f"{ROUTER_PUBLIC_IP}/24")):
        run.veth(router, dev, switch, f"rt-{br}")
        switch.ip("link", "set", f"rt-{br}", "master", br)
        router.ip("addr", "add", addr, "dev", dev)
    router.ip("route", "add", "default", "via", INTERNET_IP)
    router.sh("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    router.sh("nft", "-f", "-", input="table ip nat {\n chain post {\n  type nat hook postrouting priority srcnat;\n"
                                       '  oifname "pub" masquerade\n }\n}\n')
    for host in hosts.values():
        _settle(host.ns, [private_l2.bridge, public_l2.bridge])
    return EipLab(run, switch, internet, router, hosts, private_l2, public_l2, private_l3, public_l3)


def _settle(ns: Netns, bridges: list[str], timeout: float = 5.0) -> None:
    """Wait until the kernel's link watcher reports the bridges UP, so later dumps compare equal."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = {line.split()[0]: line.split()[1] for line in ns.ip("-br", "link", "show").stdout.splitlines()}
        if all(states.get(b) == "UP" for b in bridges):
            return
        time.sleep(0.1)
    raise TimeoutError(f"bridges {bridges} in {ns.name} not UP")


def tcp_socket(ns: Netns) -> socket.socket:
    sock: socket.socket = pr_netns.create_socket(ns.name, socket.AF_INET, socket.SOCK_STREAM, flags=0)
    return sock


def icmp_socket(ns: Netns) -> socket.socket:
    """A raw ICMP socket in `ns`: it sends ICMP messages as given and receives every one `ns` gets (IP header
    first)."""
    sock: socket.socket = pr_netns.create_socket(ns.name, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP,
                                                 flags=0)
    return sock


class EchoServer:
    """Accepts in `ns` on `port`; to every connection it first writes `<peer ip>\\n`, then echoes."""

    def __init__(self, ns: Netns, port: int):
        self.sock = tcp_socket(ns)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0", port))
        self.sock.listen(16)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn, peer[0]), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket, peer: str) -> None:
        with conn, contextlib.suppress(OSError):
            conn.sendall(f"{peer}\n".encode())
            while data := conn.recv(4096):
                conn.sendall(data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(2)


def connect(ns: Netns, ip: str, port: int, timeout: float = 3.0) -> tuple[socket.socket, str]:
    """A TCP connection from `ns`; returns it and the peer address the server saw (its first line)."""
    s = tcp_socket(ns)
    s.settimeout(timeout)
    try:
        s.connect((ip, port))
        seen = b""
        while not seen.endswith(b"\n"):
            chunk = s.recv(64)
            if not chunk:
                raise ConnectionError("closed before the greeting")
            seen += chunk
    except BaseException:
        s.close()
        raise
    return s, seen.decode().strip()


def seen_by_server(client: Netns, ip: str, port: int, timeout: float = 3.0) -> str | None:
    """The source address `ip:port` saw for a connection from `client`; None when it cannot connect."""
    try:
        s, seen = connect(client, ip, port, timeout)
    except OSError:
        return None
    s.close()
    return seen


def ping(ns: Netns, ip: str, count: int = 1, wait: int = 2) -> bool:
    return ns.sh("busybox", "ping", "-c", str(count), "-W", str(wait), ip, rcs=(0, 1)).returncode == 0


def arping(ns: Netns, ip: str, dev: str = "eth0", wait: int = 1) -> bool:
    """Whether anyone answers ARP for `ip` on `dev`."""
    return ns.sh("busybox", "arping", "-f", "-c", "2", "-w", str(wait), "-I", dev, ip, rcs=(0, 1)).returncode == 0


def dumps(ns: Netns) -> dict[str, str]:
    """What an operator compares on a host: links with details, policy rules, the nftables ruleset.

    Bridge and bridge-port timers (`gc_timer`, `forward_delay_timer`, ...) run by themselves: masked.
    """
    return {
        "ip -d link": _BRIDGE_TIMERS.sub(r"\1 *", ns.ip("-d", "link", "show").stdout),
        "ip rule": ns.ip("rule", "show").stdout,
        "nft list ruleset": ns.sh("nft", "list", "ruleset").stdout,
    }
