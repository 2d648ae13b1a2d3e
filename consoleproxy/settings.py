"""Settings of the `consoleproxy` process: `/etc/hoststack/consoleproxy.toml` or `HS_CONSOLEPROXY_<KEY>`."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from agentkit.tls import TlsSettings


class ConsoleProxySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # no error echoes the token

    listen: str = Field("0.0.0.0", description="address browsers connect to")  # noqa: S104
    port: int = Field(8743, ge=1, le=65535, description="HTTP/websocket port browsers connect to")
    tls: TlsSettings = Field(TlsSettings(), description="[tls]: `ca` verifies the coordinator and the hosts' "
                             "tunnels; without `cert` the proxy asks the coordinator for its certificate and renews it "
                             "(browsers must trust the CA then; give a certificate they trust as `cert`/`key`)")
    state_dir: Path = Field(Path("/var/lib/hoststack/consoleproxy"), description="the certificate the proxy asked "
                            "for and its renewed token")
    coordinator_url: str | None = Field(None, description="coordinator API the proxy resolves tokens at")
    uuid: str | None = Field(None, description="this proxy's uuid at the coordinator (its host record)")
    token: SecretStr | None = Field(None, description="the proxy's own credential at the coordinator")
    metrics_token: SecretStr | None = Field(None, min_length=16, description="scrapers' access to /metrics (the "
                                            "coordinator's `metrics_token`, laid out by deploys); unset: none")
    novnc_dir: str = Field("/usr/share/novnc", description="Debian's novnc package (the VNC page's client)")
    termjs_dir: str = Field("/usr/share/javascript/term.js", description="Debian's libjs-term.js (serial page)")
    spice_html5_dir: str = Field("/usr/share/spice-html5", description="Debian's spice-html5 (SPICE page)")
    idle_timeout: float = Field(900, ge=0, description="seconds without a byte either way before a console "
                                "connection is closed; 0: never")
    connect_timeout: float = Field(10, gt=0, description="seconds for each step of opening a console: "
                                   "resolving its token, opening the host's tunnel")
    vm_sessions: int = Field(64, ge=1, description="console sessions one VM may have open at once through this "
                             "proxy, whatever their tokens and kinds (each is a connection to its console at its host)")
    token_failures: int = Field(20, ge=1, description="refused console tokens one client address (an IPv6 "
                                "one's /64) may send per `token_failure_window`; past them it is refused 429 "
                                "without asking the coordinator")
    token_failure_window: float = Field(60, gt=0, description="seconds over which an address's `token_failures` "
                                        "come back, evenly")
    heartbeat: float = Field(30, gt=0, description="websocket ping interval that finds dead browsers/tunnels")
    max_message: int = Field(1 << 20, ge=1 << 16, description="largest websocket message accepted (bytes)")
    log_level: str = Field("INFO", description="log level")
