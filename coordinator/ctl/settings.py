"""hs-ctl's parameters on a control node (`/etc/hoststack/ctl.toml`, env `HS_CTL_*`).

How to reach etcd is not repeated here: hs-ctl reads the coordinator's own settings (its `etcd…` keys),
logging in as etcd's root user where install turned etcd's auth on (a snapshot is root's alone), and how
etcd runs (name, data directory, peers) from etcd's configuration file, both as the install
wrote them. The defaults are the install's layout (`layout.py`). A NamedTuple, not a pydantic model as
the long-running processes have: a scheduled `hs-ctl backup` starts without importing pydantic or
dataclasses (`agentkit.configfile`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from agentkit.configfile import ConfigError, Layers, OutOfRange, as_text, build, gather, typed
from coordinator.ctl.errors import ServiceFailed
from coordinator.ctl.layout import BACKUP_DIR, COORDINATOR_CONFIG, ETCD_CONFIG, ETCD_ROOT_CONFIG
from coordinator.etcd.endpoints import EtcdConfig

SCHEDULE_KEYS = ("backup_dir", "backup_copy_to")  # what the backup timer's unit is written after (schedule.Job)


class CtlSettings(NamedTuple):
    """The settings, each with what it is for (`load` checks them)."""

    backup_dir: Path = BACKUP_DIR  # where backups are written and looked for
    backup_copy_to: Path | None = None  # a directory on another filesystem each backup is copied to, or none
    coordinator_config: Path = COORDINATOR_CONFIG  # the coordinator's settings: how to reach etcd (its
    # HS_COORDINATOR_* variables apply as well)
    etcd_config: Path = ETCD_CONFIG  # etcd's configuration file (name, data dir, peers)
    etcd_root: Path = ETCD_ROOT_CONFIG  # etcd's root user and password (`etcd_user`, `etcd_password`), if any
    etcdctl: str = "etcdctl"  # takes, checks and unpacks snapshots
    etcd_binary: str = "etcd"  # for sealing a restore's data (its timeline written before it is served)
    backup_timeout: float = 3600  # seconds a backup may take in all
    ready_timeout: float = 60  # seconds to wait for etcd (and the coordinator) after a (re)start
    log_level: str = "WARNING"

    def check(self) -> None:
        for name in ("backup_timeout", "ready_timeout"):
            if not getattr(self, name) > 0:
                raise OutOfRange(name, "must be greater than 0")
        for name in ("backup_dir", "backup_copy_to", "coordinator_config", "etcd_config", "etcd_root"):
            path = getattr(self, name)
            if path is not None and not path.is_absolute():  # else each run's working directory picks another one
                raise OutOfRange(name, "must be an absolute path (scheduled backups run in /)")

    @classmethod
    def load(cls, path: str | Path | None = None) -> CtlSettings:
        """From `/etc/hoststack/ctl.toml` (or `path`) and `HS_CTL_*`; ConfigError names what is wrong."""
        return build(cls, "ctl", path)

    @classmethod
    def of(cls, found: Mapping[str, tuple[object, str]]) -> CtlSettings:
        """From values read elsewhere (a node's files, by install's probe): key -> (its value, where it was set),
        the others default; checked as `load` checks them."""
        layers = Layers()
        for key, (value, source) in found.items():
            layers.set(key, value, source)
        return typed(cls, layers)

    def etcd(self) -> EtcdConfig:
        """etcd as the node's coordinator reaches it: endpoints, TLS, auth from its settings file and
        `HS_COORDINATOR_*` (not its whole settings model, so that a backup starts fast), as etcd's root
        user where `etcd_root` names one."""
        try:
            config = EtcdConfig.from_file(self.coordinator_config)
            root = gather(("etcd_user", "etcd_password"), "ctl", self.etcd_root, env={})
            if root.values:
                config = config.replace(user=root.get("etcd_user", as_text),
                                        password=root.get("etcd_password", as_text, hidden=True))
            return config
        except (ConfigError, ValueError) as e:
            raise ServiceFailed(f"the coordinator's etcd settings: {e}") from None
