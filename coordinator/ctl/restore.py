"""`hs-ctl restore FILE`: etcd back to a backup, in a fresh data directory, the old one kept aside.

Nothing is touched until the file is known good: its checksum file matches, its embedded sha256 (etcd's)
matches, and `etcdctl snapshot status` reads it as a database. It is then unpacked beside the data
directory (`etcdctl snapshot restore`, as this member: name, peers and cluster token from etcd's own
configuration) and sealed: a new timeline written into it (coordinator/etcd/timeline.py) by an etcd of
its own that nothing else can reach, which also gets this node's etcd users (as install made them: a
backup from before etcd's auth comes back with it on; one of another cluster, whose root password is not
this node's, is refused). Only then is etcd stopped, the unpacked directory exchanged with the data
directory in one step (there is always a data directory: etcd on none would start a new, empty cluster),
the old data renamed to `<data>.before-restore-<time>`, and etcd started and waited for.

What happens next needs nobody: coordinators lose their etcd connection, reconnect, find the data on
another timeline (or behind the revision they had seen) and rebuild their watch cache, which ends every
host stream; the agents reconnect, and as their revision is of the old timeline, get a snapshot of the
restored desired state whichever revision is higher, and converge to it. The seal is in the data before
any client can read it, so no coordinator resumes a watch on the restored data as if it were the old.
One member only: on an etcd cluster every member is restored from the same file (docs/operations.md).
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from agentkit.configfile import ConfigError
from agentkit.durable import fsync_dir
from agentkit.proc import ProcessError, run
from coordinator.ctl import backupfile, etcdauth, lease, node, services
from coordinator.ctl.errors import Busy, InvalidBackup, RestoreFailed
from coordinator.ctl.etcdctl import environment, said
from coordinator.ctl.settings import CtlSettings
from coordinator.etcd import keys, timeline
from coordinator.etcd.endpoints import EtcdConfig
from deployer.remote import host as remote_host
from deployer.remote import node as remote_node

NO_LOGIN = "etcdserver: user name is empty"  # etcdctl's: auth is on in the data, and hs-ctl has no user for it


@dataclass(frozen=True)
class Member:
    """This etcd member as its configuration file describes it."""

    name: str
    data_dir: Path
    peer_urls: str
    initial_cluster: str
    cluster_token: str

    @classmethod
    def load(cls, path: Path) -> Member:
        cfg = services.etcd_config(path, "name", "data-dir", "initial-advertise-peer-urls", "initial-cluster")
        return cls(cfg["name"], Path(cfg["data-dir"]), cfg["initial-advertise-peer-urls"], cfg["initial-cluster"],
                   cfg.get("initial-cluster-token", "etcd-cluster"))


@dataclass(frozen=True)
class Restored:
    file: Path
    sha256: str
    revision: int
    keys: int
    data_dir: Path
    timeline: str  # the restored data's (coordinator/etcd/timeline.py)
    previous: Path | None  # the data directory before the restore (kept)


def check(s: CtlSettings, path: Path) -> tuple[str, dict[str, int]]:
    """The file's sha256 and `etcdctl snapshot status` once it is known good; InvalidBackup else."""
    sha256 = backupfile.verify(path)
    try:
        status = json.loads(run([s.etcdctl, "snapshot", "status", str(path), "-w", "json"], timeout=300).stdout)
    except (ProcessError, ValueError) as e:
        raise InvalidBackup(f"{path}: etcd cannot read it as a snapshot ({e}); nothing was changed") from None
    except OSError as e:  # not the file's fault: the tool the settings name
        raise RestoreFailed(f"running {s.etcdctl} (hs-ctl's setting etcdctl): {e.strerror}; nothing was changed"
                            ) from None
    return sha256, status


