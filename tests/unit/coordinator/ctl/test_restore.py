"""The restore's seal as a command (not run: no subprocess here)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from coordinator.ctl import restore
from coordinator.ctl.settings import CtlSettings
from coordinator.etcd import timeline


def test_the_seal_logs_in_as_root_with_the_password_in_the_environment_only(tmp_path: Path):
    coordinator, root = tmp_path / "coordinator.toml", tmp_path / "etcd-root.toml"
    coordinator.write_text('etcd = "https://127.0.0.1:2379"\netcd_user = "hoststack"\netcd_password = "c0ord"\n')
    root.write_text('etcd_user = "root"\netcd_password = "r00t-s3cret"\n')
    value = timeline.new("/b/x.db", dt.datetime(2026, 12, 5, tzinfo=dt.UTC))
    argv, env = restore.seal_command(CtlSettings(coordinator_config=coordinator, etcd_root=root),
                                     "unix:///tmp/hs-restore-x/client:0", value)
    assert argv[:3] == ["etcdctl", "--endpoints=unix:///tmp/hs-restore-x/client:0", "--command-timeout=5s"]
    assert argv[3:5] == ["put", timeline.KEY] and timeline.of(json.loads(argv[5])) == value["id"]
    assert not any("s3cret" in a or "root" in a for a in argv)  # `ps` shows argv to every user
    assert (env["ETCDCTL_USER"], env["ETCDCTL_PASSWORD"]) == ("root", "r00t-s3cret")


def test_the_restored_data_gets_this_nodes_etcd_users_where_its_etcd_runs_with_auth(tmp_path: Path):
    """A backup from before install turned etcd's auth on would otherwise come back without it."""
    coordinator, root = tmp_path / "coordinator.toml", tmp_path / "etcd-root.toml"
    coordinator.write_text('etcd = "https://127.0.0.1:2379"\netcd_user = "hoststack"\netcd_password = "c0ord"\n')
    s = CtlSettings(coordinator_config=coordinator, etcd_root=root)
    assert restore.users(s, "unix:///tmp/hs-restore-x/client:0") is None  # installed without auth
    root.write_text('etcd_user = "root"\netcd_password = "r00t-s3cret"\n')
    assert restore.users(s, "unix:///tmp/hs-restore-x/client:0") == {
        "endpoint": "unix:///tmp/hs-restore-x/client:0", "root_password": "r00t-s3cret", "user": "hoststack",
        "password": "c0ord", "role": "hoststack", "prefix": "/hs/", "root_file": str(root)}


def test_the_restored_data_and_the_old_are_exchanged_in_one_step(tmp_path: Path):
    """Two renames left a moment without a data directory: etcd started then (a power loss) makes a new, empty
    cluster."""
    data, staged = tmp_path / "data", tmp_path / "data.restore-x"
    (data / "member").mkdir(parents=True)
    (data / "member" / "old").write_text("")
    (staged / "member").mkdir(parents=True)
    (staged / "member" / "restored").write_text("")
    restore.swap(staged, data)
    assert [p.name for p in (data / "member").iterdir()] == ["restored"]
    assert [p.name for p in (staged / "member").iterdir()] == ["old"]
    with pytest.raises(FileNotFoundError):
        restore.swap(tmp_path / "gone", data)
