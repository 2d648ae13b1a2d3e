"""hs-ctl backup --copy-to without etcd: a backup taken from a stand-in snapshot, copied into another temporary
directory; a destination that damages, refuses or fills up is simulated where an unprivileged test cannot make it."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from coordinator.ctl import backup, backupcopy, backupfile
from coordinator.ctl import main as ctl_main
from coordinator.ctl.errors import CopyFailed
from tests.unit.coordinator.ctl.test_backup import Snapshot, at


@pytest.fixture
def local(tmp_path: Path) -> Path:
    return tmp_path / "local"


@pytest.fixture
def offsite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory that stands for a mount: every directory here but the backups' is another filesystem."""
    (tmp_path / "offsite").mkdir()
    monkeypatch.setattr(backupcopy, "filesystem", lambda p: hash(p) if p.name != "local" else 0)
    return tmp_path / "offsite"


def test_a_directory_on_the_filesystem_of_the_backups_is_no_copy_off_the_node(tmp_path: Path, local: Path):
    """A mount point that is not mounted: a directory of the node's own disk."""
    b = backup.take(Snapshot(), local, now=at(5))
    (tmp_path / "mnt").mkdir()
    with pytest.raises(CopyFailed, match=rf"^copy to {tmp_path / 'mnt'}: it is on the filesystem of the backups "
                                         rf"here \({local}\), not another one \(not mounted\?\); the backup "):
        backupcopy.copy(b, tmp_path / "mnt", backupfile.DEFAULT_NAME, 3, 3600)
    assert list((tmp_path / "mnt").iterdir()) == []


def test_the_copy_is_the_backup_with_its_sha256_and_sha256sum_checks_it_there(local: Path, offsite: Path):
    b = backup.take(Snapshot(), local, now=at(5))
    c = backupcopy.copy(b, offsite, backupfile.DEFAULT_NAME, 3, 3600)
    assert c == backupcopy.Copy(offsite / b.path.name)
    assert sorted(p.name for p in offsite.iterdir()) == [b.path.name, b.path.name + ".sha256"]
    assert c.path.read_bytes() == b.path.read_bytes() and c.path.stat().st_mode & 0o777 == 0o600
    assert (offsite / (b.path.name + ".sha256")).read_text() == f"{b.sha256}  {b.path.name}\n"
    assert backupfile.verify(c.path) == b.sha256  # what `hs-ctl restore` checks of a file anywhere


def test_a_copy_that_reads_back_otherwise_is_not_named_a_backup(local: Path, offsite: Path,
                                                                monkeypatch: pytest.MonkeyPatch):
    """A destination that stores other bytes than it was given (a flaky mount): the copy read back is checked."""
    b = backup.take(Snapshot(), local, now=at(5))
    fsync = os.fsync

    def damaging(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".db.part"):
            os.pwrite(fd, b"\xff", 100)
        fsync(fd)

    monkeypatch.setattr(os, "fsync", damaging)
    with pytest.raises(CopyFailed, match=rf"^copy to {offsite}: the copy reads back as sha256 [0-9a-f]{{64}}, "
                                         rf"not the backup's {b.sha256}; the backup {b.path} is complete and kept"):
        backupcopy.copy(b, offsite, backupfile.DEFAULT_NAME, 3, 3600)
    assert list(offsite.iterdir()) == [] and backupfile.verify(b.path) == b.sha256


def test_the_keep_amount_applies_to_the_copies_of_that_name_there(local: Path, offsite: Path):
    (offsite / "pre-upgrade-20200101T000000.000Z.db").write_bytes(b"x")
    crashed = offsite / "daily-20200101T000000.000Z.db.part"  # a copy a power loss ended
    crashed.write_bytes(b"partial")
    copies = [backupcopy.copy(backup.take(Snapshot(), local, "daily", keep=3, now=at(s)), offsite, "daily", 3, 60)
              for s in range(5)]
    assert [len(c.removed) for c in copies] == [0, 0, 0, 1, 1]
    assert backupfile.of_name(offsite, "daily") == [c.path for c in reversed(copies[2:])]
    assert not (offsite / (copies[0].path.name + ".sha256")).exists() and not crashed.exists()
    assert (offsite / "pre-upgrade-20200101T000000.000Z.db").exists()
    assert [p.name for p in backupfile.of_name(local, "daily")] == [c.path.name for c in reversed(copies[2:])]


