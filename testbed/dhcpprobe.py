"""A scriptable DHCP client socket inside a VM namespace: exact exchanges and reservation timing."""

from __future__ import annotations

import random
import socket
import time

from agentkit.netns import netns_socket
from flatnet.dhcp import codec as c
from testbed.vmns import VmNs


class DhcpProbe:
    """A scriptable DHCP client socket (port 68) inside a VM namespace, for exact exchanges and timing."""

    def __init__(self, vm: VmNs):
        def setup(sock: socket.socket) -> None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, vm.ifname.encode())
            sock.bind(("0.0.0.0", 68))

        self.sock = netns_socket(vm.ns.name, socket.AF_INET, socket.SOCK_DGRAM, setup)
        self._xid = random.Random(vm.nic.mac).randrange(1 << 31)

    def close(self) -> None:
        self.sock.close()

    def request(self, mac: str, mtype: int = c.DISCOVER, options: dict[int, bytes] | None = None,
                broadcast: bool = True) -> c.DhcpPacket:
        self._xid += 1
        return c.DhcpPacket(xid=self._xid, flags=c.FLAG_BROADCAST if broadcast else 0,
                            chaddr=bytes.fromhex(mac.replace(":", "")),
                            options={c.OPT_MESSAGE_TYPE: bytes((mtype,)), **(options or {})})

    def send(self, pkt: c.DhcpPacket) -> None:
        self.sock.sendto(c.build(pkt), ("255.255.255.255", 67))

    def replies(self, xid: int, timeout: float) -> list[c.DhcpPacket]:
        """Every reply to `xid` received within `timeout`."""
        out, deadline = [], time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                break
            pkt = c.parse(data)
            if pkt.xid == xid:
                out.append(pkt)
        return out

    def ask(self, mac: str, mtype: int = c.DISCOVER, options: dict[int, bytes] | None = None,
            timeout: float = 1.0) -> list[c.DhcpPacket]:
        pkt = self.request(mac, mtype, options)
        self.send(pkt)
        return self.replies(pkt.xid, timeout)

    def first_offer(self, mac: str, interval: float, timeout: float) -> float | None:
        """Send DISCOVERs every `interval` until one is answered; the monotonic time of that answer."""
        deadline = time.monotonic() + timeout
        xids: set[int] = set()
        while time.monotonic() < deadline:
            pkt = self.request(mac)
            xids.add(pkt.xid)
            self.send(pkt)
            self.sock.settimeout(interval)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            if c.parse(data).xid in xids:
                return time.monotonic()
        return None
