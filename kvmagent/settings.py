"""kvmagent parameters, declared once (`/etc/hoststack/kvmagent.toml`, env `HS_KVMAGENT_*`).

Each dataplane declares its own section (`[vm]`, `[storage]`, `[flatnet]`, `[metadata]`, `[eip]` in the TOML file;
a JSON object in `HS_KVMAGENT_VM` etc.), so no parameter is declared twice.
"""

import socket
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from agentkit.tls import TlsSettings
from flatnet.eip import EipSettings
from flatnet.metadata.settings import MetadataSettings
from flatnet.settings import FlatnetSettings
from kvmagent.storage.settings import StorageSettings
from kvmagent.vms.settings import VmSettings


class KvmAgentSettings(BaseModel):
    model_config = ConfigDict(hide_input_in_errors=True)  # a validation error does not echo a secret

    coordinator_url: str = Field(description="e.g. https://10.0.0.1:8740")
    host_uuid: str
    host_token: SecretStr = Field(min_length=8, description="this host's token at the coordinator (its agent "
                                  "endpoints only); renewed tokens are kept in state_dir")
    tls: TlsSettings = Field(TlsSettings(), description="[tls]: `ca` verifies the coordinator; without `cert` the "
                             "agent asks the coordinator for its certificate and renews it (kept in state_dir/tls)")
    api_token: SecretStr | None = Field(None, min_length=16, description="operators' read access to the agent "
                                        "API (/v1/state, /health, /metrics); unset: none")
    metrics_token: SecretStr | None = Field(None, min_length=16, description="scrapers' access to /metrics and "
                                            "/health; unset: none")
    host_name: str = Field(default_factory=socket.gethostname, description="how messages name this host")
    listen: str = Field("0.0.0.0", description="address of the agent API")  # noqa: S104 - operators reach it
    port: int = Field(8741, ge=1, le=65535, description="port of the agent API and console tunnel")
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

    @property
    def tls_dir(self) -> Path:
        """Where the agent keeps the certificate it asked the coordinator for."""
        return Path(self.state_dir) / "tls"
