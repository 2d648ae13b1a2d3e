"""kvmagent parameters, declared once (`/etc/hoststack/kvmagent.toml`, env `HS_KVMAGENT_*`)."""

from typing import Literal

from pydantic import BaseModel, Field


class KvmAgentSettings(BaseModel):
    coordinator_url: str = Field(description="e.g. http://10.0.0.1:8740")
    host_uuid: str
    host_token: str = Field(min_length=8, description="this host's token; also guards the agent's own API")
    listen: str = Field("0.0.0.0", description="address of the agent API")  # noqa: S104 - operators reach it
    port: int = Field(8741, ge=0, le=65535)
    state_dir: str = Field("/var/lib/hoststack/kvmagent", description="journal and local state")
    libvirt_uri: str = "qemu:///system"
    domain_type: Literal["auto", "kvm", "qemu"] = Field("auto", description="auto: kvm where usable, else qemu")
    drift_policy: Literal["restart", "adopt"] = Field(
        "restart", description="out-of-band VM state changes: enforce desired state, or adopt the user's change")
    stop_timeout: float = Field(30, gt=0, description="seconds of graceful shutdown before a forced stop")
    resync_interval: float = Field(60, gt=1, description="periodic full reconcile, ±20% jitter")
    netns_prefix: str = Field("hs", max_length=6, description="prefix of agent-owned namespaces")
    volume_dir: str = Field("/var/lib/hoststack/volumes", description="where relative qcow2 paths live")
    address: str | None = Field(None, description="host address reported to the coordinator (consoles)")
    flatnet: bool = Field(True, description="run DHCP/DNS/metadata/EIP services in this process")
    log_level: str = "INFO"
