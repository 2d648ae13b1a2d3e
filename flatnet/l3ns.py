"""The namespace of each served L3: it plugs the L3's DHCP, DNS and metadata servers into its L2 bridge.

Each namespace holds the inner end of a veth pair whose host end is a port of the L2 bridge; the
inner end carries the L3's DHCP address and the metadata address as a /32, and a permanent neighbour
entry for every local VM NIC (so unicast DHCP replies and metadata answers never wait on ARP, and
always go to the reserved MAC). The plumbing is `flatnet.netns`; servers open their sockets inside the
namespace with `agentkit.netns.netns_socket`, so the one event loop serves all namespaces.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from flatnet.errors import NamespaceError
from flatnet.netns import LOOPBACK, Address, Namespace, Netlink, ensure_veth, owned

log = logging.getLogger(__name__)
HOST_DEV_PREFIX, INNER_DEV_PREFIX = "hsf", "hsfi"
_KEY = "[0-9a-z]{1,8}"  # what `short_id` makes of a uuid


def short_id(uuid: str) -> str:
    return uuid.replace("-", "").lower()[:8]


@dataclass(frozen=True)
class Layout:
    """Where one L3's services live on this host: names, addresses and the local NICs' neighbours."""

    netns: str
    bridge: str
    host_dev: str
    inner_dev: str
    addresses: frozenset[Address]
    neighbours: dict[str, str] = field(default_factory=dict, hash=False)  # ip -> mac

    @property
    def plumbing(self) -> tuple[str, str, str, str, frozenset[Address]]:
        """Everything but the neighbours: what a reservation change leaves alone."""
        return self.netns, self.bridge, self.host_dev, self.inner_dev, self.addresses


@dataclass(frozen=True)
class Plugged:
    """The inner end of a plugged namespace: its interface index there and its MAC address."""

    index: int
    mac: str


class L3Namespaces:
    """Creates, repairs and removes the namespaces whose names match `prefix` + short id.

    Raises `NamespaceError` (from `flatnet.netns`) for what cannot be done now: the L3 is skipped until
    the next apply."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.host = Netlink()
        self._namespaces: dict[str, Namespace] = {}

    def layout(self, l3_uuid: str, bridge: str, addresses: frozenset[Address],
               neighbours: dict[str, str]) -> Layout:
        sid = short_id(l3_uuid)
        return Layout(self.prefix + sid, bridge, HOST_DEV_PREFIX + sid, INNER_DEV_PREFIX + sid,
                      addresses, neighbours)

    def owned(self) -> set[str]:
        """Names of existing namespaces this manager owns (including ones a previous process left)."""
        return owned(self.prefix, _KEY)

    async def ensure(self, lay: Layout) -> Plugged:
        """Make the namespace match `lay` (creating or repairing it)."""
        ns = self._namespace(lay.netns)
        await ns.create()
        bridge = await self.host.index(lay.bridge)
        if bridge is None:
            raise NamespaceError(netns=lay.netns, reason=f"bridge {lay.bridge} does not exist (yet)")
        veth = await ensure_veth(self.host, ns, lay.host_dev, lay.inner_dev)
        await self.host.set_link(veth.host_index, master=bridge, state="up")
        await ns.set_link(LOOPBACK, state="up")
        await ns.set_link(veth.inner_index, state="up")
        await ns.sync_addresses(veth.inner_index, lay.addresses)
        await ns.sync_neighbours(veth.inner_index, lay.neighbours)
        return Plugged(veth.inner_index, await ns.mac(veth.inner_index))

    async def add_neighbours(self, lay: Layout, plugged: Plugged, known: Mapping[str, str]) -> None:
        """The fast path of a reservation change: only the entries missing from `known`, no dump."""
        missing = {ip: mac for ip, mac in lay.neighbours.items() if known.get(ip) != mac}
        await self._namespace(lay.netns).add_neighbours(plugged.index, missing)

    def _namespace(self, name: str) -> Namespace:
        ns = self._namespaces.get(name)
        if ns is None:
            ns = self._namespaces[name] = Namespace(name)
        return ns

    async def remove(self, name: str) -> None:
        """Delete the veth (at once, whoever still holds the namespace) and the namespace; a failure is
        logged and the next apply tries again (the name is still ours)."""
        ns = self._namespaces.pop(name, None) or Namespace(name)
        try:
            await ns.destroy(self.host, HOST_DEV_PREFIX + name[len(self.prefix):])
        except NamespaceError as e:
            log.error("namespace not removed: %s", e, extra={"fields": {"netns": name}})
            return
        log.info("namespace removed", extra={"fields": {"netns": name}})

    def close(self) -> None:
        for ns in self._namespaces.values():
            ns.close()
        self._namespaces.clear()
        self.host.close()
