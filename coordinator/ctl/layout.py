"""Where a control node keeps what: the one place install, hs-ctl and the docs take paths from.

Certificates plug in here (issue 14): `Pki` names the file each role needs. `hs-ctl install --tls-dir DIR`
copies an operator's files of those names into `PKI`, and etcd's and the coordinator's settings are
rendered to use them; without it every hop on the node is plain HTTP on loopback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ETC = Path("/etc/hoststack")
ETCD_CONFIG = ETC / "etcd.json"  # etcd's --config-file (YAML; JSON is YAML)
COORDINATOR_CONFIG = ETC / "coordinator.toml"
CONSOLEPROXY_CONFIG = ETC / "consoleproxy.toml"  # the node's console proxy: its identity at the coordinator
CTL_CONFIG = ETC / "ctl.toml"
DEPLOYER_CONFIG = ETC / "deployer.toml"  # the deployer the coordinator runs for automatic agent deploys
PKI = ETC / "pki"

ETCD_DIR = Path("/var/lib/hoststack/etcd")  # the etcd user's; the data directory and restores live inside
ETCD_DATA = ETCD_DIR / "data"
ETCD_USER = "etcd"  # Debian's etcd-server package creates it
COORDINATOR_STATE = Path("/var/lib/hoststack/coordinator")  # known_hosts of the deployer the coordinator runs
DEPLOYER_CACHE = Path("/var/cache/hoststack/deployer")
BACKUP_DIR = Path("/var/backups/hoststack")
STAMP = Path("/var/lib/hoststack/deploy/controlnode.json")  # digests of what install put on the node
VENV_BASE = Path("/opt/hoststack/coordinator")  # venv-<digest>/ per release, `current` -> the running one
HS_CTL = VENV_BASE / "current" / "bin" / "hs-ctl"
SOURCE = VENV_BASE / "source"  # the release's wheel build input: the node's deployer builds agent wheels from it
CRON_FILE = Path("/etc/cron.d/hoststack-backup")

BACKUP_SCHEDULE = "30 0,12 * * *"  # cron syntax, as ZStack 1.2's installer set up `dump_mysql`
BACKUP_SCHEDULE_KEEP = 14  # backups the schedule keeps
API_PORT = 8740
CONSOLE_PORT = 8743  # the console proxy's, as its settings default
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380


@dataclass(frozen=True)
class Pki:
    """The certificate files of a node, by role (PEM; keys mode 0600)."""

    dir: Path = PKI

    @property
    def ca(self) -> Path:
        """The CA every party trusts."""
        return self.dir / "ca.crt"

    def pair(self, role: str) -> tuple[Path, Path]:
        """(certificate, key) of `role`: etcd-server, etcd-peer, etcd-client (the coordinator and hs-ctl to
        etcd), coordinator (its API)."""
        return self.dir / f"{role}.crt", self.dir / f"{role}.key"

    ROLES = ("etcd-server", "etcd-peer", "etcd-client")
