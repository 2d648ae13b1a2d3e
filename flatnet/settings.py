"""Settings of the per-host flat network service, declared once; kvmagent nests them in its own config."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from agentkit.addr import METADATA_ADDRESS

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