def unpack(s: CtlSettings, path: Path, m: Member, into: Path) -> None:
    if into.exists():  # etcdctl would refuse it, and its removal below would take another restore's data
        raise Busy(f"{into} exists: another restore is running (or one was interrupted: remove it); nothing was "
                   "changed")
    argv = [s.etcdctl, "snapshot", "restore", str(path), "--name", m.name, "--data-dir", str(into),
            "--initial-cluster", m.initial_cluster, "--initial-cluster-token", m.cluster_token,
            "--initial-advertise-peer-urls", m.peer_urls]
    try:
        run(argv, timeout=1800)
    except ProcessError as e:
        shutil.rmtree(into, ignore_errors=True)
        raise RestoreFailed(f"unpacking {path}: {e.stderr.strip().splitlines()[-1:] or e}; nothing was changed"
                            ) from None
    _give(into)


def seal(s: CtlSettings, path: Path, m: Member, data: Path, now: dt.datetime) -> str:
    """Write a new timeline into the unpacked `data` before any client can read it; its id. Coordinators and
    agents then tell the restored data from what they saw before, though its revisions soon pass theirs."""
    value = timeline.new(str(path), now)
    try:
        with alone(s, m, data) as endpoint:
            if (auth := users(s, endpoint)) is not None:
                with tempfile.TemporaryDirectory(prefix="hs-restore-") as d:  # its stamp is not the node's
                    remote_node.etcd_auth({**auth, "stamp": f"{d}/stamp", "digest": "", "timeout": s.ready_timeout})
            argv, env = seal_command(s, endpoint, value)
            deadline = time.monotonic() + s.ready_timeout
            while True:
                try:
                    run(argv, timeout=30, logstring=f"etcdctl put {timeline.KEY} (sealing {data})", env=env)
                    break
                except ProcessError as e:
                    if time.monotonic() > deadline or NO_LOGIN in e.stderr:  # an answer: asking again changes none
                        raise
                    time.sleep(0.2)
    except (OSError, ProcessError, remote_host.Fail) as e:
        shutil.rmtree(data, ignore_errors=True)
        if isinstance(e, ProcessError) and NO_LOGIN in e.stderr:
            raise RestoreFailed(f"{path}: its etcd has auth on and this node's has not ({s.etcd_root} names no "
                                "root user): a backup of another cluster?; nothing was changed") from None
        why = said(e.stderr, e.rc) if isinstance(e, ProcessError) else e
        raise RestoreFailed(f"sealing the unpacked data: {why}; nothing was changed") from None
    _give(data)
    return value["id"]


def users(s: CtlSettings, endpoint: str) -> dict[str, str] | None:
    """etcd's users as this node's install made them (deployer.remote.node.etcd_auth's arguments), to apply to the
    restored data at `endpoint`: a backup taken before the install turned etcd's auth on (an older release)
    would bring etcd back without auth, and the coordinator's role with it; a backup whose root password is
    not this node's (another cluster's) is refused. None where this node's etcd runs without auth."""
    root = s.etcd()
    try:
        coordinator = EtcdConfig.from_file(s.coordinator_config)
    except (ConfigError, ValueError) as e:
        raise RestoreFailed(f"the coordinator's etcd settings: {e}") from None
    if root.user != etcdauth.ROOT_USER or coordinator.user is None:
        return None
    return {"endpoint": endpoint, "root_password": root.password or "", "user": coordinator.user,
            "password": coordinator.password or "", "role": etcdauth.ROLE, "prefix": keys.ROOT,
            "root_file": str(s.etcd_root)}


