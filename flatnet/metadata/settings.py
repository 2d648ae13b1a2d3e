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
