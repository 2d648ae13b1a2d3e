"""One EIP namespace and its two veth pairs, kept equal to a `PairPlan` over netlink (pyroute2).

Inside the namespace: `pub` (a port of the public L2 bridge) holds every VIP as a /32, `priv` (a
port of the private L2 bridge) has no address and a permanent neighbour entry per EIP'd NIC, so the
namespace never ARPs on the private network. Addresses, neighbours and routes are dumped and only the
differences written; link state, bridge membership and the static FDB entry are set to the same values
again (no-ops for the kernel), so re-applying the same plan changes nothing. One long-lived netlink
handle per namespace (opening one costs a fork); no subprocess per EIP.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from dataclasses import dataclass

from pyroute2 import AsyncIPRoute
from pyroute2 import netns as pr_netns
from pyroute2.conntrack import AsyncConntrack
from pyroute2.netlink.exceptions import NetlinkError

from agentkit.netns import netns_socket
from agentkit.proc import arun
from flatnet.eip_garp import ETH_P_ARP
from flatnet.eip_plan import HOST_PRIVATE_PREFIX, HOST_PUBLIC_PREFIX, NS_PRIVATE_DEV, NS_PUBLIC_DEV, PairPlan

log = logging.getLogger(__name__)
NETNS_DIR = "/run/netns"
NUD_PERMANENT, NUD_NOARP = 0x80, 0x40  # NOARP on a bridge FDB entry: `static`
MAIN_TABLE, SCOPE_LINK = 254, 253
ENOENT, ENODEV = 2, 19
# Written when the namespace (or one of its devices) is made, and once per process start.
SYSCTLS = (
    "net.ipv4.ip_forward=1",
    "net.ipv6.conf.all.disable_ipv6=1",  # no IPv6 link-local chatter on either L2
    "net.ipv6.conf.default.disable_ipv6=1",
    "net.ipv4.conf.all.arp_ignore=1",  # answer ARP only for addresses of the asking device: VIPs on `pub`
    "net.ipv4.conf.all.arp_announce=2",
    # Answer an EIP'd VM's ARP for its gateway (the bridge lets only those requests in), after a random
    # delay of up to proxy_delay (0.8 s): a real router on the private L2 answers first and keeps its MAC.
    f"net.ipv4.conf.{NS_PRIVATE_DEV}.proxy_arp_pvlan=1",
)

Route = tuple[str, int, int, str | None]  # dst, prefix length, oif, gateway


class EipError(Exception):
    """A pair could not be set up now (say, its bridge is missing); retried on the next apply."""


@dataclass(frozen=True)
class Changes:
    """What one sync changed: VIPs to announce, addresses whose connections must be forgotten."""

    added_vips: frozenset[ipaddress.IPv4Address]
    stale: frozenset[str]


def owned(prefix: str) -> set[str]:
    """EIP namespaces on this kernel named by `prefix` (including ones an earlier process left)."""
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return set()
    return {n for n in names if n.startswith(prefix) and len(n) == len(prefix) + 8
            and all(c in "0123456789abcdef" for c in n[len(prefix):])}


def _host_mac() -> str:
    """fe:… like libvirt's taps: higher than any real NIC's MAC, so a bridge never adopts it as its own."""
    return "fe:" + ":".join(f"{b:02x}" for b in os.urandom(5))


async def _index(ipr: AsyncIPRoute, name: str) -> int | None:
    found = await ipr.link_lookup(ifname=name)
    return found[0] if found else None


async def _delete_link(ipr: AsyncIPRoute, name: str) -> None:
    idx = await _index(ipr, name)
    if idx is not None:
        try:
            await ipr.link("del", index=idx)
        except NetlinkError as e:
            if e.code != ENODEV:
                raise


class EipNamespace:
    """The namespace `name`; `host` is the netlink handle of the namespace holding the bridges."""

    def __init__(self, name: str, key: str, host: AsyncIPRoute):
        self.name = name
        self.key = key
        self.host = host
        self._ns: AsyncIPRoute | None = None
        self._configured = False
        self.public_mac = ""
        self.private_mac = ""

    @property
    def ns(self) -> AsyncIPRoute:
        if self._ns is None:
            self._ns = AsyncIPRoute(netns=self.name, flags=0)
        return self._ns

    async def ensure(self, plan: PairPlan) -> None:
        """Namespace, both veth pairs on their bridges, sysctls, links up, routes; reads the two MACs."""
        try:
            await self._ensure(plan)
        except (NetlinkError, OSError) as e:
            raise EipError(f"EIP namespace {self.name}: {e}") from e

    async def _ensure(self, plan: PairPlan) -> None:
        made = not os.path.exists(os.path.join(NETNS_DIR, self.name))
        if made:
            self.close()  # a handle would keep a namespace deleted behind our back alive: drop it
            await arun(["ip", "netns", "add", self.name])  # no fork of this threaded process
        pub = await self._plug(plan.host_public_dev, NS_PUBLIC_DEV, plan.public_bridge, plan.public_mtu)
        priv = await self._plug(plan.host_private_dev, NS_PRIVATE_DEV, plan.private_bridge, plan.private_mtu)
        if made or pub[1] or priv[1] or not self._configured:
            await arun(["ip", "netns", "exec", self.name, "sysctl", "-q", "-w", *SYSCTLS])
            self._configured = True
        for idx in (1, pub[0], priv[0]):  # 1 is lo
            await self.ns.link("set", index=idx, state="up")
        want: set[Route] = {(str(plan.public_net.network_address), plan.public_net.prefixlen, pub[0], None),
                            (str(plan.private_net.network_address), plan.private_net.prefixlen, priv[0], None)}
        if plan.public_gateway is not None:
            want.add(("0.0.0.0", 0, pub[0], str(plan.public_gateway)))
        await self._sync_routes(want)
        (pub_link,) = await self.ns.link("get", index=pub[0])
        (priv_link,) = await self.ns.link("get", index=priv[0])
        self.public_mac, self.private_mac = pub_link.get("address"), priv_link.get("address")
        await self._pin_fdb(plan)

    async def _plug(self, host_dev: str, inner: str, bridge: str, mtu: int) -> tuple[int, bool]:
        """The veth pair host_dev <-> inner on `bridge`; (inner ifindex, whether it had to be made)."""
        bridge_idx = await _index(self.host, bridge)
        if bridge_idx is None:
            raise EipError(f"bridge {bridge} does not exist (yet)")
        host_idx, inner_idx = await _index(self.host, host_dev), await _index(self.ns, inner)
        made = host_idx is None or inner_idx is None
        if made:  # a half pair is left over from an interrupted run: start again
            await _delete_link(self.host, host_dev)
            await _delete_link(self.ns, inner)
            await self.host.link("add", ifname=host_dev, kind="veth", address=_host_mac(), mtu=mtu,
                                 peer={"ifname": inner, "net_ns_fd": self.name})
            host_idx, inner_idx = await _index(self.host, host_dev), await _index(self.ns, inner)
            if host_idx is None or inner_idx is None:
                raise EipError(f"veth {host_dev}/{inner} did not appear")
        await self.host.link("set", index=host_idx, master=bridge_idx, mtu=mtu, state="up")
        await self.ns.link("set", index=inner_idx, mtu=mtu)
        return inner_idx, made

    async def _pin_fdb(self, plan: PairPlan) -> None:
        """A static forwarding entry for `priv`'s MAC: steered frames never flood to the uplink."""
        port = await _index(self.host, plan.host_private_dev)
        bridge = await _index(self.host, plan.private_bridge)
        await self.host.fdb("replace", ifindex=port, lladdr=self.private_mac, master=bridge, state=NUD_NOARP)

    async def _sync_routes(self, want: set[Route]) -> None:
        have: set[Route] = set()
        async for r in await self.ns.route("dump", table=MAIN_TABLE, family=socket.AF_INET):
            if r.get("RTA_TABLE") == MAIN_TABLE:
                have.add((r.get("RTA_DST") or "0.0.0.0", r["dst_len"], r.get("RTA_OIF"), r.get("RTA_GATEWAY")))
        for dst, plen, oif, gw in have - want:
            await self.ns.route("del", dst=f"{dst}/{plen}", oif=oif, **({"gateway": gw} if gw else {}))
        for dst, plen, oif, gw in sorted(want - have, key=lambda r: (r[3] is not None, str(r))):  # gateways last
            extra = {"gateway": gw} if gw else {"scope": SCOPE_LINK}
            await self.ns.route("replace", dst=f"{dst}/{plen}", oif=oif, **extra)

    async def sync_bindings(self, plan: PairPlan) -> Changes:
        """VIPs on `pub` and neighbour entries on `priv` equal to the plan's bindings."""
        try:
            return await self._sync_bindings(plan)
        except (NetlinkError, OSError) as e:
            raise EipError(f"EIP namespace {self.name}: {e}") from e

    async def _sync_bindings(self, plan: PairPlan) -> Changes:
        pub = await _index(self.ns, NS_PUBLIC_DEV)
        priv = await _index(self.ns, NS_PRIVATE_DEV)
        have_vips: set[ipaddress.IPv4Address] = set()
        async for a in await self.ns.addr("dump", index=pub, family=socket.AF_INET):
            if a["index"] == pub:
                have_vips.add(ipaddress.IPv4Address(a.get("IFA_ADDRESS")))
        want_vips = {b.vip for b in plan.bindings}
        for vip in sorted(have_vips - want_vips):
            await self.ns.addr("del", index=pub, address=str(vip), prefixlen=32)
        have_nbr: dict[str, str] = {}
        async for n in await self.ns.neigh("dump", ifindex=priv, family=socket.AF_INET):
            if n["ifindex"] == priv and n["state"] & NUD_PERMANENT:
                have_nbr[n.get("NDA_DST")] = n.get("NDA_LLADDR")
        want_nbr = {str(b.private_ip): b.mac for b in plan.bindings}
        for ip in sorted(have_nbr.keys() - want_nbr.keys()):
            await self.ns.neigh("del", dst=ip, ifindex=priv)
        for ip, mac in sorted(want_nbr.items()):
            if have_nbr.get(ip) != mac:
                await self.ns.neigh("replace", dst=ip, lladdr=mac, ifindex=priv, state=NUD_PERMANENT)
        for vip in sorted(want_vips - have_vips):
            await self.ns.addr("add", index=pub, address=str(vip), prefixlen=32)
        changed = {ip for ip, mac in have_nbr.items() if want_nbr.get(ip) != mac}
        return Changes(frozenset(want_vips - have_vips), frozenset({str(v) for v in have_vips - want_vips} | changed))

    async def forget_connections(self, addresses: set[str]) -> int:
        """Delete conntrack entries that involve any of `addresses`: a removed VIP stops answering at once."""
        if not addresses:
            return 0
        try:
            ct = AsyncConntrack(netns=self.name, flags=0)
        except OSError as e:
            raise EipError(f"conntrack of {self.name}: {e}") from e
        gone = 0
        try:
            entries = [e async for e in await ct.dump_entries()]
            for e in entries:
                seen = {e.tuple_orig.saddr, e.tuple_orig.daddr, e.tuple_reply.saddr, e.tuple_reply.daddr}
                if seen & addresses:
                    try:
                        await ct.delete(e)
                        gone += 1
                    except NetlinkError as err:
                        if err.code != ENOENT:  # ended meanwhile
                            raise
        except (NetlinkError, OSError) as e:
            raise EipError(f"conntrack of {self.name}: {e}") from e
        finally:
            ct.close()
        return gone

    def announce_socket(self) -> socket.socket:
        """A raw ARP socket on `pub`, made inside the namespace (the caller owns and closes it)."""
        sock = netns_socket(self.name, socket.AF_PACKET, socket.SOCK_RAW, proto=socket.htons(ETH_P_ARP))
        sock.bind((NS_PUBLIC_DEV, ETH_P_ARP))
        return sock

    async def destroy(self) -> None:
        """Remove both veth pairs and the namespace (its conntrack table goes with it)."""
        await _delete_link(self.host, HOST_PUBLIC_PREFIX + self.key)
        await _delete_link(self.host, HOST_PRIVATE_PREFIX + self.key)
        self.close()
        try:
            pr_netns.remove(self.name)
        except FileNotFoundError:
            pass

    def close(self) -> None:
        if self._ns is not None:
            self._ns.close()
            self._ns = None