def seal_command(s: CtlSettings, endpoint: str, value: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """etcdctl's put of the timeline `value` at `endpoint`, and its environment: the restored data keeps
    etcd's users, so it logs in as hs-ctl does, the password in the environment (an argument shows in
    `ps` to every user of the machine)."""
    argv = [s.etcdctl, f"--endpoints={endpoint}", "--command-timeout=5s", "put", timeline.KEY, json.dumps(value)]
    return argv, environment(s.etcd())


@contextlib.contextmanager
def alone(s: CtlSettings, m: Member, data: Path) -> Iterator[str]:
    """etcd on `data` where nothing else reaches it: its client and peer listeners are unix sockets in a
    directory of its own (etcd wants host:port there: files of that name in its working directory). The
    client endpoint; etcd stopped on the way out."""
    with tempfile.TemporaryDirectory(prefix="hs-restore-") as d:
        with open(os.path.join(d, "etcd.log"), "wb") as out:
            argv = [s.etcd_binary, "--name", m.name, "--data-dir", str(data), "--listen-client-urls", "unix://client:0",
                    "--advertise-client-urls", "unix://client:0", "--listen-peer-urls", "unix://peer:0",
                    "--logger", "zap", "--log-level", "error"]
            p = subprocess.Popen(argv, cwd=d, stdin=subprocess.DEVNULL, stdout=out, stderr=out)  # noqa: S603
        try:
            yield f"unix://{d}/client:0"
        finally:
            p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def swap(a: Path, b: Path) -> None:
    """Exchange the directories `a` and `b` in one step (renameat2's RENAME_EXCHANGE): a power loss or an
    interruption between two renames left no data directory, on which etcd, started at boot, makes a new
    empty cluster."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(a), None, str(b))


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2  # <fcntl.h>, <linux/fs.h>


def _give(data: Path) -> None:
    """The data belongs to whoever owns etcd's directory (the etcd user)."""
    st = os.stat(data.parent)
    for root, dirs, files in os.walk(data):
        for name in [*dirs, *files]:
            os.chown(os.path.join(root, name), st.st_uid, st.st_gid)
    os.chown(data, st.st_uid, st.st_gid)


@contextlib.contextmanager
def exclusive(m: Member) -> Iterator[None]:
    """One restore at a time on this node (a lock beside etcd's data directory, released when the process
    ends however it ends): a second would stop etcd under the first's wait and exchange its own data in,
    the first's then kept as the data "before" it; Busy, nothing changed."""
    lock = m.data_dir.with_name(f".{m.data_dir.name}.restore.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(f"another restore of {m.data_dir} is running (it holds {lock}); nothing was changed") from None
        yield
    finally:
        os.close(fd)


def restore(s: CtlSettings, path: Path, now: dt.datetime | None = None) -> Restored:
    sha256, status = check(s, path)
    m = Member.load(s.etcd_config)
    with exclusive(m), lease.held("hs-ctl restore"):  # an install must not restart etcd under it, nor it under one
        return _restore(s, path, m, sha256, status, now or dt.datetime.now(dt.UTC))


def _restore(s: CtlSettings, path: Path, m: Member, sha256: str, status: dict[str, int], now: dt.datetime
             ) -> Restored:
    stamp = f"{now:%Y%m%dT%H%M%SZ}"
    staged = m.data_dir.with_name(f"{m.data_dir.name}.restore-{stamp}")
    unpack(s, path, m, staged)
    sealed = seal(s, path, m, staged, now)
    etcd, systemd = node.ETCD.control(), services.systemd()
    previous = m.data_dir.with_name(f"{m.data_dir.name}.before-restore-{stamp}")
    try:
        remote_host.stop(etcd, systemd)
    except remote_host.Fail as e:
        shutil.rmtree(staged, ignore_errors=True)
        raise RestoreFailed(f"stopping etcd: {e}; nothing was changed") from None
    moved = m.data_dir.exists()
    try:
        if moved:
            swap(staged, m.data_dir)
        else:
            os.rename(staged, m.data_dir)
    except OSError as e:
        shutil.rmtree(staged, ignore_errors=True)
        raise RestoreFailed(f"putting the restored data in place: {e}; nothing was changed, but etcd is stopped: "
                            "`hs-ctl start etcd`") from None
    if moved:
        os.rename(staged, previous)
    fsync_dir(m.data_dir.parent)
    back = f"; the data before the restore is in {previous}" if moved else ""
    try:
        remote_host.start(etcd, systemd)
        services.wait_ready(s, node.ETCD)
    except remote_host.Fail as e:
        raise RestoreFailed(f"etcd did not come back on the restored data: {e}{back}") from None
    return Restored(path, sha256, int(status.get("revision", 0)), int(status.get("totalKey", 0)), m.data_dir,
                    sealed, previous if moved else None)
