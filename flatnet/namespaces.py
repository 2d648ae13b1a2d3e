"""Agent-owned network namespaces that plug an L3's services into its L2 bridge.

Each namespace holds the inner end of a veth pair whose host end is a port of the L2 bridge; the
inner end carries the L3's DHCP address and 169.254.169.254/32, and a permanent neighbour entry for
every local VM NIC (so unicast DHCP replies and metadata answers never wait on ARP, and always go to
the reserved MAC). One long-lived netlink handle per namespace; sockets are created inside a
namespace by a short-lived thread that enters it, so the one event loop serves all namespaces.

Namespaces are named in /run/netns: the process must share the host's mount namespace, or the names it
creates are visible to it alone (simulating a host, start it with `nsenter --net=...`: `ip netns exec`
gives it a private mount namespace).
"""

from __future__ import annotations

import logging
import os
import re
import socket
from dataclasses import dataclass, field

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from agentkit.netns import netns_socket  # noqa: F401 - the flatnet plugins' way to listen in a namespace
from agentkit.proc import arun

log = logging.getLogger(__name__)
NETNS_DIR = "/run/netns"
NUD_PERMANENT = 0x80
HOST_DEV_PREFIX, INNER_DEV_PREFIX = "hsf", "hsfi"


class NamespaceError(Exception):
    """A namespace could not be set up; the L3 is skipped until the next apply."""


def short_id(uuid: str) -> str:
    return uuid.replace("-", "").lower()[:8]


@dataclass(frozen=True)
class Layout:
    """Where one L3's services live on this host: names, addresses and the local NICs' neighbours."""

    netns: str
    bridge: str
    host_dev: str
    inner_dev: str
    addresses: frozenset[tuple[str, int]]
    neighbours: dict[str, str] = field(default_factory=dict, hash=False)  # ip -> mac

    @property
    def plumbing(self) -> tuple:
        """Everything but the neighbours: what a reservation change leaves alone."""
        return self.netns, self.bridge, self.host_dev, self.inner_dev, self.addresses


@dataclass(frozen=True)
class Plugged:
    """The inner end of a plugged namespace: its interface index there and its MAC address."""

    index: int
    mac: str


