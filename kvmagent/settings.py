"""kvmagent parameters, declared once (`/etc/hoststack/kvmagent.toml`, env `HS_KVMAGENT_*`).

Each dataplane declares its own section (`[vm]`, `[storage]`, `[flatnet]`, `[metadata]`, `[eip]` in the TOML file;
a JSON object in `HS_KVMAGENT_VM` etc.), so no parameter is declared twice.
"""

import socket

from pydantic import BaseModel, Field

from flatnet.eip import EipSettings
from flatnet.metadata.settings import MetadataSettings
from flatnet.settings import FlatnetSettings
from kvmagent.storage.settings import StorageSettings
from kvmagent.vms.settings import VmSettings


class KvmAgentSettings(BaseModel):
    coordinator_url: str = Field(description="e.g. http://10.0.0.1:8740")
    host_uuid: str
    host_token: str = Field(min_length=8, description="this host's token; also guards the agent's own API")
    host_name: str = Field(default_factory=socket.gethostname, description="how messages name this host")
    listen: str = Field("0.0.0.0", description="address of the agent API")  # noqa: S104 - operators reach it
    port: int = Field(8741, ge=0, le=65535)
    state_dir: str = Field("/var/lib/hoststack/kvmagent", description="journal and local state")
    libvirt_uri: str = "qemu:///system"
    resync_interval: float = Field(60, gt=1, description="periodic full reconcile, ±20% jitter")
    network_services: bool = Field(True, description="run DHCP/DNS/metadata/EIP in this process")
    log_level: str = "INFO"
    vm: VmSettings = VmSettings()
    storage: StorageSettings = StorageSettings()
    flatnet: FlatnetSettings = FlatnetSettings()
    metadata: MetadataSettings = MetadataSettings()
    eip: EipSettings = EipSettings()
