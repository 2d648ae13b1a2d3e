"""`FlatnetService`: the per-host composition of flat namespaces, DHCP, DNS and bridge rules.

The composition root (kvmagent) calls `apply` with the host's whole desired state after every change
(and periodically); `apply` is level-triggered and idempotent. One event loop serves every namespace:
a change of reservations or records is an assignment, served from the next packet on. In-process
servers that also listen inside the namespaces (the metadata server) plug in as `NamespacePlugin`s.

`close()` stops serving and leaves namespaces and rules in place (a restarted agent adopts them);
`apply` with empty state removes everything.

One object's bad data never stops the others: an L3 that cannot be served is logged and skipped, NICs
and ports the bridge rules cannot take are left out of them (`BridgeRules`), and even when nft refuses
the table the namespaces are served and the plugins updated before the error is raised. Per-VM limits
(`flatnet.fairness`) come from the settings; lease changes are coalesced per NIC (`LeaseReports`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from agentkit.buckets import TokenBuckets
from agentkit.fairness.connections import ConnectionTable
from agentkit.fairness.fdlimit import fd_share
from agentkit.model import DnsRecord, L2Spec, L3Spec, VmSpec
from agentkit.netns import netns_socket
from flatnet.bridge_rules import BridgeRules, PortRules
from flatnet.dhcp import server as dhcp_server
from flatnet.dhcp.leasereports import LeaseReports
from flatnet.dhcp.leases import Reservation, reservations
from flatnet.dhcp.server import DhcpEndpoint, DhcpLimits, DhcpResponder
from flatnet.dns import server as dns_server
from flatnet.dns.endpoint import DnsEndpoint, DnsLimits, TcpConnection
from flatnet.dns.server import DnsResponder
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
        self._rules = BridgeRules(self.settings.nft_table, self.settings.steer_metadata, self.settings.guest_pps)
        self._running: dict[str, _Running] = {}
        self._lock = asyncio.Lock()
        self._leases = LeaseReports(self._send_lease, self.settings.lease_debounce,
                                    self.settings.lease_debounce_max) if report else None
        tcp_total = self.settings.dns_tcp_connections or fd_share(0.125)
        self._dns_tcp: ConnectionTable[TcpConnection] = ConnectionTable(tcp_total, self.settings.dns_tcp_per_source)

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
            failure: FlatnetError | None = None
            try:
                await self._rules.sync(self._ports())
            except FlatnetError as e:  # nft itself failed: serve and update everything else, then report it
                failure = e
            for plugin in self.plugins:
                await plugin.update(l3s, vms)
            if self._leases is not None:
                self._leases.retain(nic.uuid for s in desired.values() for _, nic in s.nics)
            if failure is not None:
                raise failure

    async def close(self) -> None:
        """Stop serving; namespaces and rules stay for the next process to adopt."""
        async with self._lock:
            for run in self._running.values():
                await self._stop(run, remove=False)
            self._running.clear()
            for plugin in self.plugins:
                await plugin.close()
            self._ns.close()
            if self._leases is not None:
                self._leases.close()

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per-L3 counters of the DHCP and DNS servers (for /metrics and tests)."""
        return {uuid: {"netns": run.layout.netns,
                       "dhcp": dict(run.dhcp.responder.stats) if run.dhcp else {},
                       "dns": dict(run.dns.responder.stats) if run.dns else {}}
                for uuid, run in self._running.items()}

    async def host_stats(self) -> dict[str, int]:
        """Host-wide counters: frames over `guest_pps` dropped by the kernel, NICs and ports left out of the
        bridge rules, lease changes noted and reported, DNS TCP connections held."""
        leases = self._leases.stats if self._leases is not None else {}
        return {"guest_pps_dropped": await self._rules.pps_dropped(), "bridge_rules_skipped": self._rules.skipped,
                "lease_changes": leases.get("noted", 0), "lease_reports": leases.get("reported", 0),
                "dns_tcp_connections": len(self._dns_tcp)}

    def _layout(self, s: ServedL3) -> Layout:
        return self._ns.layout(s.l3.uuid, s.l2.bridge, s.addresses, s.neighbours)

    def _ports(self) -> list[PortRules]:
        return [PortRules(uplink=r.served.l2.uplink, port=r.layout.host_dev, port_mac=r.plugged.mac,
                          dhcp_address=r.served.dhcp_address,
                          vm_macs=frozenset(nic.mac for _, nic in r.served.nics),
                          vm_taps=frozenset(nic.tap for _, nic in r.served.nics),
                          bridge=r.served.l2.bridge, l3_uuid=r.served.l3.uuid)
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
            lease = partial(self._lease, s.l3.uuid) if self._leases else None
            limits = DhcpLimits.per_second(self.settings.dhcp_mac_rate, self.settings.dhcp_notice_rate)
            run.dhcp = DhcpEndpoint(sock, DhcpResponder(s.dhcp_address, s.l3.uuid, lease, limits))
            run.dhcp.start()
        if s.dns and run.dns is None:
            run.dns = await self._open_dns(s, netns)
        run.dhcp.responder.reservations = reservations(s.l3, s.nics, self.settings.lease_time)
        if run.dns is not None:
            run.dns.responder.zone = Zone(s.l3.domain, s.records)
            run.dns.responder.upstreams = list(s.l3.dns_servers)
            run.dns.responder.forwarding = self.settings.may_forward(s.l3)
        run.served = s

    def _lease(self, l3_uuid: str, res: Reservation, state: str) -> None:
        """A lease change, coalesced per NIC on its way to observed state `lease/<nic uuid>`."""
        assert self._leases is not None
        self._leases.note(res.nic_uuid, {"state": state, "vm_uuid": res.vm_uuid, "l3_uuid": l3_uuid,
                                         "mac": res.mac.hex(":"), "ip": socket.inet_ntoa(res.ip)})

    def _send_lease(self, nic_uuid: str, body: dict[str, Any]) -> None:
        """Observed state `lease/<nic uuid>` (the coordinator shows it with the VM)."""
        assert self.report is not None
        self.report("lease", nic_uuid, body)

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
        settings = self.settings
        limits = DnsLimits(TokenBuckets(settings.dns_queries_per_second, 2 * settings.dns_queries_per_second),
                           settings.dns_forwards_per_source,
                           settings.dns_forwards, self._dns_tcp)
        endpoint = DnsEndpoint(udp, tcp, DnsResponder(zone, list(s.l3.dns_servers), settings.dns_timeout, s.l3.uuid),
                               limits)
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
