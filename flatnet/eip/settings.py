"""Settings of the EIP dataplane, declared once; kvmagent nests them in its config (`[eip]`)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from flatnet.settings import NetnsPrefix, NftTableName


class EipSettings(BaseModel):
    """Names and announcement timers of the EIP dataplane."""

    netns_prefix: NetnsPrefix = Field(
        default="hse",
        description="EIP namespace name prefix; 8 hex chars of the (public L3, private L3) pair follow. "
                    "Namespaces matching it are ours and removed when not desired: unique per kernel",
    )
    nft_table: NftTableName = Field(
        default="hseip", description="our nftables table: `bridge` family on the host, `ip` in EIP namespaces")
    garp_count: int = Field(default=3, ge=0, le=10, description="gratuitous ARPs sent for a VIP that arrives here")
    garp_interval: float = Field(default=1.0, gt=0, le=10, description="seconds between those gratuitous ARPs")
