"""Settings of the per-host flat network service, declared once; kvmagent nests them in its own config."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from agentkit.addr import METADATA_ADDRESS
from agentkit.model import L3Spec

# Names every flatnet dataplane declares: a namespace name prefix (a short key follows) and an nft table.
NetnsPrefix = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,40}$")]
NftTableName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,30}$")]


class FlatnetSettings(BaseModel):
    """Names and timers of the per-host DHCP/DNS service."""

    netns_prefix: NetnsPrefix = Field(
        default="hsf",
        description="namespace name prefix; the L3's short id follows. Namespaces matching it are ours (removed "
                    "when not desired), so it must be unique per service on one kernel",
    )
    nft_table: NftTableName = Field(default="hsflatnet", description="our nftables bridge-family table on the host")
    lease_time: int = Field(default=86400, ge=60, description="DHCP lease time in seconds (reservations are static)")
    dns_timeout: float = Field(default=2.0, gt=0, le=30, description="budget for forwarding one DNS query upstream")
    steer_metadata: bool = Field(default=True,
                                 description=f"re-address {METADATA_ADDRESS} frames of served VMs to their namespace")
    # per-VM fairness (docs/flatnet.md, "Limits"): what one guest may take of the services its host shares
    guest_pps: int = Field(default=1024, ge=0,
                           description="packets/s one VM interface may send into the flat namespaces (AWS IMDS's "
                                       "figure); the kernel drops the excess. 0: no limit")
    dhcp_mac_rate: float = Field(default=10, ge=0,
                                 description="DISCOVER/REQUEST/INFORM answered per second per reserved MAC (burst "
                                             "twice that). 0: no limit")
    dhcp_notice_rate: float = Field(default=1, ge=0,
                                    description="RELEASE/DECLINE heeded per second per reserved MAC (burst 5x). "
                                                "0: no limit")
    lease_debounce: float = Field(default=1.0, gt=0, le=60,
                                  description="seconds a NIC's lease change waits before it is reported; the "
                                              "window doubles while the lease keeps changing")
    lease_debounce_max: float = Field(default=60.0, gt=0, description="longest lease-report window of a NIC")
    dns_queries_per_second: float = Field(default=256, ge=0,
                                          description="DNS queries per second per source address, burst twice "
                                                      "that (UDP over it is dropped unparsed, TCP waits); a query "
                                                      "costs the agent ~70 µs, so one guest stays under 2 % of a "
                                                      "core. 0: no limit")
    dns_forwards_per_source: int = Field(default=16, ge=1,
                                         description="forwarded queries one source address may have in flight")
    dns_forwards: int = Field(default=512, ge=1, description="forwarded queries in flight per L3")
    dns_tcp_per_source: int = Field(default=8, ge=1,
                                    description="DNS TCP connections per source address; a new one closes its "
                                                "idlest")
    dns_tcp_connections: int | None = Field(
        default=None, ge=1,
        description="DNS TCP connections of all guests (default: an eighth of the descriptor limit beyond a "
                    "reserve)")
    dns_forwarding: Literal["gateway", "always", "never"] = Field(
        default="gateway",
        description="which L3s get names outside their zone resolved: those with a gateway (an L3 without one "
                    "is isolated, and forwarding would be its way out), all, or none; the others get REFUSED")

    def may_forward(self, l3: L3Spec) -> bool:
        """Whether the DNS server of `l3` forwards questions outside its zone (`dns_forwarding`)."""
        return self.dns_forwarding == "always" or (self.dns_forwarding == "gateway" and l3.gateway is not None)
