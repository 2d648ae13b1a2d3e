"""One EIP namespace and its two veth pairs, kept equal to a `PairPlan` (plumbing: `flatnet.netns`).

Inside the namespace: `pub` (a port of the public L2 bridge) holds every VIP answered here as a /32 (not
the staged ones: `plan`), `priv` (a port of the private L2 bridge) has no address and a permanent neighbour
entry per EIP'd NIC, so the namespace never ARPs on the private network. Addresses, neighbours and routes
are dumped and only the differences written; link state, bridge membership and the static FDB entry are
set to the same values again (no-ops for the kernel), so re-applying the same plan changes nothing. One
long-lived netlink handle per namespace; no subprocess per EIP.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass

from agentkit.netns import netns_socket
from flatnet.eip.garp import ETH_P_ARP
from flatnet.eip.plan import HOST_PRIVATE_PREFIX, HOST_PUBLIC_PREFIX, NS_PRIVATE_DEV, NS_PUBLIC_DEV, PairPlan
from flatnet.errors import EipError
from flatnet.netns import LOOPBACK, Namespace, Netlink, Route, ensure_veth
from flatnet.nft import NftTable

NAME_KEY = "[0-9a-f]{8}"  # the pair key after the prefix (`plan.pair_key`)
# Written when the namespace (or one of its devices) is made, and once per process start.
SYSCTLS = (
    "net.ipv4.ip_forward=1",
    "net.ipv6.conf.all.disable_ipv6=1",  # no IPv6 link-local chatter on either L2
    "net.ipv6.conf.default.disable_ipv6=1",
    "net.ipv4.conf.all.arp_ignore=1",  # answer ARP only for addresses of the asking device: VIPs on `pub`
    "net.ipv4.conf.all.arp_announce=2",
    # No ICMP redirects (sent before the forward chain drops a packet that would leave by the device it came
    # in on): anyone on the public network could make a VIP send them towards a forged source. The kernel
    # sends them while `all` or the device says so: all three.
    "net.ipv4.conf.all.send_redirects=0",
    f"net.ipv4.conf.{NS_PUBLIC_DEV}.send_redirects=0",
    f"net.ipv4.conf.{NS_PRIVATE_DEV}.send_redirects=0",
    # Answer an EIP'd VM's ARP for its gateway (the bridge lets only those requests in), after a random
    # delay of up to proxy_delay (0.8 s): a real router on the private L2 answers first and keeps its MAC.
    f"net.ipv4.conf.{NS_PRIVATE_DEV}.proxy_arp_pvlan=1",
)


@dataclass(frozen=True)
class Changes:
    """What one sync changed: VIPs to announce, addresses whose connections must be forgotten."""

    added_vips: frozenset[ipaddress.IPv4Address]
    stale: frozenset[str]


def _host_mac() -> str:
    """fe:… like libvirt's taps: higher than any real NIC's MAC, so a bridge never adopts it as its own."""
    return "fe:" + ":".join(f"{b:02x}" for b in os.urandom(5))


class EipNamespace(Namespace):
    """The namespace `name` of the pair `key`; `host` is the netlink of the namespace holding the bridges,
    `nat` its nftables table `ip <table>`.

    Failures raise `EipError` or `NamespaceError` (the pair is retried on the next apply)."""

    def __init__(self, name: str, key: str, host: Netlink, table: str):
        super().__init__(name)
        self.key = key
        self.host = host
        self.nat = NftTable("ip", table, name)
        self._configured = False
        self.public_mac = ""
        self.private_mac = ""

    async def ensure(self, plan: PairPlan) -> bool:
        """Namespace, both veth pairs on their bridges, sysctls, links up, routes; reads the two MACs. True
        when the namespace had to be made (what was known of its table is then void)."""
        made = await self.create()
        pub, pub_made = await self._plug(plan.host_public_dev, NS_PUBLIC_DEV, plan.public_bridge, plan.public_mtu)
        priv, priv_made = await self._plug(plan.host_private_dev, NS_PRIVATE_DEV, plan.private_bridge,
                                           plan.private_mtu)
        if made or pub_made or priv_made or not self._configured:
            await self.sysctl(*SYSCTLS)
            self._configured = True
        for idx in (LOOPBACK, pub, priv):
            await self.set_link(idx, state="up")
        want: set[Route] = {(str(plan.public_net.network_address), plan.public_net.prefixlen, pub, None),
                            (str(plan.private_net.network_address), plan.private_net.prefixlen, priv, None)}
        if plan.public_gateway is not None:
            want.add(("0.0.0.0", 0, pub, str(plan.public_gateway)))
        await self.sync_routes(want)
        self.public_mac, self.private_mac = await self.mac(pub), await self.mac(priv)
        await self.host.pin_fdb(await self.host.require(plan.host_private_dev), self.private_mac,
                                await self.host.require(plan.private_bridge))
        return made

    async def _plug(self, host_dev: str, inner: str, bridge: str, mtu: int) -> tuple[int, bool]:
        """The veth pair host_dev <-> inner on `bridge`; (inner ifindex, whether it had to be made)."""
        bridge_idx = await self.host.index(bridge)
        if bridge_idx is None:
            raise EipError(f"bridge {bridge} does not exist (yet)")
        veth = await ensure_veth(self.host, self, host_dev, inner, address=_host_mac(), mtu=mtu)
        await self.host.set_link(veth.host_index, master=bridge_idx, mtu=mtu, state="up")
        await self.set_link(veth.inner_index, mtu=mtu)
        return veth.inner_index, veth.made

    async def sync_bindings(self, plan: PairPlan) -> Changes:
        """Neighbour entries on `priv` equal to the plan's bindings, VIPs on `pub` to those it answers."""
        pub, priv = await self.require(NS_PUBLIC_DEV), await self.require(NS_PRIVATE_DEV)
        changed = await self.sync_neighbours(priv, {str(b.private_ip): b.mac for b in plan.bindings})
        added, removed = await self.sync_addresses(pub, {(str(v), 32) for v in plan.answered})
        return Changes(frozenset(ipaddress.IPv4Address(a) for a, _ in added),
                       frozenset({a for a, _ in removed} | changed))

    async def hold(self, vips: frozenset[ipaddress.IPv4Address], *, add: bool,
                   remove: bool) -> tuple[frozenset[ipaddress.IPv4Address], frozenset[ipaddress.IPv4Address]]:
        """The VIPs on `pub` made `vips` by additions only (a staged VIP's switch) or by removals only (a VIP's
        silence), nothing else touched; returns (added, removed). Nothing when `pub` is missing."""
        pub = await self.index(NS_PUBLIC_DEV)
        if pub is None:
            return frozenset(), frozenset()
        added, removed = await self.sync_addresses(pub, {(str(v), 32) for v in vips}, add=add, remove=remove)
        return (frozenset(ipaddress.IPv4Address(a) for a, _ in added),
                frozenset(ipaddress.IPv4Address(a) for a, _ in removed))

    async def read_public_mac(self) -> str:
        """The MAC of `pub` as it is (for announcing before `ensure` ran in this process)."""
        self.public_mac = await self.mac(await self.require(NS_PUBLIC_DEV))
        return self.public_mac

    def announce_socket(self) -> socket.socket:
        """A raw ARP socket on `pub`, made inside the namespace (the caller owns and closes it)."""
        sock = netns_socket(self.name, socket.AF_PACKET, socket.SOCK_RAW, proto=socket.htons(ETH_P_ARP))
        sock.bind((NS_PUBLIC_DEV, ETH_P_ARP))
        return sock

    async def retire(self) -> None:
        """Remove both veth pairs and the namespace (its conntrack table goes with it)."""
        await self.destroy(self.host, HOST_PUBLIC_PREFIX + self.key, HOST_PRIVATE_PREFIX + self.key)
