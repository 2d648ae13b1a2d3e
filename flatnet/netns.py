"""flatnet's one namespace and netlink kit: pyroute2 is wrapped here and nowhere else (os-vif's impl_pyroute2).

`Netlink` is one long-lived rtnetlink handle in one namespace (opening one costs a socket made inside the
namespace; `agentkit.netns` makes that without a fork). `Namespace` adds the lifecycle of a named
namespace of ours. Every failure of netlink, conntrack or the `ip`/`sysctl` commands comes out as
`NamespaceError` (`raise … from`); the error codes that mean "already gone" are tolerated where listed.
The `sync_*` methods dump, compare and write only the differences, so applying the same state twice
changes nothing. Sockets inside a namespace: `agentkit.netns.netns_socket`.

Namespaces are named in /run/netns: the process must share the host's mount namespace, or the names it
creates are visible to it alone (simulating a host, start it with `nsenter --net=...`: `ip netns exec`
gives it a private mount namespace).
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import re
import socket
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Set
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

from pyroute2 import AsyncIPRoute
from pyroute2 import netns as pr_netns
from pyroute2.conntrack import AsyncConntrack
from pyroute2.netlink.exceptions import NetlinkError

from agentkit.proc import ProcessError, arun
from flatnet.errors import NamespaceError

log = logging.getLogger(__name__)
NETNS_DIR = "/run/netns"
NUD_PERMANENT, NUD_NOARP = 0x80, 0x40  # NOARP on a bridge FDB entry: `static`
MAIN_TABLE, SCOPE_LINK = 254, 253
LOOPBACK = 1  # ifindex of `lo` in every namespace

Address = tuple[str, int]  # address, prefix length
Route = tuple[str, int, int, str | None]  # dst, prefix length, oif, gateway
P = ParamSpec("P")
R = TypeVar("R")
H = TypeVar("H", bound="Netlink")


def _translated(
    method: Callable[Concatenate[H, P], Awaitable[R]],
) -> Callable[Concatenate[H, P], Coroutine[Any, Any, R]]:
    """Netlink, OS and command failures of a `Netlink` method as `NamespaceError` naming the namespace."""

    async def wrapper(self: H, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(self, *args, **kwargs)
        except (NetlinkError, OSError, ProcessError) as e:
            raise NamespaceError(netns=self.label, reason=str(e)) from e

    functools.update_wrapper(wrapper, method)
    return wrapper


def owned(prefix: str, key: str) -> set[str]:
    """Namespaces on this kernel named `prefix` + a match of the regex `key` (also ones an earlier process left)."""
    pattern = re.compile(re.escape(prefix) + key)
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return set()
    return {n for n in names if pattern.fullmatch(n)}


class Netlink:
    """rtnetlink in namespace `netns` (None: the one this process runs in), opened on first use and kept."""

    def __init__(self, netns: str | None = None):
        self.netns = netns
        self._ipr: Any = None

    @property
    def label(self) -> str:
        return self.netns or "(own)"

    @property
    def ipr(self) -> Any:
        if self._ipr is None:
            self._ipr = AsyncIPRoute(netns=self.netns, flags=0) if self.netns else AsyncIPRoute()
        return self._ipr

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    @_translated
    async def index(self, ifname: str) -> int | None:
        found = await self.ipr.link_lookup(ifname=ifname)
        return int(found[0]) if found else None

    async def require(self, ifname: str) -> int:
        """The index of `ifname`; NamespaceError when it does not exist (yet)."""
        index = await self.index(ifname)
        if index is None:
            raise NamespaceError(netns=self.label, reason=f"{ifname} does not exist (yet)")
        return index

    @_translated
    async def delete_link(self, ifname: str) -> None:
        """Delete `ifname` if it exists (one deleted meanwhile is fine)."""
        found = await self.ipr.link_lookup(ifname=ifname)
        if not found:
            return
        try:
            await self.ipr.link("del", index=found[0])
        except NetlinkError as e:
            if e.code != errno.ENODEV:
                raise

    @_translated
    async def set_link(self, index: int, state: str | None = None, master: int | None = None,
                       mtu: int | None = None) -> None:
        """Set what is given: setting the values a link already has is a no-op for the kernel."""
        attrs = {k: v for k, v in (("state", state), ("master", master), ("mtu", mtu)) if v is not None}
        await self.ipr.link("set", index=index, **attrs)

    @_translated
    async def mac(self, index: int) -> str:
        (link,) = await self.ipr.link("get", index=index)
        return str(link.get("IFLA_ADDRESS"))

    @_translated
    async def add_veth(self, ifname: str, peer: str, peer_netns: str, address: str | None = None,
                       mtu: int | None = None) -> None:
        """A veth pair: `ifname` here, `peer` in `peer_netns`; `address` and `mtu` of the end here."""
        extra = {k: v for k, v in (("address", address), ("mtu", mtu)) if v is not None}
        await self.ipr.link("add", ifname=ifname, kind="veth", peer={"ifname": peer, "net_ns_fd": peer_netns},
                            **extra)

    @_translated
    async def sync_addresses(self, index: int, want: Set[Address], *, add: bool = True,
                             remove: bool = True) -> tuple[set[Address], set[Address]]:
        """IPv4 addresses of link `index` exactly `want` (only its additions or only its removals when the other
        is turned off); returns (added, removed)."""
        have: set[Address] = set()
        async for a in await self.ipr.addr("dump", index=index, family=socket.AF_INET):
            if a["index"] == index:
                have.add((str(a.get("IFA_ADDRESS")), int(a["prefixlen"])))
        removed, added = (have - want if remove else set()), (set(want) - have if add else set())
        for address, plen in sorted(removed):
            await self.ipr.addr("del", index=index, address=address, prefixlen=plen)
        for address, plen in sorted(added):
            await self.ipr.addr("add", index=index, address=address, prefixlen=plen)
        return added, removed

    @_translated
    async def sync_neighbours(self, index: int, want: Mapping[str, str]) -> set[str]:
        """Permanent neighbour entries of link `index` exactly `want` (ip -> mac); entries the kernel learned
        itself are left alone. Returns the addresses whose entry went away or changed."""
        have: dict[str, str] = {}
        async for n in await self.ipr.neigh("dump", ifindex=index, family=socket.AF_INET):
            if n["ifindex"] == index and n["state"] & NUD_PERMANENT:
                have[str(n.get("NDA_DST"))] = str(n.get("NDA_LLADDR"))
        for ip in sorted(have.keys() - want.keys()):
            await self.ipr.neigh("del", dst=ip, ifindex=index)
        await self._replace_neighbours(index, {ip: mac for ip, mac in want.items() if have.get(ip) != mac})
        return {ip for ip, mac in have.items() if want.get(ip) != mac}

    @_translated
    async def add_neighbours(self, index: int, entries: Mapping[str, str]) -> None:
        """Permanent entries for `entries` (ip -> mac) without a dump: the fast path for new NICs."""
        await self._replace_neighbours(index, entries)

    async def _replace_neighbours(self, index: int, entries: Mapping[str, str]) -> None:
        for ip, mac in sorted(entries.items()):
            await self.ipr.neigh("replace", dst=ip, lladdr=mac, ifindex=index, state=NUD_PERMANENT)

    @_translated
    async def sync_routes(self, want: Set[Route]) -> None:
        """IPv4 routes of the main table exactly `want`; routes via a gateway are added after the links'."""
        have: set[Route] = set()
        async for r in await self.ipr.route("dump", table=MAIN_TABLE, family=socket.AF_INET):
            if r.get("RTA_TABLE") == MAIN_TABLE:
                have.add((r.get("RTA_DST") or "0.0.0.0", r["dst_len"], r.get("RTA_OIF"), r.get("RTA_GATEWAY")))
        for dst, plen, oif, gw in have - want:
            await self.ipr.route("del", dst=f"{dst}/{plen}", oif=oif, **({"gateway": gw} if gw else {}))
        for dst, plen, oif, gw in sorted(want - have, key=lambda r: (r[3] is not None, str(r))):
            extra = {"gateway": gw} if gw else {"scope": SCOPE_LINK}
            await self.ipr.route("replace", dst=f"{dst}/{plen}", oif=oif, **extra)

    @_translated
    async def pin_fdb(self, port: int, mac: str, bridge: int) -> None:
        """A static forwarding entry: frames for `mac` go to bridge port `port`, never flooded."""
        await self.ipr.fdb("replace", ifindex=port, lladdr=mac, master=bridge, state=NUD_NOARP)


