"""The "physical" network of simulated hosts: a bridge in its own namespace, hosts plugged by veth."""

from __future__ import annotations

import ipaddress
from typing import Literal, overload

from testbed.netns import Netns, Run


class Switch:
    def __init__(self, run: Run, role: str = "sw"):
        self.run = run
        self.ns = run.netns(role)
        self.ns.ip("link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0")
        self.ns.ip("link", "set", "br0", "up")
        self.subnet = run.subnet()
        self._hosts = self.subnet.hosts()
        next(self._hosts)  # .1 is left for a gateway namespace
        self._ports = 0

    @overload
    def plug(self, ns: Netns, dev: str = ..., address: Literal[True] = ...) -> ipaddress.IPv4Interface: ...

    @overload
    def plug(self, ns: Netns, dev: str, address: Literal[False]) -> None: ...

    def plug(self, ns: Netns, dev: str = "eth0", address: bool = True) -> ipaddress.IPv4Interface | None:
        """Connect `ns` with its interface `dev`; gives it the next address of the switch's /24."""
        self._ports += 1
        port = f"p{self._ports}"
        self.run.veth(self.ns, port, ns, dev)
        self.ns.ip("link", "set", port, "master", "br0")
        if not address:
            return None
        iface = ipaddress.IPv4Interface(f"{next(self._hosts)}/{self.subnet.prefixlen}")
        ns.ip("addr", "add", str(iface), "dev", dev)
        return iface
