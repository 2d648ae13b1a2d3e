"""`hs-ctl backup` against a real 3-member etcd with client TLS and auth on: the snapshot comes from the
first member that gives it, the credentials reach etcdctl, the record reads back through the store; a
refusal or a hang leaves no file behind."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coordinator.ctl import backup, restore
from coordinator.ctl.errors import BackupFailed, RestoreFailed
from coordinator.ctl.etcdctl import Etcdctl
from coordinator.ctl.settings import CtlSettings
from coordinator.domain import backups
from coordinator.etcd.store import Store
from testbed.etcd import ROOT_PASSWORD, Etcd, EtcdCluster
from testbed.ports import free_port

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def cluster(run):
    c = EtcdCluster(run, 3, name="bk", tls=True, auth=True).start()
    c.etcdctl("put", "/hs/x", '{"n": 1}', user=f"root:{ROOT_PASSWORD}")
    yield c
    c.stop()


def hs_ctl_env(cluster: EtcdCluster, backups_dir: Path, user: str, password: str, down: int | None = None
               ) -> dict[str, str]:
    """hs-ctl's environment with the coordinator's settings for `cluster` (a member that is `down` first)."""
    env = {**os.environ, "HS_COORDINATOR_CONFIG": "/nonexistent", "HS_CTL_CONFIG": "/nonexistent",
           "HS_CTL_BACKUP_DIR": str(backups_dir), "HS_COORDINATOR_ETCD_USER": user,
           "HS_COORDINATOR_ETCD_PASSWORD": password}
    settings = {k: v for k, v in cluster.client_settings().items() if k not in ("etcd_user", "etcd_password")}
    if down:
        settings["etcd"] = f"https://127.0.0.1:{down},{settings['etcd']}"
    return env | {f"HS_COORDINATOR_{k.upper()}": v for k, v in settings.items()}


async def test_a_backup_comes_from_the_first_member_that_gives_it_and_is_recorded(run, cluster):
    out = run.path("from-second")
    p = subprocess.run([sys.executable, "-m", "coordinator.ctl.main", "backup"], capture_output=True, text=True,
                       env=hs_ctl_env(cluster, out, "root", ROOT_PASSWORD, down=free_port()), timeout=120)
    assert p.returncode == 0, p.stderr
    [path] = out.glob("hoststack-etcd-*.db")
    assert p.stdout.startswith(f"backup {path} (") and ROOT_PASSWORD not in p.stdout + p.stderr
    sha256, status = restore.check(CtlSettings(), path)  # what a restore checks first
    assert status["totalKey"] >= 1 and sorted(q.name for q in out.iterdir()) == [path.name, path.name + ".sha256"]
    store = Store(cluster.config())
    await store.connect()
    try:
        rec = await backups.last(store)
    finally:
        await store.close()
    size, node = path.stat().st_size, os.uname().nodename
    assert rec == backups.BackupRecord(rec.at if rec else 0, str(path), sha256, size, node)


def test_a_backup_copied_off_the_node_is_verified_there_and_kept_as_many(run, cluster):
    """`--copy-to` (or `backup_copy_to`): the copy sha256sum -c accepts in DIR and a restore's checks pass
    on, the keep amount applied there; a DIR not there, or on the node's filesystem of the backups (a mount point
    not mounted), is one line and the backup on the node stays. /dev/shm (a tmpfs) stands for the mount."""
    out, offsite = run.path("copied-local"), Path("/dev/shm") / f"{run.prefix}-offsite"
    offsite.mkdir()
    try:
        _copied_off_the_node(run, cluster, out, offsite)
    finally:
        shutil.rmtree(offsite)


def _copied_off_the_node(run, cluster, out: Path, offsite: Path) -> None:
    env = hs_ctl_env(cluster, out, "root", ROOT_PASSWORD)
    said = []
    for extra, setting in ((["--copy-to", str(offsite)], {}), ([], {"HS_CTL_BACKUP_COPY_TO": str(offsite)}),
                           (["--copy-to", str(offsite)], {})):
        p = subprocess.run([sys.executable, "-m", "coordinator.ctl.main", "backup", "--keep-amount", "2", *extra],
                           capture_output=True, text=True, env=env | setting, timeout=120)
        assert p.returncode == 0, p.stderr
        said.append(p.stdout)
    local = sorted(out.glob("hoststack-etcd-*.db"))
    copies = sorted(offsite.glob("hoststack-etcd-*.db"))
    assert [q.name for q in copies] == [q.name for q in local] and len(copies) == 2  # the first pruned there too
    assert said[-1].rstrip().endswith(f"; removed 1 older; copied to {copies[-1]}, verified, removed 1 older there")
    assert sorted(q.name for q in offsite.iterdir()) == sorted([*(q.name for q in copies),
                                                                *(q.name + ".sha256" for q in copies)])
    check = subprocess.run(["sha256sum", "-c", *(q.name + ".sha256" for q in copies)], cwd=offsite,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and check.stdout == "".join(f"{q.name}: OK\n" for q in copies)
    for copy in copies:
        sha256, status = restore.check(CtlSettings(), copy)  # what a restore of the copy checks first
        assert sha256 == (out / (copy.name + ".sha256")).read_text().split()[0] and status["totalKey"] >= 1
    cfg, data, peer = run.path("copied-etcd.json"), run.path("copied-restored"), f"http://127.0.0.1:{free_port()}"
    cfg.write_text(json.dumps({"name": "n1", "data-dir": str(data), "initial-cluster": f"n1={peer}",
                               "initial-advertise-peer-urls": peer}))
    restore.unpack(CtlSettings(etcd_config=cfg), copies[-1], restore.Member.load(cfg), data)  # from DIR itself
    assert (data / "member" / "snap" / "db").is_file()
    for target, reason in ((offsite / "not-mounted", "no such directory (not mounted?)"),
                           (run.path("bare-mount-point"), f"it is on the filesystem of the backups here ({out}), "
                                                          "not another one (not mounted?)")):
        run.path("bare-mount-point").mkdir(exist_ok=True)
        p = subprocess.run([sys.executable, "-m", "coordinator.ctl.main", "backup", "--keep-amount", "2",
                            "--copy-to", str(target)], capture_output=True, text=True, env=env, timeout=120)
        newest = sorted(out.glob("hoststack-etcd-*.db"))[-1]
        assert p.returncode == 1 and p.stdout == "" and p.stderr == (
            f"hs-ctl: copy to {target}: {reason}; the backup {newest} is complete and kept on this node, not copied\n")
    assert list(run.path("bare-mount-point").iterdir()) == []
    assert newest not in local and restore.check(CtlSettings(), newest)[0]


def test_a_snapshot_etcd_refuses_says_why_and_leaves_nothing(run, cluster):
    out = run.path("refused")
    p = subprocess.run([sys.executable, "-m", "coordinator.ctl.main", "backup"], capture_output=True, text=True,
                       env=hs_ctl_env(cluster, out, "hoststack", "hoststack-etcd-password"), timeout=120)
    assert p.returncode == 1 and p.stdout == ""
    assert "hs-ctl: etcd did not give its snapshot: https://" in p.stderr  # each member's answer follows
    assert "auth: permission denied (as etcd user hoststack); no backup was kept" in p.stderr  # snapshots need root
    assert list(out.iterdir()) == []


def test_a_snapshot_that_hangs_is_abandoned_at_the_timeout(run, cluster):
    out = run.path("hung")
    member = cluster.members[1]
    config = cluster.config().replace(user="root", password=ROOT_PASSWORD)
    etcd = Etcdctl.of(config.replace(endpoints=(member.url,)))
    member.pause()
    try:
        with pytest.raises(BackupFailed, match=r"the backup took more than 0\.5 s; no backup was kept"):
            backup.take_and_record(etcd, out, "hung", 2, timeout=0.5)
    finally:
        member.resume()
    assert list(out.iterdir()) == []


def test_a_member_that_never_answers_is_passed_over_without_credentials_too(run):
    """etcdctl 3.4 logging in fails at its dial timeout; without credentials (an etcd without auth) its
    snapshot waits for an unanswering member until killed: hs-ctl gives each member `etcd_timeout` to begin."""
    etcd = Etcd(run, name="noauth").start()
    try:
        out = run.path("noauth-backups")
        env = {**os.environ, "HS_COORDINATOR_CONFIG": "/nonexistent", "HS_CTL_CONFIG": "/nonexistent",
               "HS_CTL_BACKUP_DIR": str(out), "HS_COORDINATOR_ETCD_TIMEOUT": "2",
               "HS_COORDINATOR_ETCD": f"http://127.0.0.1:{free_port()},{etcd.url}"}
        p = subprocess.run([sys.executable, "-m", "coordinator.ctl.main", "backup"], capture_output=True, text=True,
                           env=env, timeout=60)  # the backup's own bound is an hour
        assert p.returncode == 0, p.stderr
        assert [q.suffix for q in sorted(out.iterdir())] == [".db", ".sha256"]
    finally:
        etcd.stop()


def _etcdctl(endpoint: str, *args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    """etcdctl at `endpoint` (as `user`, 'name:password'), once that etcd answers (restore.alone does not wait)."""
    argv = ["etcdctl", f"--endpoints={endpoint}", *([f"--user={user}"] if user else []), *args]
    deadline = time.monotonic() + 20
    while True:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=30, env={**os.environ, "ETCDCTL_API": "3"})
        if "connection refused" not in p.stderr and "no such file" not in p.stderr or time.monotonic() > deadline:
            return p
        time.sleep(0.2)


def test_a_backup_from_before_etcds_auth_is_restored_with_the_nodes_users_and_another_clusters_refused(run):
    old = Etcd(run, name="preauth").start()  # an older release's node: etcd without auth
    try:
        _etcdctl(old.url, "put", "/hs/x", "1")
        backup_file = run.path("preauth.db")
        assert _etcdctl(old.url, "snapshot", "save", str(backup_file)).returncode == 0
    finally:
        old.stop()
    cfg, data = run.path("preauth-etcd.json"), run.path("restored-data")
    cfg.write_text(json.dumps({"name": old.name, "data-dir": str(data), "initial-cluster": old.initial_cluster,
                               "initial-advertise-peer-urls": old.peer_url}))
    coordinator, root = run.path("preauth-coordinator.toml"), run.path("preauth-root.toml")
    coordinator.write_text('etcd_user = "hoststack"\netcd_password = "c0ord"\n')
    root.write_text(f'etcd_user = "root"\netcd_password = "{ROOT_PASSWORD}"\n')
    s, m = CtlSettings(etcd_config=cfg, coordinator_config=coordinator, etcd_root=root), restore.Member.load(cfg)
    restore.unpack(s, backup_file, m, data)
    restore.seal(s, backup_file, m, data, dt.datetime.now(dt.UTC))
    sealed_file = run.path("sealed.db")
    with restore.alone(s, m, data) as endpoint:
        assert "user name is empty" in _etcdctl(endpoint, "get", "/hs/x").stderr  # auth is on
        assert _etcdctl(endpoint, "get", "/hs/x", "--print-value-only", user="hoststack:c0ord").stdout == "1\n"
        assert "permission denied" in _etcdctl(endpoint, "put", "/other", "1", user="hoststack:c0ord").stderr
        _etcdctl(endpoint, "snapshot", "save", str(sealed_file), user=f"root:{ROOT_PASSWORD}")
    # a backup of another cluster (its root password is not this node's) is refused before anything is touched
    root.write_text('etcd_user = "root"\netcd_password = "this-nodes-own"\n')
    other = run.path("other-data")
    restore.unpack(s, sealed_file, m, other)
    with pytest.raises(RestoreFailed, match="refuses the root password the node keeps.*nothing was changed"):
        restore.seal(s, sealed_file, m, other, dt.datetime.now(dt.UTC))
    assert not other.exists()


def test_a_backup_of_an_etcd_with_auth_is_refused_at_once_where_the_nodes_etcd_runs_without(run, cluster):
    """The seal's login fails: etcd's answer, said as what it means (not asked again for `ready_timeout`)."""
    root = cluster.config().replace(user="root", password=ROOT_PASSWORD, endpoints=(cluster.endpoints[0],))
    foreign = backup.take(Etcdctl.of(root), run.path("authed-backups"), "authed", 1, timeout=60).path
    cfg, data = run.path("noauth-etcd.json"), run.path("noauth-restored")
    peer = f"http://127.0.0.1:{free_port()}"
    cfg.write_text(json.dumps({"name": "n1", "data-dir": str(data), "initial-cluster": f"n1={peer}",
                               "initial-advertise-peer-urls": peer}))
    coordinator = run.path("noauth-coordinator.toml")
    coordinator.write_text(f'etcd = "http://127.0.0.1:{free_port()}"\n')
    s = CtlSettings(etcd_config=cfg, coordinator_config=coordinator, etcd_root=run.path("no-root.toml"))
    m = restore.Member.load(cfg)
    restore.unpack(s, foreign, m, data)
    t0 = time.monotonic()
    with pytest.raises(RestoreFailed, match="its etcd has auth on and this node's has not .*another cluster"):
        restore.seal(s, foreign, m, data, dt.datetime.now(dt.UTC))
    assert time.monotonic() - t0 < 20 and not data.exists()
