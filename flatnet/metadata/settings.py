"""Settings of the metadata server, declared once; the per-host composition nests them in its own config."""

from __future__ import annotations

from pydantic import BaseModel, Field


class MetadataSettings(BaseModel):
    """What the metadata server says about its place in the cloud, and how it listens."""

    port: int = Field(default=80, ge=1, le=65535, description="TCP port inside every L3 namespace")
    hop_limit: int = Field(
        default=1, ge=1, le=255,
        description="IP TTL of every reply: 1 keeps answers from crossing a router (the IMDSv2 hop limit)",
    )
    availability_zone: str = Field(default="hoststack-1a", description="placement/availability-zone")
    region: str = Field(default="hoststack-1", description="placement/region and the identity document's region")
    account_id: str = Field(default="000000000000", description="accountId of the identity document")
    token_max_ttl: int = Field(default=21600, ge=1, description="longest IMDSv2 token lifetime a VM may ask for")
    requests_per_second: float = Field(
        default=1024, ge=0,
        description="requests served per second to one source address of an L3 (AWS IMDS's 1,024 packets/s per "
                    "interface); beyond it the source is not read from until it has a token again. 0: no limit",
    )
    connections_per_source: int = Field(
        default=64, ge=1, description="connections one source address may hold; a new one closes its idlest",
    )
    max_connections: int | None = Field(
        default=None, ge=1,
        description="connections of all guests; a new one closes the idlest of the source holding the most. "
                    "Default: half of the process's descriptor limit beyond a reserve of 256",
    )
    pending_output: int = Field(
        default=65536, ge=1024,
        description="bytes of replies a connection may leave unread before its next requests wait",
    )
