"""Where a control node keeps what: the one place install, hs-ctl and the docs take paths from.

Certificates live in `PKI`, named as agentkit.pkifiles' `Layout` names every process's files (ca.pem, the CA's
ca-key.pem, <role>.pem and <role>-key.pem; coordinator/ctl/pki.py has the roles): the CA install makes
there, or an operator's own files of those names (`hs-ctl install --tls-dir DIR`).
"""

from __future__ import annotations

from pathlib import Path

from agentkit import pkifiles

ETC = Path("/etc/hoststack")
ETCD_CONFIG = ETC / "etcd.json"  # etcd's --config-file (YAML; JSON is YAML)
COORDINATOR_CONFIG = ETC / "coordinator.toml"
ETCD_ROOT_CONFIG = ETC / "etcd-root.toml"  # etcd's root user (root's file only): hs-ctl's backups need it
CONSOLEPROXY_CONFIG = ETC / "consoleproxy.toml"  # the node's console proxy: its identity at the coordinator
CTL_CONFIG = ETC / "ctl.toml"
DEPLOYER_CONFIG = ETC / "deployer.toml"  # the deployer the coordinator runs for automatic agent deploys
PKI = pkifiles.DEFAULT_DIR
PKI_FILES = pkifiles.Layout(PKI)

ETCD_DIR = Path("/var/lib/hoststack/etcd")  # the etcd user's; the data directory and restores live inside
ETCD_DATA = ETCD_DIR / "data"
ETCD_USER = "etcd"  # Debian's etcd-server package creates it
COORDINATOR_STATE = Path("/var/lib/hoststack/coordinator")  # known_hosts of the deployer the coordinator runs
DEPLOYER_CACHE = Path("/var/cache/hoststack/deployer")
BACKUP_DIR = Path("/var/backups/hoststack")
STAMP = Path("/var/lib/hoststack/deploy/controlnode.json")  # digests of what install put on the node
LOCK = STAMP.with_name("controlnode.lock")  # who installs, upgrades or restores the node now (deployer.remote.node)
LEASE_TTL = 600.0  # seconds an install's lease lasts past its last step (renewed by each, and while one runs)
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