@dataclass(frozen=True)
class Veth:
    """A veth pair as found or made by `ensure_veth`."""

    host_index: int
    inner_index: int
    made: bool


async def ensure_veth(host: Netlink, ns: Namespace, host_dev: str, inner_dev: str, address: str | None = None,
                      mtu: int | None = None) -> Veth:
    """The pair `host_dev` (in `host`) <-> `inner_dev` (in `ns`); a half left by a crash is deleted and the
    pair made again with `address` and `mtu` on the host end."""
    host_idx, inner_idx = await host.index(host_dev), await ns.index(inner_dev)
    if host_idx is not None and inner_idx is not None:
        return Veth(host_idx, inner_idx, made=False)
    await host.delete_link(host_dev)
    await ns.delete_link(inner_dev)
    await host.add_veth(host_dev, inner_dev, ns.name, address=address, mtu=mtu)
    log.info("veth plugged", extra={"fields": {"netns": ns.name, "host_dev": host_dev}})
    return Veth(await host.require(host_dev), await ns.require(inner_dev), made=True)


class Namespace(Netlink):
    """The named namespace `name` of ours, and its netlink handle."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name

    def exists(self) -> bool:
        return os.path.exists(os.path.join(NETNS_DIR, self.name))

    @_translated
    async def create(self) -> bool:
        """Create the namespace when missing; True when it had to be made. A handle to a namespace deleted
        behind our back would keep that one alive: it is dropped first."""
        if self.exists():
            return False
        self.close()
        await arun(["ip", "netns", "add", self.name])  # pyroute2 would fork this threaded process
        return True

    @_translated
    async def sysctl(self, *settings: str) -> None:
        """`key=value` settings of the namespace's network stack."""
        await arun(["ip", "netns", "exec", self.name, "sysctl", "-q", "-w", *settings])

    @_translated
    async def destroy(self, host: Netlink, *host_devs: str) -> None:
        """Delete the host ends of its veths (at once, whoever still holds the namespace), then the namespace
        and with it everything inside (conntrack too)."""
        for dev in host_devs:
            await host.delete_link(dev)
        self.close()
        try:
            pr_netns.remove(self.name)
        except FileNotFoundError:
            pass

    @_translated
    async def forget_connections(self, addresses: Set[str]) -> int:
        """Delete conntrack entries that involve any of `addresses`; returns how many went."""
        if not addresses:
            return 0
        ct = AsyncConntrack(netns=self.name, flags=0)
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
                        if err.code != errno.ENOENT:  # ended meanwhile
                            raise
        finally:
            ct.close()
        return gone
