"""The host side of an L2 network: a Linux bridge with the physical (or VLAN) uplink enslaved.

`Bridges` is the netlink driver: one long-lived pyroute2 `AsyncIPRoute` handle (optionally inside a
network namespace, as in the test bed). Devices the agent creates carry the ifalias
`hoststack:l2:<uuid>`, which is how `prune` knows what it may delete: it never touches a bridge or
VLAN it did not create, and only un-enslaves a physical interface from one of its own bridges.

`BridgesComponent` is the pipeline's first component: the VMs, anti-spoofing, flat services and EIPs
plug into these bridges, so they wait until it has applied the view's revision (`kvmagent/agent.py`).
An L2 that cannot be built fails alone: the others are built, its failure is kept in `failed` (the
VMs on it report it) and the component is retried.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from agentkit.model import L2Spec
from kvmagent.errors import BridgeError
from kvmagent.view import HostView

log = logging.getLogger(__name__)
MARK = "hoststack:l2:"


class Bridges:
    """Creates, repairs and removes the bridges of the L2 networks this host serves."""

    def __init__(self, netns: str | None = None):
        self.netns = netns
        self._ipr: AsyncIPRoute | None = None
        self._lock = asyncio.Lock()

    async def _handle(self) -> AsyncIPRoute:
        if self._ipr is None:
            ipr = AsyncIPRoute(netns=self.netns) if self.netns else AsyncIPRoute()
            await ipr.setup_endpoint()
            self._ipr = ipr
        return self._ipr

    async def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    async def _links(self) -> dict[str, dict[str, Any]]:
        ipr = await self._handle()
        out = {}
        async for m in await ipr.link("dump"):
            out[m.get("ifname")] = {
                "index": m["index"],
                "master": m.get("master") or 0,
                "alias": m.get("ifalias") or "",
                "kind": m.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND"),
                "up": m.get("state") == "up" or bool(m["flags"] & 1),
            }
        return out

    async def ensure(self, l2: L2Spec) -> None:
        """Bridge up with its uplink enslaved; creates or repairs only what is missing."""
        async with self._lock:
            try:
                await self._ensure(l2)
            except NetlinkError as e:
                raise BridgeError(f"l2 {l2.name} ({l2.uuid}, {l2.bridge} on {l2.uplink}): {e}") from e

    async def _ensure(self, l2: L2Spec) -> None:
        ipr = await self._handle()
        links = await self._links()
        phys = links.get(l2.physical_interface)
        if phys is None:
            raise BridgeError(f"l2 {l2.name} ({l2.uuid}): physical interface {l2.physical_interface} not found")
        if l2.bridge not in links:
            await ipr.link("add", ifname=l2.bridge, kind="bridge", br_stp_state=0, br_forward_delay=0)
            log.info("created bridge %s for l2 %s", l2.bridge, l2.uuid)
        br = (await self._links())[l2.bridge]
        if br["alias"] != MARK + l2.uuid or not br["up"]:
            await ipr.link("set", index=br["index"], ifalias=MARK + l2.uuid, state="up")
        if not phys["up"]:
            await ipr.link("set", index=phys["index"], state="up")
        if l2.vlan is not None and l2.uplink not in links:
            try:
                await ipr.link("add", ifname=l2.uplink, kind="vlan", link=phys["index"], vlan_id=l2.vlan)
            except NetlinkError as e:
                if e.code == errno.EOPNOTSUPP:
                    raise BridgeError(f"l2 {l2.name} ({l2.uuid}): kernel cannot create VLAN devices "
                                      "(8021q missing)") from e
                raise
        up = (await self._links())[l2.uplink]
        want_alias = MARK + l2.uuid if l2.vlan is not None else up["alias"]
        if up["master"] != br["index"] or not up["up"] or up["alias"] != want_alias:
            await ipr.link("set", index=up["index"], master=br["index"], state="up", ifalias=want_alias)

    async def ensure_all(self, l2s: Iterable[L2Spec]) -> dict[str, BridgeError]:
        """Ensure every L2's bridge; returns the failures by L2 uuid (the others still get done)."""
        errors = {}
        for l2 in l2s:
            try:
                await self.ensure(l2)
            except BridgeError as e:
                log.error("%s", e)
                errors[l2.uuid] = e
        return errors

    async def prune(self, wanted: Iterable[str]) -> None:
        """Remove our bridges and VLAN devices of L2s not in `wanted` (uuids)."""
        async with self._lock:
            try:
                await self._remove_unwanted(set(wanted))
            except NetlinkError as e:
                raise BridgeError(f"removing bridges of other L2s: {e}") from e

    async def _remove_unwanted(self, wanted: set[str]) -> None:
        """Delete our bridges and VLANs of other L2s (deleting a bridge releases its ports)."""
        ipr = await self._handle()
        links = await self._links()
        ours = {name: ln for name, ln in links.items() if ln["alias"].startswith(MARK)}
        for name, ln in ours.items():
            if ln["alias"].removeprefix(MARK) in wanted:
                continue
            try:
                if ln["kind"] in ("bridge", "vlan"):
                    await ipr.link("del", index=ln["index"])
                    log.info("removed %s %s of l2 %s", ln["kind"], name, ln["alias"].removeprefix(MARK))
            except NetlinkError as e:
                if e.code != errno.ENODEV:
                    raise

    async def ports(self, bridge: str) -> list[str]:
        """Names of the devices enslaved to `bridge` (uplink and VM taps)."""
        links = await self._links()
        br = links.get(bridge)
        if br is None:
            return []
        return sorted(n for n, ln in links.items() if ln["master"] == br["index"])


class BridgesComponent:
    """Every L2 of the view gets its bridge, before anything plugs into it; others' bridges go."""

    name = "bridges"
    after: tuple[str, ...] = ()

    def __init__(self, bridges: Bridges):
        self.bridges = bridges
        self.failed: Mapping[str, BridgeError] = {}  # by L2 uuid, as of the last pass

    async def apply(self, view: HostView, *, resync: bool = False) -> None:
        self.failed = await self.bridges.ensure_all(view.l2s.values())
        await self.bridges.prune({*view.l2s, *view.held_of("l2")})  # a held L2's bridge stays as it is
        if self.failed:
            raise BridgeError("; ".join(str(e) for e in self.failed.values()))

    async def close(self) -> None:
        await self.bridges.close()
