"""Distributed EIP on the VM's host: the one class the composition root calls.

`EipDataplane.apply(l2s, l3s, vms)` is level-triggered: it takes this host's whole desired state and
makes the kernel match it. Every EIP on a NIC whose L3 offers the `EIP` service is applied, anything
else this dataplane once made is removed. Applying the same state again (also from a new process
after an agent restart) writes nothing: namespaces, devices, nftables objects and conntrack entries
stay, so established connections through an EIP continue. The one thing a new process does again is
announce (gratuitous ARP) every desired VIP of the pairs it finds in place, first thing on its first
apply: the process before it may have been killed after adding a VIP and before announcing it, and
nothing else would tell the neighbours that it moved here. Layout and packet path: docs/eip.md.

A live migration hands the VIPs over make-before-break. The target stages the moving VM's EIPs (plan.py:
all but the VIP addresses) while the memory is copied; the source, once the VM stopped running there,
calls `silence`, which only takes the VIP addresses of VMs no longer answered for off `pub` (netlink, no
process); when the VM is the target's, its `apply` finds everything in place but those addresses and adds
and announces them first thing (`_switch`: no process, the tables are known from this object's last
write or read), then converges the rest as always. The new host never holds a VIP before the old one let
go of it. The tables are read back from the kernel when `verify` (the agent's periodic pass); other
passes trust what this object last wrote or read, so a pass that changes no table runs no process.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass, field

from agentkit.model import L2Spec, L3Spec, VmSpec
from flatnet.eip import plan as eip_plan
from flatnet.eip.garp import Announcer
from flatnet.eip.netns import NAME_KEY, EipNamespace
from flatnet.eip.rules import host_body, namespace_body
from flatnet.eip.settings import EipSettings
from flatnet.errors import FlatnetError
from flatnet.netns import Netlink, owned
from flatnet.nft import NftTable, sync_isolating

log = logging.getLogger(__name__)


@dataclass
class EipStatus:
    """Outcome of one apply: EIPs answered here and EIPs staged here (uuid -> VIP), and pairs that failed
    (namespace -> reason)."""

    applied: dict[str, str] = field(default_factory=dict)
    staged: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


class EipDataplane:
    """Owns the EIP namespaces named by `settings.netns_prefix` and the host's EIP bridge table.

    `host_netns` names the namespace holding the L2 bridges; None (production) is the namespace this
    process runs in. Calls to `apply` are serialized; `close` releases handles and keeps the dataplane.
    """

    def __init__(self, settings: EipSettings | None = None, host_netns: str | None = None):
        self.settings = settings or EipSettings()
        self.host_netns = host_netns
        self._lock = asyncio.Lock()
        self._host = Netlink(host_netns)
        self._host_table = NftTable("bridge", self.settings.nft_table, host_netns)
        self._namespaces: dict[str, EipNamespace] = {}
        self._mapping: dict[str, dict[ipaddress.IPv4Address, ipaddress.IPv4Address]] = {}
        self._announcer = Announcer(self.settings.garp_count, self.settings.garp_interval)
        self._started = False  # whether this process has applied once (and announced what it found)

    def _namespace(self, name: str) -> EipNamespace:
        ns = self._namespaces.get(name)
        if ns is None:
            key = name[len(self.settings.netns_prefix):]
            ns = self._namespaces[name] = EipNamespace(name, key, self._host, self.settings.nft_table)
        return ns

    async def apply(self, l2s: dict[str, L2Spec], l3s: dict[str, L3Spec], vms: dict[str, VmSpec],
                    *, verify: bool = True) -> EipStatus:
        """Make this host's EIP dataplane match the desired state (see the module docstring); `verify` reads
        each table's fingerprint from the kernel instead of trusting what this object last wrote."""
        async with self._lock:
            plans = eip_plan.build(l2s, l3s, vms, self.settings.netns_prefix)
            if not self._started:
                await self._announce_found(plans)
                self._started = True
            await self._switch(plans)
            status = EipStatus()
            macs: dict[str, str] = {}
            fresh: list[tuple[EipNamespace, frozenset[ipaddress.IPv4Address]]] = []
            for name, plan in plans.items():
                try:
                    fresh.append((self._namespace(name), await self._converge(plan, verify)))
                except FlatnetError as e:
                    log.error("EIP pair not applied", extra={"fields": {"netns": name, "error": str(e)}})
                    status.errors[name] = str(e)
                    continue
                macs[name] = self._namespaces[name].private_mac
                for b in plan.bindings:
                    (status.staged if b.staged else status.applied)[b.eip_uuid] = str(b.vip)
            refused = await sync_isolating(self._host_table, list(plans.values()), lambda ps: host_body(ps, macs),
                                           verify=verify)
            for plan in refused:  # one pair's bad data must not keep the others' rules out
                log.error("EIP pair's bridge rules refused by nft", extra={"fields": {"netns": plan.netns}})
                status.errors[plan.netns] = "bridge rules refused by nft"
            for name in sorted(owned(self.settings.netns_prefix, NAME_KEY) - plans.keys()):
                await self._retire(name)
            for ns, vips in fresh:
                if vips:
                    self._announce(ns, vips)
            return status

    async def _announce_found(self, plans: dict[str, eip_plan.PairPlan]) -> None:
        """Announce the desired VIPs of the pairs already in place, before converging anything."""
        for name in sorted(owned(self.settings.netns_prefix, NAME_KEY) & plans.keys()):
            ns = self._namespace(name)
            try:
                await ns.read_public_mac()
            except FlatnetError:
                continue  # not whole: the converge below makes it and announces what it adds
            self._announce(ns, plans[name].answered)

    async def _switch(self, plans: dict[str, eip_plan.PairPlan]) -> None:
        """Staged VIPs that are to be answered now, first thing: when the host table and a pair's table are
        what this process last wrote for these very plans (a staged VIP renders as an answered one), their
        addresses are all that is missing, so they are added and announced before the pairs are verified
        (tens of netlink requests each, a while on a busy host). Anything else waits for the converge."""
        known = {name: self._namespaces.get(name) for name in plans}
        macs = {name: ns.private_mac for name, ns in known.items() if ns is not None and ns.private_mac}
        if len(macs) != len(plans) or not self._host_table.holds(host_body(list(plans.values()), macs)):
            return
        for name, plan in plans.items():
            ns = known[name]
            switch = plan.answered - self._mapping.get(name, {}).keys()
            if ns is None or not switch or not ns.nat.holds(namespace_body(plan)):
                continue
            try:
                added, _ = await ns.hold(plan.answered, add=True, remove=False)
            except FlatnetError:
                continue  # the converge makes the pair whole or reports it
            if added:
                log.info("staged VIPs switched", extra={"fields": {"netns": name, "vips": len(added)}})
                self._announce(ns, added)

    def _announce(self, ns: EipNamespace, vips: frozenset[ipaddress.IPv4Address]) -> None:
        try:
            sock = ns.announce_socket()
        except OSError as e:  # the VIPs work anyway; neighbours learn them when their cache expires
            log.warning("gratuitous ARP socket not opened", extra={"fields": {"netns": ns.name, "error": str(e)}})
            return
        self._announcer.announce(sock, ns.public_mac, vips)
        log.info("VIPs announced", extra={"fields": {"netns": ns.name, "vips": len(vips)}})

    async def silence(self, l2s: dict[str, L2Spec], l3s: dict[str, L3Spec], vms: dict[str, VmSpec]) -> None:
        """Stop answering for every VIP the desired state does not have answered here, at once: their addresses
        leave `pub` (one netlink dump per namespace), which ends ARP answers and new connections to them, and
        nothing else changes. The next `apply` removes the rest (maps, steering, connections, namespaces)."""
        async with self._lock:
            plans = eip_plan.build(l2s, l3s, vms, self.settings.netns_prefix)
            for name in sorted(owned(self.settings.netns_prefix, NAME_KEY)):
                plan = plans.get(name)
                _, gone = await self._namespace(name).hold(plan.answered if plan else frozenset(), add=False,
                                                           remove=True)
                if gone:
                    log.info("VIPs silenced", extra={"fields": {"netns": name, "vips": len(gone)}})

    async def _converge(self, plan: eip_plan.PairPlan, verify: bool) -> frozenset[ipaddress.IPv4Address]:
        """One pair: devices, NAT table, VIPs, neighbours; returns the VIPs that are new here."""
        ns = self._namespace(plan.netns)
        made = await ns.ensure(plan)
        await ns.nat.sync(namespace_body(plan), verify=verify or made)
        changes = await ns.sync_bindings(plan)
        mapping = {b.vip: b.private_ip for b in plan.bindings if not b.staged}
        before = self._mapping.get(plan.netns, {})
        moved = {str(v) for v, ip in before.items() if mapping.get(v) != ip}  # also VIPs `silence` took away
        forgotten = await ns.forget_connections(set(changes.stale) | moved)
        self._mapping[plan.netns] = mapping
        if changes.added_vips or changes.stale or forgotten:
            log.info("EIP pair converged", extra={"fields": {
                "netns": plan.netns, "eips": len(plan.bindings), "added": len(changes.added_vips),
                "removed_or_changed": len(changes.stale), "conntrack_deleted": forgotten}})
        return changes.added_vips

    async def _retire(self, name: str) -> None:
        ns = self._namespace(name)
        del self._namespaces[name]
        self._mapping.pop(name, None)
        try:
            await ns.retire()
        except FlatnetError as e:
            log.error("EIP namespace not removed", extra={"fields": {"netns": name, "error": str(e)}})
            return
        log.info("EIP namespace removed", extra={"fields": {"netns": name}})

    async def close(self) -> None:
        """Stop announcing and release netlink handles; the dataplane itself stays as it is."""
        await self._announcer.close()
        for ns in self._namespaces.values():
            ns.close()
        self._namespaces.clear()
        self._host.close()
