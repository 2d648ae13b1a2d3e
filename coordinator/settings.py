"""Coordinator parameters, declared once (file `/etc/hoststack/coordinator.toml`, env `HS_COORDINATOR_*`)."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path
from typing import Annotated

from cryptography.fernet import Fernet
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Secret,
    SecretStr,
    StringConstraints,
    field_validator,
    model_validator,
)

from agentkit.config import CommaList
from agentkit.tls import TlsSettings

TOKEN = r"^[\x21-\x7e]+$"  # visible ASCII (agentkit.bearer reads nothing else)
# a bearer token operators give: checked as text, then kept out of reprs and dumps as the other secrets (SecretStr)
Token = Secret[Annotated[str, StringConstraints(min_length=16, pattern=TOKEN)]]


class CoordinatorSettings(BaseModel):
    model_config = ConfigDict(hide_input_in_errors=True)  # a validation error does not echo a secret

    etcd: str | list[str] = Field("127.0.0.1:2379", description="etcd client endpoints (host:port, http://host:port "
                                  "or https://host:port): a TOML list, or one comma-separated string")
    etcd_discovery_srv: str | None = Field(None, description="DNS domain whose SRV records (_etcd-client-ssl._tcp and "
                                           "_etcd-client._tcp) name the etcd members; instead of `etcd`")
    etcd_discovery_srv_name: str = Field("", description="service name suffix of those records "
                                         "(_etcd-client-ssl-<name>._tcp), as etcd's --discovery-srv-name")
    etcd_ca: Path | None = Field(None, description="CA certificate (PEM) of the etcd members; setting it (or a "
                                 "client certificate) makes endpoints without a scheme use TLS")
    etcd_cert: Path | None = Field(None, description="client certificate (PEM) presented to etcd")
    etcd_key: Path | None = Field(None, description="key (PEM) of `etcd_cert`")
    etcd_user: str | None = Field(None, description="etcd user (etcd auth); needs `etcd_password`")
    etcd_password: SecretStr | None = Field(None, description="password of `etcd_user`")
    etcd_timeout: float = Field(10.0, gt=0, description="seconds one etcd request may take in all, failing over "
                                "between members included; then the API answers 503")
    etcd_attempt_timeout: float = Field(1.5, gt=0, description="seconds one member may take to answer before "
                                        "the request moves on to another member (a hung member costs this once)")
    listen: str = Field("127.0.0.1", description="address the API listens on")
    port: int = Field(8740, ge=1, le=65535, description="API port")
    tls: TlsSettings = Field(TlsSettings(), description="[tls]: the API's certificate (default "
                             "/etc/hoststack/pki/coordinator.pem) and the CA that verifies the agents it calls")
    ca_key: Path | None = Field(None, description="key of the CA (tls.ca) that host certificates are issued with; "
                                "default /etc/hoststack/pki/ca-key.pem when it exists, else none are issued")
    host_cert_days: float = Field(90, gt=0, description="lifetime of the certificates issued to hosts; agents renew "
                                  "theirs when a third of it is left")
    admin_token: Token = Field(description="bearer token of operators and the CLI: may do everything (visible "
                               "ASCII: sent in a header)")
    reader_token: Token | None = Field(None, description="bearer token that may read (GET) what the admin token "
                                       "may, and change nothing")
    metrics_token: Token | None = Field(None, description="bearer token of metrics scrapers: the metrics endpoints "
                                        "only")
    host_token_lifetime: float = Field(0, ge=0, description="seconds an agent token is valid after it was issued "
                                       "(agents renew theirs when a third is left); 0: until rotated")
    heartbeat_timeout: float = Field(10.0, gt=0, description="seconds without heartbeat before Disconnected")
    heartbeat_interval: float = Field(2.0, gt=0, description="heartbeat period asked of agents")
    leader_ttl: int = Field(5, ge=2, description="lease TTL of the elected replica, seconds")
    replica_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}")
    secret_key: SecretStr | None = Field(None, description="Fernet key(s) that encrypt stored credentials (SSH "
                                         "passwords, agent tokens the coordinator presents); comma-separated to "
                                         "rotate. Its own secret: storing a credential without it is refused")
    cephagent_port: int = Field(8742, ge=1, le=65535, description="port of the cephagent on every Ceph mon host")
    kvmagent_port: int = Field(8741, ge=1, le=65535, description="port of the kvmagent API (and console tunnel) "
                               "on every KVM host")
    live_migration_uri: str = Field("qemu+tls://{address}/system", max_length=256, pattern=r"\{address\}",
                                    description="how a source host's libvirtd reaches the target's in a live "
                                    "migration ({address}: the target host's address)")
    console_proxy_port: int = Field(8743, ge=1, le=65535, description="port browsers reach console proxies on")
    console_token_ttl: float = Field(60.0, ge=5, le=3600, description="seconds a console URL may be used to "
                                     "connect (an open console stays open)")
    cephagent_token: SecretStr | None = Field(None, min_length=16, description="bearer token the coordinator "
                                              "presents to cephagents (their `token` setting); Ceph storage needs it")
    imagestore_port: int = Field(8744, ge=1, le=65535, description="port of the imagestore agent on image store hosts")
    image_ticket_ttl: int = Field(3600, ge=60, le=7 * 24 * 3600, description="seconds a read ticket for an image "
                                  "(what a host presents to an image store) is good for")
    auto_deploy: bool = Field(True, description="the elected replica deploys the agent of a host registered with "
                              "SSH credentials, and redeploys one that reports another version than the coordinator's")
    auto_upgrade_with_password: bool = Field(False, description="automatic upgrades (a host reporting another agent "
                                             "version) may log in with a stored password; off: with a key only, so "
                                             "a host taken over cannot harvest the password")
    coordinator_url_for_agents: str | None = Field(None, description="coordinator URL written into agent configs "
                                                   "by automatic deploys; unset: no automatic deploys")
    deployer_config: str | None = Field(None, description="TOML of the deployer the coordinator runs "
                                        "(default /etc/hoststack/deployer.toml)")
    deploy_backoff: float = Field(60.0, gt=0, description="seconds before a failed automatic deploy of the same "
                                  "version is tried again; doubles per failure, up to an hour")
    observed_retention: float = Field(600.0, gt=0, description="seconds the observed records of a deleted VM "
                                      "are kept after their last change")
    file_roots: CommaList = Field(["/var/lib/hoststack"], description="directories an absolute disk, ISO or kernel "
                                  "path given to the API must lie in (relative paths lie under each host's "
                                  "volume_dir); the agents confine them again to their own file_roots")
    stream_buffer: int = Field(1 << 20, ge=64 << 10, description="bytes of changes a host stream may fall "
                               "behind before it is cut off (its agent reconnects and resumes from its revision)")
    stream_history: int = Field(100_000, ge=1_000, description="changed items this replica remembers, so an "
                                "agent resuming within them gets only what changed; an older one gets a snapshot")
    compact_interval: float = Field(300.0, ge=0, description="seconds between etcd compactions by the elected "
                                    "replica, each to the revision seen one interval before (so 1-2 intervals of "
                                    "history stay for host streams to resume); 0: leave it to etcd's own "
                                    "--auto-compaction-retention")
    log_level: str = "INFO"
    fault_leader_loop_after: float | None = Field(None, ge=0, description="testing only: the elected replica "
                                                  "runs a loop that raises a deliberate bug this many seconds "
                                                  "after its election (tests that a bug crashes the replica)")

    testing_migration: bool = Field(False, description="testing only: this replica knows one more schema "
                                    "migration than the release (the rolling-upgrade test's 'new' replica)")

    @field_validator("etcd")
    @classmethod
    def _endpoints(cls, v: str | list[str]) -> list[str]:
        """A list either way (each endpoint is checked where the driver's configuration is built)."""
        return [e.strip() for e in (v.split(",") if isinstance(v, str) else v) if e.strip()]

    @model_validator(mode="after")
    def _one_way_to_etcd(self) -> CoordinatorSettings:
        if self.etcd_discovery_srv and "etcd" in self.model_fields_set:
            raise ValueError("set either etcd or etcd_discovery_srv, not both")
        return self

    @field_validator("file_roots")
    @classmethod
    def _absolute(cls, v: list[str]) -> list[str]:
        for root in v:
            if not root.startswith("/"):
                raise ValueError(f"file_roots: {root!r} is not an absolute directory")
        return v

    @field_validator("secret_key")
    @classmethod
    def _fernet_keys(cls, v: SecretStr | None) -> SecretStr | None:
        """Fail at start-up, not at the first stored credential."""
        if v is not None:
            check_keys(v.get_secret_value())
        return v


def fernet_keys(secret_key: str) -> list[str]:
    """The keys of the `secret_key` setting: comma-separated, the first encrypts, every one decrypts."""
    return [k.strip() for k in secret_key.split(",") if k.strip()]


def check_keys(secret_key: str) -> None:
    """Raise ValueError unless `secret_key` is one or more comma-separated Fernet keys."""
    parts = fernet_keys(secret_key)
    if not parts:
        raise ValueError("secret_key is empty")
    for i, k in enumerate(parts):
        try:
            Fernet(k)
        except ValueError:
            raise ValueError(f"secret_key item {i} is not a Fernet key (32 url-safe base64-encoded bytes; "
                             "make one with `python3 -c 'from cryptography.fernet import Fernet; "
                             "print(Fernet.generate_key().decode())'`)") from None
