"""What deploying one agent means, and where its pieces live on a host.

An `AgentSpec` is data: the Debian packages the agent needs, the Python distributions it imports
(version specifiers come from pyproject.toml, so they are declared once), which of its settings the
deploy writes (named as in the agent's settings model) and its systemd ordering.
The host layout is derived from the name, so every deployer step and the probe agree on paths.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentkit.identity import TOKEN_FILE
from deployer.service import Directives, Service, home, sandbox


@dataclass(frozen=True)
class AgentSpec:
    name: str
    description: str
    packages: tuple[str, ...]
    requirements: tuple[str, ...]
    # (setting, one of coordinator_url|host_uuid|host_token|api_token|metrics_token)
    config_keys: tuple[tuple[str, str], ...]
    after: tuple[str, ...] = ("network-online.target",)
    own_certificate: bool = False  # serves TLS and never dials in: the deploy brings its certificate
    sandbox: Directives = sandbox("full")
    writable: tuple[str, ...] = ()  # what a strict sandbox leaves writable: the agent's state
    # Its venv also sees the host's Python packages: only for modules that Debian alone ships to match the host
    # (rados, rbd). Else the venv holds its requirements and nothing else: a host's older copy of one cannot
    # stand in for a requirement the spec forgot, and the interpreter starts without the host's .pth files.
    system_site_packages: bool = False
    renews_token: bool = False  # dials in and renews its host token, keeping the new one in its state directory

    @property
    def token_file(self) -> str | None:
        """Where the agent keeps the token it renewed (agentkit.identity, under its default `state_dir`)."""
        return f"/var/lib/hoststack/{self.name}/{TOKEN_FILE}" if self.renews_token else None

    @property
    def service(self) -> Service:
        """How the agent runs: its unit or supervisor loop (the command is the venv's entry point)."""
        return Service(self.name, self.description, (self.command,), self.after, sandbox=self.sandbox,
                       writable=self.writable)

    @property
    def token_key(self) -> str:
        """The setting that holds the host token."""
        return next(key for key, source in self.config_keys if source == "host_token")

    @property
    def agent_api(self) -> bool:
        """The agent serves an API of its own tokens (an `api_token`, or the scrapers' `metrics_token` alone),
        which the deploy lays out (model.AgentApiTokens)."""
        return any(source in ("api_token", "metrics_token") for _, source in self.config_keys)

    @property
    def config_path(self) -> str:
        return f"/etc/hoststack/{self.name}.toml"

    @property
    def base(self) -> str:
        """Holds venv-<digest>/ per installed wheelhouse, `current` -> the running one, supervise.sh."""
        return home(self.name)

    @property
    def command(self) -> str:
        return f"{self.base}/current/bin/{self.name}"

    @property
    def stamp(self) -> str:
        """JSON of the digests of what is installed: wheels, config, service."""
        return f"/var/lib/hoststack/deploy/{self.name}.json"

    @property
    def unit(self) -> str:
        return self.service.unit

    @property
    def unit_path(self) -> str:
        return self.service.unit_path

    @property
    def supervisor(self) -> str:
        return self.service.supervisor

    @property
    def pidfile(self) -> str:
        return self.service.pidfile

    @property
    def log(self) -> str:
        """The agent's stderr on hosts without systemd (journald has it otherwise)."""
        return self.service.log

    def upload_path(self, digest: str) -> str:
        """Where the wheelhouse lands before `install` unpacks it (a directory every host has)."""
        return f"/var/tmp/hoststack-{self.name}-{digest[:16]}.tar"