def _refusing(monkeypatch: pytest.MonkeyPatch, offsite: Path, err: int) -> None:
    """`offsite` refuses new files with `err` (read-only: EROFS, as root too; full: ENOSPC)."""
    real = os.open

    def refusing(path: str | Path, flags: int, mode: int = 0o777, **kw: object) -> int:
        if Path(path).parent == offsite and flags & os.O_CREAT:
            raise OSError(err, os.strerror(err), str(path))
        return real(path, flags, mode, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", refusing)


@pytest.mark.parametrize("case, reason", [
    ("missing", "no such directory \\(not mounted\\?\\)"),
    ("file", "not a directory"),
    ("read-only", "Read-only file system"),
    ("full", "No space left on device"),
])
def test_a_destination_that_cannot_take_the_copy_is_named_and_the_backup_kept(
        local: Path, offsite: Path, monkeypatch: pytest.MonkeyPatch, case: str, reason: str):
    b = backup.take(Snapshot(), local, now=at(5))
    target = offsite
    if case == "missing":
        target = offsite / "unmounted"
    elif case == "file":
        target = offsite / "file"
        target.write_text("")
    elif case == "read-only":
        _refusing(monkeypatch, offsite, errno.EROFS)
    else:
        fsync = os.fsync

        def full(fd: int) -> None:  # a network filesystem says so once it is asked to keep the data
            if os.readlink(f"/proc/self/fd/{fd}").startswith(str(offsite)):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            fsync(fd)

        monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(CopyFailed, match=rf"^copy to {target}: {reason}; the backup {b.path} is complete and kept "
                                         "on this node, not copied$"):
        backupcopy.copy(b, target, backupfile.DEFAULT_NAME, 3, 3600)
    assert backupfile.verify(b.path) == b.sha256
    assert sorted(p.name for p in offsite.iterdir()) == (["file"] if case == "file" else [])
    assert not (offsite / "unmounted").exists()  # never made: a mount point not mounted is no destination


def test_hs_ctl_backup_copies_where_the_option_else_the_setting_says_and_a_failure_is_one_line(
        tmp_path: Path, local: Path, offsite: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]):
    monkeypatch.setattr(backup, "take_and_record", lambda etcd, directory, name, keep, timeout, meanwhile:
                        backup.take(Snapshot(), directory, name, keep, timeout))
    monkeypatch.setattr(ctl_main.Etcdctl, "of", lambda *a: None)
    monkeypatch.setattr(ctl_main.CtlSettings, "etcd", lambda s: None)
    monkeypatch.setattr(ctl_main, "_logs", lambda s: None)
    config = tmp_path / "ctl.toml"
    config.write_text(f'backup_dir = "{local}"\nbackup_copy_to = "{offsite}"\n')
    ctl_main.main(["--config", str(config), "backup"])
    [made] = backupfile.of_name(local, backupfile.DEFAULT_NAME)
    assert capsys.readouterr().out.endswith(f"; copied to {offsite / made.name}, verified\n")
    assert backupfile.verify(offsite / made.name)
    elsewhere = tmp_path / "elsewhere"
    with pytest.raises(SystemExit) as e:
        ctl_main.main(["--config", str(config), "backup", "--copy-to", str(elsewhere)])
    [newest, _] = backupfile.of_name(local, backupfile.DEFAULT_NAME)
    assert str(e.value) == (f"hs-ctl: copy to {elsewhere}: no such directory (not mounted?); the backup {newest} "
                            "is complete and kept on this node, not copied")
