"""Settings of the `cephagent` process: `/etc/hoststack/cephagent.toml` or `HS_CEPHAGENT_<KEY>` variables."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from agentkit.config import CommaList
from agentkit.tls import TlsSettings


class CephAgentSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # no error echoes the token

    listen: str = Field("0.0.0.0", description="address the HTTP API listens on")  # noqa: S104
    port: int = Field(8742, ge=1, le=65535, description="HTTP API port")
    tls: TlsSettings = Field(TlsSettings(), description="[tls]: the API's certificate (default "
                             "/etc/hoststack/pki/cephagent.pem, issued for this mon host's address)")
    token: SecretStr = Field(min_length=16, description="bearer token every request must carry")
    metrics_token: SecretStr | None = Field(None, min_length=16, description="scrapers' access to /metrics and "
                                            "/health, nothing else (the coordinator's `metrics_token`, laid out by "
                                            "deploys); unset: none")
    ceph_conf: str | None = Field("/etc/ceph/ceph.conf", description="ceph.conf to read; empty for none")
    keyring: str | None = Field(None, description="keyring file (default: the one ceph.conf names)")
    client_name: str = Field("client.admin", description="cephx user the agent connects as")
    mon_host: str | None = Field(None, description="override ceph.conf's mon host (librados mon_host syntax)")
    vm_client_name: str = Field(
        "client.hoststack-vm", description="cephx user whose key /v1/secret hands to KVM hosts: created, and "
        "its caps kept, as `profile rbd` on the HostStack pools only; never client.admin")
    timeout: int = Field(30, ge=1, description="seconds before a mon/osd operation counts as failed")
    tmp_dir: str = Field("/var/lib/hoststack/cephagent/tmp", description="where downloads and qcow2 "
                         "conversions are staged (needs room for the largest image's data)")
    tmp_reserve_percent: float = Field(10, ge=0, lt=100, description="share of tmp_dir's filesystem an import's "
                                       "temp files leave free (the mon, often on that disk, stops below 5% free)")
    file_url_roots: CommaList = Field([], description="directories file:// image URLs may read; empty: "
                                      "file:// is refused")
    import_concurrency: int = Field(2, ge=1, description="image imports running at once; others queue")
    long_operations: int = Field(4, ge=1, description="flattens, rollbacks, shrinks and deletes running at once "
                                 "(each holds a thread for minutes); others wait their turn, and quick calls "
                                 "(/health, reads, creates) have threads of their own")
    write_window: int = Field(16, ge=1, le=64, description="RBD writes (4 MiB) in flight per import")
    read_timeout: float = Field(300, gt=0, description="seconds in which an image source must send a MiB (or its "
                                "last byte) before the import fails: one trickling a byte now and then would "
                                "hold its import slot for ever")
    convert_timeout: float = Field(3600, gt=0, description="seconds a qcow2 to raw conversion may take")
    log_level: str = Field("INFO", description="log level")

    @field_validator("ceph_conf", "keyring", "mon_host", mode="before")
    @classmethod
    def _empty_is_none(cls, v: object) -> object:
        return None if v == "" else v

    @field_validator("vm_client_name")
    @classmethod
    def _not_admin(cls, v: str) -> str:
        """The VM user's key goes to every hypervisor: it must not be one that administers the cluster."""
        if not v.startswith("client.") or v == "client.admin":
            raise ValueError(f"{v!r}: a dedicated cephx user (client.<name>), never client.admin")
        return v

    @property
    def vm_client(self) -> str:
        return self.vm_client_name
