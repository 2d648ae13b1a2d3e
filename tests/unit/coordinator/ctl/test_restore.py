"""The restore without running etcd: the seal's command and refusals, the member's configuration, the exchange."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest

from agentkit.proc import ProcessError
from coordinator.ctl import layout, restore
from coordinator.ctl.errors import Busy, RestoreFailed, ServiceFailed
from coordinator.ctl.settings import CtlSettings
from coordinator.etcd import timeline


@pytest.fixture(autouse=True)
def _lock(tmp_path: Path, monkeypatch) -> None:
    """The node's lease a restore holds (test_lease.py), here and not on this machine's control node."""
    monkeypatch.setattr(layout, "LOCK", tmp_path / "controlnode.lock")


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


def test_a_backup_whose_etcd_wants_a_login_the_node_has_not_is_refused_at_once(tmp_path: Path, monkeypatch):
    """A backup of a cluster with auth on, restored where etcd runs without: etcd's refusal is its answer (the seal
    asked it again for `ready_timeout`, 60 s, then printed etcdctl's log lines); the unpacked data goes."""
    coordinator, data = tmp_path / "coordinator.toml", tmp_path / "data.restore-x"
    coordinator.write_text('etcd = "http://127.0.0.1:2379"\n')
    data.mkdir()
    asked: list[list[str]] = []

    def refused(argv: list[str], **_: object) -> None:
        asked.append(argv)
        raise ProcessError(argv, 1, "", '{"level":"warn","msg":"retrying of unary invoker failed"}\n'
                                        "Error: etcdserver: user name is empty\n")

    monkeypatch.setattr(restore, "alone", lambda *_: contextlib.nullcontext("unix:///tmp/hs-restore-x/client:0"))
    monkeypatch.setattr(restore, "run", refused)
    s = CtlSettings(coordinator_config=coordinator, etcd_root=tmp_path / "etcd-root.toml")
    member = restore.Member("n1", tmp_path / "data", "http://127.0.0.1:2380", "n1=http://127.0.0.1:2380", "t")
    with pytest.raises(RestoreFailed) as e:
        restore.seal(s, Path("/b/other.db"), member, data, dt.datetime(2026, 12, 5, tzinfo=dt.UTC))
    assert str(e.value) == (f"/b/other.db: its etcd has auth on and this node's has not ({tmp_path}/etcd-root.toml "
                            "names no root user): a backup of another cluster?; nothing was changed")
    assert len(asked) == 1 and not data.exists()


def test_an_etcd_configuration_without_the_members_keys_names_those_missing(tmp_path: Path):
    """Before anything is unpacked; a list there was a TypeError traceback, a missing key said only its name."""
    (tmp_path / "etcd.json").write_text('{"name": "cn1", "initial-cluster": "cn1=http://127.0.0.1:2380"}')
    with pytest.raises(ServiceFailed, match=f"^etcd's configuration {tmp_path}/etcd.json: no data-dir, "
                                            "initial-advertise-peer-urls$"):
        restore.Member.load(tmp_path / "etcd.json")


def test_an_etcdctl_that_cannot_run_is_named_before_anything_is_touched(tmp_path: Path, monkeypatch):
    """A traceback (FileNotFoundError) before; the file itself is good."""
    db = b"bolt database" * 100
    backup = tmp_path / "b.db"
    backup.write_bytes(db + hashlib.sha256(db).digest())
    backup.with_name("b.db.sha256").write_text(f"{hashlib.sha256(backup.read_bytes()).hexdigest()}  b.db\n")

    def missing(argv: list[str], **_: object) -> None:
        raise FileNotFoundError(2, "No such file or directory", argv[0])  # as subprocess raises it

    monkeypatch.setattr(restore, "run", missing)
    with pytest.raises(RestoreFailed, match=r"^running /opt/etcd/etcdctl \(hs-ctl's setting etcdctl\): No such file or "
                                            "directory; nothing was changed$"):
        restore.check(CtlSettings(etcdctl="/opt/etcd/etcdctl"), backup)


def test_a_restore_whose_directory_exists_leaves_it_alone(tmp_path: Path, monkeypatch):
    """Another restore of the same second unpacks there: etcdctl refused the directory, and the failed unpack
    removed it under the other restore."""
    into = tmp_path / "data.restore-20261205T000000Z"
    (into / "member").mkdir(parents=True)
    monkeypatch.setattr(restore, "run", lambda *a, **kw: pytest.fail("etcdctl ran"))
    member = restore.Member("n1", tmp_path / "data", "http://127.0.0.1:2380", "n1=http://127.0.0.1:2380", "t")
    with pytest.raises(Busy, match=f"^{into} exists: another restore is running"):
        restore.unpack(CtlSettings(), Path("/b/x.db"), member, into)
    assert [p.name for p in into.iterdir()] == ["member"]


def test_a_second_restore_on_the_node_is_refused_while_one_runs(tmp_path: Path, monkeypatch):
    """It would stop etcd under the first's wait and exchange its own data in (the first's kept as "before")."""
    member = restore.Member("n1", tmp_path / "data", "http://127.0.0.1:2380", "n1=http://127.0.0.1:2380", "t")
    monkeypatch.setattr(restore, "check", lambda s, path: ("0" * 64, {"revision": 9, "totalKey": 3}))
    monkeypatch.setattr(restore.Member, "load", lambda path: member)
    unpacked: list[Path] = []

    def unpack(s: CtlSettings, path: Path, m: restore.Member, into: Path) -> None:
        unpacked.append(into)
        raise RestoreFailed("stop here")
    monkeypatch.setattr(restore, "unpack", unpack)
    with restore.exclusive(member):  # the first restore, between its unpack and etcd's start
        with pytest.raises(Busy, match=f"^another restore of {tmp_path}/data is running .*; nothing was changed$"):
            restore.restore(CtlSettings(), Path("/b/x.db"))
    assert unpacked == []
    with pytest.raises(RestoreFailed, match="stop here"):  # once it ended, the next one goes on
        restore.restore(CtlSettings(), Path("/b/x.db"))
    assert len(unpacked) == 1
