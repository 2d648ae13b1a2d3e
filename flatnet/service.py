"""`FlatnetService`: the per-host composition of flat namespaces, DHCP, DNS and bridge rules.

The composition root (kvmagent) calls `apply` with the host's whole desired state after every change
(and periodically); `apply` is level-triggered and idempotent. One event loop serves every namespace:
a change of reservations or records is an assignment, served from the next packet on. In-process
servers that also listen inside the namespaces (the metadata server) plug in as `NamespacePlugin`s.

`close()` stops serving and leaves namespaces and rules in place (a restarted agent adopts them);
`apply` with empty state removes everything.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from agentkit.model import DnsRecord, L2Spec, L3Spec, VmSpec
from agentkit.netns import netns_socket
from flatnet.bridge_rules import BridgeRules, PortRules
from flatnet.dhcp import server as dhcp_server
from flatnet.dhcp.leases import Reservation, reservations
from flatnet.dhcp.server import DhcpEndpoint, DhcpResponder
from flatnet.dns import server as dns_server
from flatnet.dns.server import DnsEndpoint, DnsResponder
from flatnet.dns.zone import Zone
from flatnet.errors import FlatnetError
from flatnet.l3ns import L3Namespaces, Layout, Plugged
from flatnet.plan import ServedL3, plan
from flatnet.settings import FlatnetSettings

log = logging.getLogger(__name__)
Report = Callable[[str, str, dict[str, Any]], None]  # observed state: (kind, id, body), the agent's journal


class NamespacePlugin(Protocol):
    """Another in-process server listening inside every flat namespace (e.g. the metadata server).

    `attach` runs once the namespace is plugged (open sockets with `agentkit.netns.netns_socket(netns, ...)`),
    `detach` before it is deleted (close them, or the namespace outlives its name), `update` after every
    apply with the host's whole desired state, `close` when the service closes.
    """

    async def attach(self, served: ServedL3, netns: str) -> None: ...

    async def detach(self, l3_uuid: str) -> None: ...

    async def update(self, l3s: dict[str, L3Spec], vms: dict[str, VmSpec]) -> None: ...

    async def close(self) -> None: ...


@dataclass
class _Running:
    """What is live for one served L3."""

    served: ServedL3
    layout: Layout
    plugged: Plugged
    key: tuple[str, bool] | None = None  # (DHCP address, DNS on) the endpoints were opened for
    dhcp: DhcpEndpoint | None = None
    dns: DnsEndpoint | None = None
    attached: list[NamespacePlugin] = field(default_factory=list)


def _stale(run: _Running, s: ServedL3) -> bool:
    """Whether the live endpoints lack `s`: new data, or an endpoint missing."""
    return run.served != s or run.dhcp is None or (s.dns and run.dns is None)


class FlatnetService:
    """Serves DHCP and DNS for this host's VMs in one namespace per L3; see the module docstring."""

    def __init__(self, settings: FlatnetSettings | None = None, plugins: Sequence[NamespacePlugin] = (),
                 report: Report | None = None):
        self.settings = settings or FlatnetSettings()
        self.plugins = list(plugins)
        self.report = report
        self._ns = L3Namespaces(self.settings.netns_prefix)
        self._rules = BridgeRules(self.settings.nft_table, self.settings.steer_metadata)
        self._running: dict[str, _Running] = {}
        self._lock = asyncio.Lock()

    async def apply(self, l2s: dict[str, L2Spec], l3s: dict[str, L3Spec], vms: dict[str, VmSpec],
                    dns: dict[str, DnsRecord]) -> None:
        """Converge on the desired state: `vms` are this host's VMs, `dns` the records of every host."""
        async with self._lock:
            desired = plan(l2s, l3s, vms, dns)
            for uuid in [u for u in self._running if u not in desired]:
                await self._stop(self._running.pop(uuid), remove=True)
            wanted = {self._layout(s).netns for s in desired.values()}
            for orphan in sorted(self._ns.owned() - wanted):
                await self._ns.remove(orphan)
            for uuid, served in desired.items():
                try:
                    await self._serve(served)
                except (FlatnetError, OSError) as e:  # OSError: a server's socket in the namespace
                    log.error("L3 not served on this host: %s", e, extra={"fields": {"l3": uuid}})
            await self._rules.sync(self._ports())
            for plugin in self.plugins:
                await plugin.update(l3s, vms)

    async def close(self) -> None:
        """Stop serving; namespaces and rules stay for the next process to adopt."""
        async with self._lock:
            for run in self._running.values():
                await self._stop(run, remove=False)
            self._running.clear()
            for plugin in self.plugins:
                await plugin.close()
            self._ns.close()

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per-L3 counters of the DHCP and DNS servers (for health reports and tests)."""
        return {uuid: {"netns": run.layout.netns,
                       "dhcp": dict(run.dhcp.responder.stats) if run.dhcp else {},
                       "dns": dict(run.dns.responder.stats) if run.dns else {}}
                for uuid, run in self._running.items()}

    def _layout(self, s: ServedL3) -> Layout:
        return self._ns.layout(s.l3.uuid, s.l2.bridge, s.addresses, s.neighbours)

    def _ports(self) -> list[PortRules]:
        return [PortRules(uplink=r.served.l2.uplink, port=r.layout.host_dev, port_mac=r.plugged.mac,
                          dhcp_address=r.served.dhcp_address,
                          vm_macs=frozenset(nic.mac for _, nic in r.served.nics))
                for r in self._running.values()]

    async def _serve(self, s: ServedL3) -> None:
        """Serve `s`. When only NICs changed, new neighbours and data go first, the full repair pass after."""
        lay = self._layout(s)
        run = self._running.get(s.l3.uuid)
        if run is not None and run.layout.plumbing == lay.plumbing and _stale(run, s):
            await self._ns.add_neighbours(lay, run.plugged, run.layout.neighbours)
            await self._refresh(run, s)
        plugged = await self._ns.ensure(lay)
        if run is None:
            run = self._running[s.l3.uuid] = _Running(s, lay, plugged)
        elif plugged != run.plugged:  # a new veth: sockets bound to the old one hear nothing
            await self._stop(run, remove=False)
        run.layout, run.plugged = lay, plugged
        if _stale(run, s):
            await self._refresh(run, s)
        for plugin in self.plugins:
            if plugin not in run.attached:
                await plugin.attach(s, lay.netns)
                run.attached.append(plugin)

    async def _refresh(self, run: _Running, s: ServedL3) -> None:
        """Open what is missing (reopen all, plugins too, when the DHCP address or the DNS service changed)
        and swap the data of `s` in: served from the next packet on."""
        key = (s.dhcp_address, s.dns)
        if run.key != key:
            await self._stop(run, remove=False)
            run.key = key
        netns = run.layout.netns
        if run.dhcp is None:
            sock = netns_socket(netns, socket.AF_INET, socket.SOCK_DGRAM,
                                partial(dhcp_server.setup_socket, device=run.layout.inner_dev))
            lease = partial(self._lease, s.l3.uuid) if self.report else None
            run.dhcp = DhcpEndpoint(sock, DhcpResponder(s.dhcp_address, s.l3.uuid, lease))
            run.dhcp.start()
        if s.dns and run.dns is None:
            run.dns = await self._open_dns(s, netns)
        run.dhcp.responder.reservations = reservations(s.l3, s.nics, self.settings.lease_time)
        if run.dns is not None:
            run.dns.responder.zone = Zone(s.l3.domain, s.records)
            run.dns.responder.upstreams = list(s.l3.dns_servers)
        run.served = s

    def _lease(self, l3_uuid: str, res: Reservation, state: str) -> None:
        """A lease change as observed state `lease/<nic uuid>` (the coordinator shows it with the VM)."""
        assert self.report is not None
        self.report("lease", res.nic_uuid, {"state": state, "vm_uuid": res.vm_uuid, "l3_uuid": l3_uuid,
                                            "mac": res.mac.hex(":"), "ip": socket.inet_ntoa(res.ip)})

    async def _open_dns(self, s: ServedL3, netns: str) -> DnsEndpoint:
        address = s.dhcp_address
        udp = netns_socket(netns, socket.AF_INET, socket.SOCK_DGRAM, partial(dns_server.setup_udp, address=address))
        try:
            tcp = netns_socket(netns, socket.AF_INET, socket.SOCK_STREAM,
                               partial(dns_server.setup_tcp, address=address))
        except OSError:
            udp.close()
            raise
        zone = Zone(s.l3.domain, s.records)
        endpoint = DnsEndpoint(udp, tcp, DnsResponder(zone, list(s.l3.dns_servers), self.settings.dns_timeout,
                                                      s.l3.uuid))
        await endpoint.start()
        return endpoint

    async def _close_endpoints(self, run: _Running) -> None:
        if run.dhcp is not None:
            run.dhcp.close()
            run.dhcp = None
        if run.dns is not None:
            await run.dns.close()
            run.dns = None

    async def _stop(self, run: _Running, remove: bool) -> None:
        """Detach plugins and close endpoints (they are reopened by the next `_serve`); maybe delete the namespace."""
        for plugin in run.attached:
            await plugin.detach(run.served.l3.uuid)
        run.attached.clear()
        await self._close_endpoints(run)
        if remove:
            await self._ns.remove(run.layout.netns)