class NamespaceManager:
    """Creates, repairs and removes the namespaces whose names match `prefix` + short id."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self._owned = re.compile(re.escape(prefix) + r"[0-9a-z]{1,8}")
        self._host: AsyncIPRoute | None = None
        self._handles: dict[str, AsyncIPRoute] = {}

    def layout(self, l3_uuid: str, bridge: str, addresses: frozenset[tuple[str, int]],
               neighbours: dict[str, str]) -> Layout:
        sid = short_id(l3_uuid)
        return Layout(self.prefix + sid, bridge, HOST_DEV_PREFIX + sid, INNER_DEV_PREFIX + sid,
                      addresses, neighbours)

    def owned(self) -> set[str]:
        """Names of existing namespaces this manager owns (including ones a previous process left)."""
        try:
            names = os.listdir(NETNS_DIR)
        except FileNotFoundError:
            return set()
        return {n for n in names if self._owned.fullmatch(n)}

    @property
    def host(self) -> AsyncIPRoute:
        if self._host is None:
            self._host = AsyncIPRoute()
        return self._host

    async def ensure(self, lay: Layout) -> Plugged:
        """Make the namespace match `lay` (creating or repairing it)."""
        try:
            return await self._ensure(lay)
        except (NetlinkError, OSError) as e:
            raise NamespaceError(f"namespace {lay.netns}: {e}") from e

    async def add_neighbours(self, lay: Layout, plugged: Plugged, known: dict[str, str]) -> None:
        """The fast path of a reservation change: only the entries missing from `known`, no dump."""
        ns = self._handle(lay.netns)
        try:
            for ip, mac in lay.neighbours.items():
                if known.get(ip) != mac:
                    await ns.neigh("replace", dst=ip, lladdr=mac, ifindex=plugged.index, state="permanent")
        except (NetlinkError, OSError) as e:
            raise NamespaceError(f"namespace {lay.netns}: {e}") from e

    async def _ensure(self, lay: Layout) -> Plugged:
        if lay.netns not in self.owned():
            await arun(["ip", "netns", "add", lay.netns])
        ns = self._handle(lay.netns)
        bridge = await _index(self.host, lay.bridge)
        if bridge is None:
            raise NamespaceError(f"bridge {lay.bridge} does not exist (yet)")
        host_idx, inner_idx = await _index(self.host, lay.host_dev), await _index(ns, lay.inner_dev)
        if host_idx is None or inner_idx is None:
            inner_idx = await self._plug(ns, lay, host_idx, inner_idx)
            host_idx = await _index(self.host, lay.host_dev)
        await self.host.link("set", index=host_idx, master=bridge, state="up")
        await ns.link("set", index=1, state="up")  # lo
        await ns.link("set", index=inner_idx, state="up")
        await _sync_addresses(ns, inner_idx, lay.addresses)
        await _sync_neighbours(ns, inner_idx, lay.neighbours)
        (link,) = await ns.link("get", index=inner_idx)
        return Plugged(inner_idx, link.get("IFLA_ADDRESS"))

    def _handle(self, name: str) -> AsyncIPRoute:
        handle = self._handles.get(name)
        if handle is None:
            handle = self._handles[name] = AsyncIPRoute(netns=name, flags=0)
        return handle

    async def _plug(self, ns: AsyncIPRoute, lay: Layout, host_idx: int | None, inner_idx: int | None) -> int:
        """(Re)create the veth pair: a half left by a crash is deleted first."""
        if host_idx is not None:
            await self.host.link("del", index=host_idx)
        if inner_idx is not None:
            await ns.link("del", index=inner_idx)
        await self.host.link("add", ifname=lay.host_dev, kind="veth",
                             peer={"ifname": lay.inner_dev, "net_ns_fd": lay.netns})
        idx = await _index(ns, lay.inner_dev)
        if idx is None:
            raise NamespaceError(f"{lay.inner_dev} did not appear in {lay.netns}")
        log.info("namespace plugged", extra={"fields": {"netns": lay.netns, "bridge": lay.bridge}})
        return idx

    async def remove(self, name: str) -> None:
        """Delete the veth (at once, whoever still holds the namespace) and the namespace."""
        handle = self._handles.pop(name, None)
        if handle is not None:
            handle.close()
        host_dev = HOST_DEV_PREFIX + name[len(self.prefix):]
        idx = await _index(self.host, host_dev)
        if idx is not None:
            try:
                await self.host.link("del", index=idx)
            except NetlinkError as e:
                log.warning("could not delete %s: %s", host_dev, e)
        await arun(["ip", "netns", "del", name], rcs=(0, 1, 255))
        log.info("namespace removed", extra={"fields": {"netns": name}})

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
        if self._host is not None:
            self._host.close()
            self._host = None


async def _index(ipr: AsyncIPRoute, ifname: str) -> int | None:
    found = await ipr.link_lookup(ifname=ifname)
    return found[0] if found else None


async def _sync_addresses(ns: AsyncIPRoute, index: int, want: frozenset[tuple[str, int]]) -> None:
    have = {(a.get("IFA_ADDRESS"), a["prefixlen"]) async for a in await ns.addr("dump", index=index,
                                                                               family=socket.AF_INET)}
    for address, plen in have - want:
        await ns.addr("del", index=index, address=address, prefixlen=plen)
    for address, plen in want - have:
        await ns.addr("add", index=index, address=address, prefixlen=plen)


async def _sync_neighbours(ns: AsyncIPRoute, index: int, want: dict[str, str]) -> None:
    """Permanent entries exactly for `want`; entries the kernel learned itself are left alone."""
    have = {}
    async for n in await ns.neigh("dump", ifindex=index, family=socket.AF_INET):
        if n["state"] & NUD_PERMANENT:
            have[n.get("NDA_DST")] = n.get("NDA_LLADDR")
    for ip in have.keys() - want.keys():
        await ns.neigh("del", dst=ip, ifindex=index)
    for ip, mac in want.items():
        if have.get(ip) != mac:
            await ns.neigh("replace", dst=ip, lladdr=mac, ifindex=index, state="permanent")
