"""hs-ctl's parameters on a control node (`/etc/hoststack/ctl.toml`, env `HS_CTL_*`).

How to reach etcd is not repeated here: hs-ctl reads the coordinator's own settings (its `etcd…` keys),
and how etcd runs (name, data directory, peers) from etcd's configuration file, both as the install
wrote them. The defaults are the install's layout (`layout.py`).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from coordinator.ctl.layout import BACKUP_DIR, COORDINATOR_CONFIG, ETCD_CONFIG


class CtlSettings(BaseModel):
    backup_dir: Path = Field(BACKUP_DIR, description="where backups are written and looked for")
    coordinator_config: Path = Field(COORDINATOR_CONFIG, description="the coordinator's settings: how to "
                                     "reach etcd (its HS_COORDINATOR_* variables apply as well)")
    etcd_config: Path = Field(ETCD_CONFIG, description="etcd's configuration file (name, data dir, peers)")
    etcdctl: str = Field("etcdctl", description="etcdctl, for checking and unpacking snapshots")
    backup_timeout: float = Field(3600, gt=0, description="seconds a backup may take in all")
    ready_timeout: float = Field(60, gt=0, description="seconds to wait for etcd (and the coordinator) after "
                                 "a (re)start")
    log_level: str = "WARNING"
