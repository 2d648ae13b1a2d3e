"""deployer.remote without a host: its commands faked, its files in a temporary directory."""

from __future__ import annotations

import errno
import http.server
import io
import json
import os
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from agentkit import identity
from deployer import remote, render, tasks, wheelhouse
from deployer.kvmagent import SPEC


@pytest.fixture(autouse=True)
def as_root(monkeypatch):
    """The host side runs as root, as deploys log in (these tests need not)."""
    monkeypatch.setattr(remote.os, "geteuid", lambda: 0)


def done(argv: list[str], rc: int = 0, stdout: str = "", stderr: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess(argv, rc, stdout, stderr)


def test_service_under_systemd_writes_the_unit_and_restarts_it(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(remote, "_sh", lambda argv, env=None: calls.append(argv) or done(argv))
    a = {"systemd": True, "unit_path": str(tmp_path / "a.service"), "content": "[Unit]\n",
         "unit": "hoststack-a.service", "base": str(tmp_path), "stamp": str(tmp_path / "stamp"), "digest": "s1"}
    assert remote.service(a) == {"pid": None}
    assert (tmp_path / "a.service").read_text() == "[Unit]\n"
    assert calls == [["systemctl", "daemon-reload"], ["systemctl", "enable", "--quiet", "hoststack-a.service"],
                     ["systemctl", "restart", "hoststack-a.service"]]


def test_a_failing_systemctl_is_one_line_naming_it(tmp_path, monkeypatch):
    monkeypatch.setattr(remote, "_sh", lambda argv, env=None: done(argv, 1, stderr="Failed to restart x: no\n"))
    with pytest.raises(remote.Fail, match=r"^systemctl daemon-reload: Failed to restart x: no$"):
        remote.service({"systemd": True, "unit_path": str(tmp_path / "a.service"), "content": ""})


APT_MISSING = "E: Unable to locate package hs-nope\n"


@pytest.mark.parametrize("refresh, stderr, cause, calls", [
    (False, APT_MISSING, "apt: package hs-nope not found", 1),
    (True, APT_MISSING, "apt: package hs-nope not found", 3),
    (False, "E: Package 'qemu-x' has no installation candidate\n", "apt: package qemu-x not found", 1),
    (False, "E: You don't have enough free space in /var/cache/apt/archives/.\n",
     "disk full: /var/cache/apt/archives", 1),
    (False, "W: x\nE: Could not get lock /var/lib/dpkg/lock-frontend\n",
     "apt: Could not get lock /var/lib/dpkg/lock-frontend", 1),
])
def test_package_failures_name_the_cause(monkeypatch, refresh, stderr, cause, calls):
    seen = []

    def m_sh(argv, env=None):
        seen.append(argv)
        return subprocess.CompletedProcess(argv, 0 if argv[1] == "update" else 100, "", stderr)

    monkeypatch.setattr(remote, "_sh", m_sh)
    with pytest.raises(remote.Fail, match=f"^{cause}$"):
        remote.packages({"packages": ["hs-nope"], "refresh": refresh})
    assert len(seen) == calls


def test_packages_install_noninteractively_and_report_what_they_installed(monkeypatch):
    seen = []
    monkeypatch.setattr(remote, "_sh", lambda argv, env=None: seen.append((argv, env)) or done(argv))
    assert remote.packages({"packages": ["nftables", "qemu-utils"], "refresh": True}) == {
        "installed": ["nftables", "qemu-utils"]}
    [(argv, env)] = seen
    assert argv[:3] == ["apt-get", "install", "-y"] and argv[-2:] == ["nftables", "qemu-utils"]
    assert env["DEBIAN_FRONTEND"] == "noninteractive"


DPKG = ("python3 installed\nnftables:amd64 installed\nqemu-utils config-files\n"
        "libvirt-daemon-system not-installed\n")


def test_missing_packages_are_those_dpkg_does_not_call_installed(monkeypatch):
    seen = []
    monkeypatch.setattr(remote, "_sh", lambda argv, env=None: seen.append(argv) or done(argv, 1, DPKG))
    wanted = ["python3", "nftables", "qemu-utils", "libvirt-daemon-system", "hs-unknown"]
    assert remote._missing(wanted) == ["qemu-utils", "libvirt-daemon-system", "hs-unknown"]
    assert len(seen) == 1 and seen[0][-len(wanted):] == wanted  # one query for all
    assert remote._missing([]) == [] and len(seen) == 1


@pytest.mark.parametrize("text, want", [
    (render.agent_config(SPEC, "http://c", "u", 'tok"en\\1'), 'tok"en\\1'),
    ('host_token = 42\n', None),  # not a string
    ('host_token = [\n', None),  # not JSON
    ('host_token="x"\n', None),  # not a line the deployer writes
    ('# host_token = "x"\nhost_uuid = "u"\n', None),
])
def test_the_token_is_read_only_from_lines_the_deployer_writes(tmp_path, text, want):
    (tmp_path / "a.toml").write_text(text)
    assert remote._config_value(str(tmp_path / "a.toml"), "host_token") == want


def test_a_missing_config_has_no_token(tmp_path):
    assert remote._config_value(str(tmp_path / "absent.toml"), "host_token") is None


def probe_args(tmp_path: Path) -> dict[str, object]:
    return {**tasks.probe_args(SPEC, ["python3", "nftables"]), "stamp": str(tmp_path / "stamp.json"),
            "config": str(tmp_path / "kvmagent.toml"), "pidfile": str(tmp_path / "none.pid"),
            "supervisor": str(tmp_path / "supervise.sh"), "token_file": str(tmp_path / "state" / identity.TOKEN_FILE)}


def test_probe_of_a_fresh_host(tmp_path, monkeypatch):
    monkeypatch.setattr(remote, "_sh", lambda argv, env=None: done(argv, 3, "python3 installed\n"))
    out = remote.probe(probe_args(tmp_path))
    assert out == {"stamp": {}, "missing": ["nftables"], "systemd": os.path.isdir("/run/systemd/system"),
                   "running": False, "token": None, "config_token": None}


def test_probe_of_a_deployed_host_reads_stamp_token_and_the_live_supervisor(tmp_path, monkeypatch):
    a = probe_args(tmp_path)
    monkeypatch.setattr(remote, "_sh", lambda argv, env=None: done(argv, 0, "python3 installed\nnftables installed\n"))
    monkeypatch.setattr(remote.os.path, "isdir", lambda path: False)  # a host without systemd
    remote._stamp(a["stamp"], "wheels", "w1")
    remote._stamp(a["stamp"], "config", "c1")
    Path(a["config"]).write_text(render.agent_config(SPEC, "http://c", "u", "t1"))
    monkeypatch.setattr(remote, "_supervisor_pid", lambda pidfile, script: os.getpid())
    assert remote.probe(a) == {"stamp": {"wheels": "w1", "config": "c1"}, "missing": [], "systemd": False,
                               "running": True, "token": "t1", "config_token": "t1"}


def test_probe_reads_the_token_the_agent_renewed_while_it_replaces_the_configs(tmp_path, monkeypatch):
    """The agent presents the token it renewed (kept beside its state, agentkit.identity): the deploy asks the
    coordinator about that one; a config a later deploy wrote with another token wins over it."""
    a = probe_args(tmp_path)
    monkeypatch.setattr(remote, "_sh", lambda argv, env=None: done(argv, 0, "python3 installed\nnftables installed\n"))
    Path(a["config"]).write_text(render.agent_config(SPEC, "http://c", "u", "t1"))
    identity.keep_token(tmp_path / "state", "t1", "renewed")
    assert (remote.probe(a)["token"], remote.probe(a)["config_token"]) == ("renewed", "t1")
    Path(a["config"]).write_text(render.agent_config(SPEC, "http://c", "u", "t2"))
    assert (remote.probe(a)["token"], remote.probe(a)["config_token"]) == ("t2", "t2")


def test_a_host_whose_python3_is_not_the_wheels_fails_its_probe_naming_both(tmp_path, monkeypatch):
    """The dependency wheels are built on the controller for its interpreter (compiled ones for its ABI): on
    another one pip failed after the upload with `... is not a supported wheel on this platform`, and a host
    whose python3 was upgraded under a deployed agent probed as unchanged while its venv no longer started."""
    monkeypatch.setattr(remote, "_sh", lambda argv, env=None: done(argv, 0, "python3 installed\nnftables installed\n"))
    a = probe_args(tmp_path)
    assert a["python"] == f"{remote.sys.version_info[0]}.{remote.sys.version_info[1]}"
    assert remote.probe(a)["missing"] == []
    with pytest.raises(remote.Fail, match=r"^python3 on the host is \d+\.\d+; the agent's wheels are built for "
                                          r"Python 2\.7 \(the deployer's\)$"):
        remote.probe({**a, "python": "2.7"})


def test_a_probe_logged_in_as_another_user_than_root_fails_before_anything_is_asked(tmp_path, monkeypatch):
    """`--user admin`: the probe could not read the agent's config, so the deploy asked the coordinator for a new
    host token, which voided the running agent's at once, then failed to install anything."""
    monkeypatch.setattr(remote, "_sh", lambda argv, env=None: pytest.fail(f"ran {argv}"))
    monkeypatch.setattr(remote.os, "geteuid", lambda: 1000)
    with pytest.raises(remote.Fail, match=r"^the SSH user is not root \(uid 1000\): a deploy installs packages and "
                                          r"services, and reads the agent's token$"):
        remote.probe(probe_args(tmp_path))


def test_a_pid_that_is_not_our_supervisor_is_not_running(tmp_path):
    pidfile = tmp_path / "a.pid"
    pidfile.write_text(f"{os.getpid()}\n")  # this test process: alive, but not running the script
    assert remote._supervisor_pid(str(pidfile), "/opt/hoststack/x/supervise.sh") is None
    pidfile.write_text("garbage")
    assert remote._supervisor_pid(str(pidfile), "/opt/hoststack/x/supervise.sh") is None


def test_starting_a_service_nothing_installed_here_says_so(tmp_path, monkeypatch):
    """Without systemd, hs-ctl start on a machine install never reached: sh started, failed at once, and the
    start waited for an answer until its timeout."""
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **kw: pytest.fail("started"))
    a = {"supervisor": str(tmp_path / "supervise.sh"), "pidfile": str(tmp_path / "x.pid"),
         "log": str(tmp_path / "x.log")}
    with pytest.raises(remote.Fail, match=f"^{tmp_path}/supervise.sh is not there: the service is not installed here$"):
        remote.start(a, systemd=False)
    assert not (tmp_path / "x.pid").exists()


def test_status_under_systemd_is_the_units_state_and_the_last_lines_of_its_journal(monkeypatch):
    journal = "".join(f"line {i}\n" for i in range(30)) + "OSError: [Errno 98] address already in use\n"
    shown = "ExecMainStatus=1\nActiveState=activating\nSubState=auto-restart\n"
    calls = []

    def m_sh(argv, env=None):
        calls.append(argv)
        return done(argv, 0, shown if argv[0] == "systemctl" else journal[-2000:])

    monkeypatch.setattr(remote, "_sh", m_sh)
    got = remote.status(tasks.status_args(SPEC, systemd=True))
    assert got == {"state": "activating auto-restart (exit 1)",
                   "lines": [*(f"line {i}" for i in range(21, 30)), "OSError: [Errno 98] address already in use"]}
    assert calls == [["systemctl", "show", "-p", "ActiveState,SubState,ExecMainStatus", "hoststack-kvmagent.service"],
                     ["journalctl", "-u", "hoststack-kvmagent.service", "-n", "10", "--no-pager", "-o", "cat"]]
    monkeypatch.setattr(remote, "_sh", lambda argv, env=None: done(argv, 0, "ActiveState=failed\nSubState=failed\n"
                                                                   "ExecMainStatus=0\n" if "show" in argv else ""))
    assert remote.status(tasks.status_args(SPEC, systemd=True)) == {"state": "failed", "lines": []}


def test_status_without_systemd_is_the_supervisors_and_the_end_of_its_log(tmp_path):
    log = tmp_path / "kvmagent.log"
    log.write_bytes(b"x" * 100_000 + b"\nstarting\n" + b"y" * 900 + b"\nbad \xff byte\n")
    a = {"unit": "u", "pidfile": str(tmp_path / "pid"), "supervisor": "/s.sh", "log": str(log), "systemd": False,
         "lines": 3}
    assert remote.status(a) == {"state": "supervisor not running", "lines": ["starting", "y" * 500, "bad \ufffd byte"]}
    assert remote.status({**a, "log": str(tmp_path / "none")}) == {"state": "supervisor not running", "lines": []}


def test_write_replaces_the_file_whole_with_its_mode(tmp_path):
    path = tmp_path / "etc" / "a.toml"
    remote._write(path, "one\n", 0o600)
    remote._write(path, "two\n", 0o600)
    assert path.read_text() == "two\n" and path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.toml"]  # no temporary file left


def test_a_full_disk_while_writing_names_the_directory(tmp_path, monkeypatch):
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(remote.os, "fsync", full)
    with pytest.raises(remote.Fail, match=f"^disk full: {tmp_path / 'etc'}$"):
        remote._write(tmp_path / "etc" / "a.toml", "x", 0o600)


def run_main(monkeypatch, capsys, function: str, args: object) -> tuple[int, str, str]:
    monkeypatch.setattr(remote.sys, "argv", ["-c", function])
    monkeypatch.setattr(remote.sys, "stdin", io.StringIO(json.dumps(args)))
    code = 0
    try:
        remote.main()
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_main_answers_one_json_line(tmp_path, monkeypatch, capsys):
    args = {"path": str(tmp_path / "a.toml"), "content": "x = 1\n", "digest": "d1", "stamp": str(tmp_path / "s.json")}
    assert run_main(monkeypatch, capsys, "config", args) == (0, "{}\n", "")
    assert json.loads((tmp_path / "s.json").read_text()) == {"config": "d1"}


def test_main_fails_with_exit_2_and_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(remote, "_sh", lambda argv, env=None: done(argv, 100, stderr="E: Unable to locate package z\n"))
    assert run_main(monkeypatch, capsys, "packages", {"packages": ["z"], "refresh": False}) == (
        2, "", "apt: package z not found\n")
    blocked = tmp_path / "file"
    blocked.write_text("")
    code, out, err = run_main(monkeypatch, capsys, "config", {"path": str(blocked / "a.toml"), "content": "",
                                                               "digest": "d", "stamp": str(tmp_path / "s.json")})
    assert (code, out, err) == (2, "", f"config: [Errno 17] File exists: {str(blocked)!r}\n")


def _wheelhouse(tmp_path: Path, wheels: dict[str, bytes]) -> tuple[Path, str]:
    from deployer.wheelhouse import _tar

    files = []
    for name, data in wheels.items():
        (tmp_path / name).write_bytes(data)
        files.append(tmp_path / name)
    cache = tmp_path / "cache"
    cache.mkdir()
    return _tar(files, cache)


def test_install_refuses_a_wheelhouse_whose_digest_is_not_the_one_built(tmp_path, monkeypatch):
    monkeypatch.setattr(remote, "_sh", lambda argv, env=None: pytest.fail(f"ran {argv} before the check"))
    tar, digest = _wheelhouse(tmp_path, {"a-1-py3-none-any.whl": b"A", "pip-1-py3-none-any.whl": b"P"})
    args = {"base": str(tmp_path / "base"), "tar": str(tar), "stamp": str(tmp_path / "stamp")}
    with pytest.raises(remote.Fail, match=r"its digest [0-9a-f]{16} is not the 0{16} the deployer built"):
        remote.install({**args, "digest": "0" * 64})
    data = bytearray(tar.read_bytes())  # one byte of a wheel changed on the way
    data[data.index(b"A", 512)] = ord("B")
    tar.write_bytes(bytes(data))
    with pytest.raises(remote.Fail, match="is not the"):
        remote.install({**args, "digest": digest})
    assert not (tmp_path / "base").exists() or not any((tmp_path / "base").glob("wheels-*/*"))


def test_install_gives_pip_the_very_bytes_it_checked(tmp_path, monkeypatch):
    """The uploaded tar lies in /var/tmp, where a local user who made the file first owns it (ansible's copy keeps
    a destination's owner): rewritten in place right after its digest was checked, it is not what gets installed."""
    good, bad = b"A" * 3_000_000, b"B" * 3_000_000  # past any read buffer: the rewrite is seen on disk
    tar, digest = _wheelhouse(tmp_path, {"a-1-py3-none-any.whl": good, "pip-1-py3-none-any.whl": b"P"})
    check = remote.wheels_digest

    def then_rewritten(wheels):
        found = check(wheels)
        data = tar.read_bytes()
        with open(tar, "r+b") as f:  # the same file, written over
            f.seek(data.index(good))
            f.write(bad)
        return found

    installed = {}

    def m_sh(argv, env=None):
        if "venv" in argv:
            Path(argv[-1]).mkdir(parents=True)
        installed.update({Path(w).name: Path(w).read_bytes() for w in argv if w.endswith(".whl")})
        return done(argv)

    monkeypatch.setattr(remote, "wheels_digest", then_rewritten)
    monkeypatch.setattr(remote, "_sh", m_sh)
    remote.install({"base": str(tmp_path / "base"), "tar": str(tar), "stamp": str(tmp_path / "stamp"),
                    "digest": digest, "system_site_packages": False})
    assert installed["a-1-py3-none-any.whl"] == good


def test_the_host_computes_the_digest_the_controller_named_the_wheelhouse_by(tmp_path):
    import tarfile

    tar, digest = _wheelhouse(tmp_path, {"b-1-py3-none-any.whl": b"B" * 3_000_000, "a-1-py3-none-any.whl": b"A"})
    with tarfile.open(tar) as t:
        remote._unpack_verified(t, str(tar), digest, tmp_path / "wheels", t.getmembers(), lambda name: True)
    assert sorted(p.name for p in (tmp_path / "wheels").iterdir()) == ["a-1-py3-none-any.whl", "b-1-py3-none-any.whl"]
    assert (tmp_path / "wheels" / "b-1-py3-none-any.whl").read_bytes() == b"B" * 3_000_000
    assert tar.name == f"wheelhouse-{digest[:20]}.tar"


def _source_tar(tmp_path: Path) -> tuple[Path, str]:
    """The controller's source tar (hs-ctl install uploads it), as wheelhouse.source_tar builds it."""
    src = tmp_path / "src"
    (src / "agentkit" / "sub").mkdir(parents=True)
    (src / "pyproject.toml").write_text('[project]\nname = "hoststack"\n')
    (src / "agentkit" / "__init__.py").write_text("")
    (src / "agentkit" / "sub" / "m.py").write_text("A = 1\n" * 300_000)  # past any read buffer
    wheel = tmp_path / "dep-1-py3-none-any.whl"
    wheel.write_bytes(b"W")
    return wheelhouse.source_tar(src, tmp_path / "cache", [wheel])


def source_args(tmp_path: Path, tar: Path, digest: str) -> dict[str, str]:
    return {"base": str(tmp_path / "coordinator"), "tar": str(tar), "digest": digest, "stamp": str(tmp_path / "stamp")}


def test_source_unpacks_beside_the_venvs_and_switches_the_link(tmp_path):
    tar, digest = _source_tar(tmp_path)
    base = tmp_path / "coordinator"
    (base / "source-old").mkdir(parents=True)
    assert remote.source(source_args(tmp_path, tar, digest)) == {"source": str(base / f"source-{digest[:20]}")}
    assert (base / "source" / "agentkit" / "sub" / "m.py").read_text() == "A = 1\n" * 300_000
    assert (base / "source" / "wheels" / "dep-1-py3-none-any.whl").read_bytes() == b"W"
    assert sorted(p.name for p in base.iterdir()) == ["source", f"source-{digest[:20]}"] and not tar.exists()
    assert json.loads((tmp_path / "stamp").read_text()) == {"source": digest}


def test_a_source_tar_rewritten_on_the_host_is_not_unpacked(tmp_path):
    """It lies in /var/tmp as the wheelhouse does, where a local user who made the file first owns it; before, it
    was unpacked unchecked, and a node's deployer built every agent it deploys from what it held."""
    tar, digest = _source_tar(tmp_path)
    data = bytearray(tar.read_bytes())
    data[data.index(b"A = 1")] = ord("B")
    tar.write_bytes(bytes(data))
    with pytest.raises(remote.Fail, match=f"source {tar}: its digest .* is not the {digest[:16]} the deployer built"):
        remote.source(source_args(tmp_path, tar, digest))
    assert not any((tmp_path / "coordinator").iterdir()) and not (tmp_path / "stamp").exists()


def test_a_source_tar_with_a_member_outside_its_directory_is_not_unpacked(tmp_path):
    tar = tmp_path / "src.tar"
    with tarfile.open(tar, "w") as t:
        for name in ("pyproject.toml", "../escape"):
            info = tarfile.TarInfo(name)
            t.addfile(info, io.BytesIO(b""))
    with pytest.raises(remote.Fail, match="unexpected member '../escape'"):
        remote.source(source_args(tmp_path, tar, "d" * 64))
    assert not (tmp_path / "escape").exists() and not (tmp_path / "coordinator" / "source").exists()


def node_service(tmp_path: Path, name: str, restart: bool) -> dict[str, object]:
    return {"name": name, "unit": f"hoststack-{name}.service", "unit_path": str(tmp_path / f"{name}.service"),
            "supervisor": str(tmp_path / f"{name}.sh"), "pidfile": str(tmp_path / f"{name}.pid"),
            "log": str(tmp_path / f"{name}.log"), "content": f"[Unit] {name}\n", "restart": restart,
            "digest": f"d-{name}", "ready": f"http://127.0.0.1:1/{name}"}


def test_node_services_under_systemd_go_in_order_and_only_the_changed_restart(tmp_path, monkeypatch):
    calls, ready = [], []
    monkeypatch.setattr(remote, "_sh", lambda argv, env=None, timeout=900: calls.append(argv) or
                        done(argv, 3 if "is-active" in argv else 0))
    monkeypatch.setattr(remote, "wait_ready", lambda url, timeout, ca=None: ready.append(url))
    a = {"systemd": True, "stamp": str(tmp_path / "stamp"), "disable": ["etcd.service"],
         "timers": {"enable": ["hoststack-backup.timer"]},
         "services": [node_service(tmp_path, "etcd", False), node_service(tmp_path, "coordinator", True)]}
    remote.services(a)
    assert (tmp_path / "etcd.service").read_text() == "[Unit] etcd\n"
    assert calls == [
        ["systemctl", "daemon-reload"], ["systemctl", "disable", "--now", "--quiet", "etcd.service"],
        ["systemctl", "enable", "--quiet", "hoststack-etcd.service", "hoststack-coordinator.service"],
        ["systemctl", "is-active", "--quiet", "hoststack-etcd.service"],  # not running (rc 3): started
        ["systemctl", "start", "hoststack-etcd.service"], ["systemctl", "restart", "hoststack-coordinator.service"],
        ["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", "--quiet", "hoststack-backup.timer"]]
    assert ready == ["http://127.0.0.1:1/etcd", "http://127.0.0.1:1/coordinator"]
    assert json.loads((tmp_path / "stamp").read_text()) == {"service etcd": "d-etcd",
                                                             "service coordinator": "d-coordinator"}


class FakeSystemd:
    """systemctl as far as timers go: the units enabled, those active, and those it has loaded (the unit files
    it read at its last reload, and whatever still runs)."""

    def __init__(self, unit_dir: Path) -> None:
        self.unit_dir, self.enabled, self.active = unit_dir, set(), set()
        self.loaded = self.files()

    def files(self) -> set[str]:
        return {p.name for p in self.unit_dir.iterdir()}

    def __call__(self, argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        verb, *rest = argv[1:]
        names = {a for a in rest if not a.startswith("--")}
        if verb == "daemon-reload":
            self.loaded = self.files() | self.active
        elif verb == "enable":
            self.enabled |= names
            self.active |= names if "--now" in rest else set()
        elif verb == "disable":
            self.enabled -= names
            self.active -= names if "--now" in rest else set()
        return done(argv)


def test_a_timer_turned_off_is_stopped_and_disabled_and_systemd_forgets_its_units(tmp_path, monkeypatch):
    units = [tmp_path / "b.service", tmp_path / "b.timer"]
    for unit in units:
        unit.write_text("[Unit]\n")
    systemd = FakeSystemd(tmp_path)
    monkeypatch.setattr(remote, "_sh", systemd)
    remote.timers({"enable": ["b.timer"]})
    assert systemd.enabled == systemd.active == {"b.timer"}
    off = {"disable": ["b.timer"], "remove": [str(u) for u in units]}
    for _ in range(2):  # again: nothing left to do, and no error
        remote.timers(off)
        assert (systemd.enabled, systemd.active, systemd.loaded, systemd.files()) == (set(), set(), set(), set())


def test_etcd_auth_keeps_what_an_earlier_run_made_and_never_puts_a_password_in_argv(tmp_path, monkeypatch):
    calls = []

    def etcdctl(argv, env=None, timeout=900, stdin=None):
        calls.append((argv[1:], stdin))
        assert env["ETCDCTL_USER"] == "root" and env["ETCDCTL_PASSWORD"] == "rootpw"
        assert env["ETCDCTL_CACERT"] == "/pki/ca.pem" and "rootpw" not in argv and "pw" not in argv
        exists = argv[1:3] in (["user", "add"], ["role", "add"]) and argv[3] != "root"
        return done(argv, 1 if exists else 0, "", "Error: etcdserver: user name already exists" if exists else "")
    monkeypatch.setattr(remote, "_sh", etcdctl)
    remote.etcd_auth({"endpoint": "https://127.0.0.1:2379", "root_password": "rootpw", "user": "hoststack",
                      "password": "pw", "role": "hoststack", "prefix": "/hs/", "cacert": "/pki/ca.pem",
                      "root_file": "/etc/hoststack/etcd-root.toml", "stamp": str(tmp_path / "stamp"),
                      "digest": "a1"})
    assert calls == [
        (["endpoint", "health"], None), (["user", "add", "root", "--interactive=false"], "rootpw\n"),
        (["role", "add", "hoststack"], None),  # there already: kept
        (["role", "grant-permission", "hoststack", "--prefix=true", "readwrite", "/hs/"], None),
        (["user", "add", "hoststack", "--interactive=false"], "pw\n"),  # there already: its password set
        (["user", "passwd", "hoststack", "--interactive=false"], "pw\n"),
        (["user", "grant-role", "hoststack", "hoststack"], None), (["auth", "enable"], None)]
    assert json.loads((tmp_path / "stamp").read_text()) == {"etcd auth": "a1"}


def test_etcd_auth_with_a_root_password_etcd_refuses_is_one_line(monkeypatch):
    monkeypatch.setattr(remote, "_sh", lambda argv, env=None, timeout=900, stdin=None: done(
        argv, 1, "", "Error: etcdserver: authentication failed, invalid user ID or password"))
    with pytest.raises(remote.Fail, match=r"^etcd at https://127.0.0.1:2379 refuses the root password the node "
                                          r"keeps \(/etc/hoststack/etcd-root.toml\)$"):
        remote.etcd_auth({"endpoint": "https://127.0.0.1:2379", "root_password": "old",
                          "root_file": "/etc/hoststack/etcd-root.toml"})


def test_node_files_make_directories_and_replace_files_whole(tmp_path):
    a = {"dirs": [{"path": str(tmp_path / "etc"), "mode": 0o750, "owner": None, "group": None}],
         "files": [{"path": str(tmp_path / "etc" / "c.toml"), "content": "x = 1\n", "mode": 0o600, "group": None}],
         "remove": [str(tmp_path / "old")], "stamp": str(tmp_path / "stamp"), "digest": "f1"}
    (tmp_path / "old").write_text("gone")
    remote.files(a)
    assert (tmp_path / "etc").stat().st_mode & 0o777 == 0o750
    assert (tmp_path / "etc" / "c.toml").read_text() == "x = 1\n" and not (tmp_path / "old").exists()
    assert (tmp_path / "etc" / "c.toml").stat().st_mode & 0o777 == 0o600
    assert json.loads((tmp_path / "stamp").read_text()) == {"files": "f1"}


def test_the_node_probe_reads_the_kept_secrets(tmp_path, monkeypatch):
    monkeypatch.setattr(remote, "_sh", lambda argv, env=None: done(argv, 0, "etcd-server installed\n"))
    monkeypatch.setattr(remote.os.path, "isdir", lambda path: False)
    (tmp_path / "coordinator.toml").write_text('admin_token = "a1"\nport = 8740\n')
    (tmp_path / "consoleproxy.toml").write_text('uuid = "u1"\n')
    coordinator, proxy = str(tmp_path / "coordinator.toml"), str(tmp_path / "consoleproxy.toml")
    out = remote.node_probe({"stamp": str(tmp_path / "stamp"), "packages": ["etcd-server"],
                             "secrets": {"admin_token": [coordinator, "admin_token"],
                                         "secret_key": [coordinator, "secret_key"], "proxy_uuid": [proxy, "uuid"],
                                         "proxy_token": [str(tmp_path / "absent.toml"), "token"]},
                             "services": [node_service(tmp_path, "etcd", False)]})
    assert out == {"stamp": {}, "missing": [], "systemd": False, "running": {"hoststack-etcd.service": False},
                   "secrets": {"admin_token": "a1", "secret_key": None, "proxy_uuid": "u1", "proxy_token": None}}


class _Coordinator(http.server.BaseHTTPRequestHandler):
    """The node's coordinator as `register` sees it: `hosts` registered already, every request recorded."""

    hosts: list[dict] = []
    calls: list[tuple[str, str, dict | None, str]] = []

    def _answer(self, status: int, doc: dict) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        self.calls.append(("GET", self.path, None, self.headers["Authorization"]))
        self._answer(200, {"hosts": self.hosts})

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.calls.append(("POST", self.path, body, self.headers["Authorization"]))
        if self.headers["Authorization"] != "Bearer adm":
            self._answer(401, {"error": {"code": "unauthorized", "message": "no", "field": None}})
        elif self.path == "/v1/hosts":
            if any(h["name"] == body["name"] for h in self.hosts):
                self._answer(409, {"error": {"code": "exists", "message": "exists", "field": "name"}})
            else:
                self._answer(201, {"uuid": "u-new", "token": "t-new", **body})
        else:
            self._answer(200, {"token": "t-rotated", "rotated": True})

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def coordinator():
    _Coordinator.hosts, _Coordinator.calls = [], []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Coordinator)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_register_makes_the_host_and_answers_its_uuid_and_token(coordinator):
    host = {"name": "hoststack-consoleproxy", "address": "198.18.0.2", "kind": "consoleproxy"}
    assert remote.register({"url": coordinator, "admin_token": "adm", "host": host}) == {"uuid": "u-new",
                                                                                          "token": "t-new"}
    assert _Coordinator.calls == [("POST", "/v1/hosts", host, "Bearer adm")]


def test_register_of_a_host_already_there_gets_it_a_new_token(coordinator):
    """An install that stopped after registering and before writing the token down: the record stays."""
    _Coordinator.hosts = [{"uuid": "u-other", "name": "kvm1"}, {"uuid": "u-old", "name": "hoststack-consoleproxy"}]
    host = {"name": "hoststack-consoleproxy", "address": "198.18.0.2", "kind": "consoleproxy"}
    assert remote.register({"url": coordinator, "admin_token": "adm", "host": host}) == {"uuid": "u-old",
                                                                                          "token": "t-rotated"}
    assert [c[:2] for c in _Coordinator.calls] == [("POST", "/v1/hosts"), ("GET", "/v1/hosts"),
                                                    ("POST", "/v1/hosts/u-old/token")]


def test_register_refused_otherwise_is_one_line(coordinator):
    with pytest.raises(remote.Fail, match=r"^registering x at http://127.0.0.1:\d+: 401"):
        remote.register({"url": coordinator, "admin_token": "not-the-admin-token",
                         "host": {"name": "x", "address": "198.18.0.2", "kind": "consoleproxy"}})
