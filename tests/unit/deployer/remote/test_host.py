"""deployer.remote.host without a host: its commands faked, its files in a temporary directory."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentkit import identity
from deployer import render, tasks
from deployer.kvmagent import SPEC
from deployer.remote import host


@pytest.fixture(autouse=True)
def as_root(monkeypatch, tmp_path):
    """The host side runs as root, as deploys log in (these tests need not), its step lock in the test's directory."""
    monkeypatch.setattr(host.os, "geteuid", lambda: 0)
    monkeypatch.setattr(host, "STEP_LOCK", tmp_path / "run" / "deploy-step.lock")


def done(argv: list[str], rc: int = 0, stdout: str = "", stderr: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess(argv, rc, stdout, stderr)


def test_service_under_systemd_writes_the_unit_and_restarts_it(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(host, "sh", lambda argv, env=None: calls.append(argv) or done(argv))
    a = {"systemd": True, "unit_path": str(tmp_path / "a.service"), "content": "[Unit]\n",
         "unit": "hoststack-a.service", "base": str(tmp_path), "stamp": str(tmp_path / "stamp"), "digest": "s1"}
    assert host.service(a) == {"pid": None}
    assert (tmp_path / "a.service").read_text() == "[Unit]\n"
    assert calls == [["systemctl", "daemon-reload"], ["systemctl", "enable", "--quiet", "hoststack-a.service"],
                     ["systemctl", "restart", "hoststack-a.service"]]


def test_a_failing_systemctl_is_one_line_naming_it(tmp_path, monkeypatch):
    monkeypatch.setattr(host, "sh", lambda argv, env=None: done(argv, 1, stderr="Failed to restart x: no\n"))
    with pytest.raises(host.Fail, match=r"^systemctl daemon-reload: Failed to restart x: no$"):
        host.service({"systemd": True, "unit_path": str(tmp_path / "a.service"), "content": ""})


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

    monkeypatch.setattr(host, "sh", m_sh)
    with pytest.raises(host.Fail, match=f"^{cause}$"):
        host.packages({"packages": ["hs-nope"], "refresh": refresh})
    assert len(seen) == calls


def test_packages_install_noninteractively_and_report_what_they_installed(monkeypatch):
    seen = []
    monkeypatch.setattr(host, "sh", lambda argv, env=None: seen.append((argv, env)) or done(argv))
    assert host.packages({"packages": ["nftables", "qemu-utils"], "refresh": True}) == {
        "installed": ["nftables", "qemu-utils"]}
    [(argv, env)] = seen
    assert argv[:3] == ["apt-get", "install", "-y"] and argv[-2:] == ["nftables", "qemu-utils"]
    assert env["DEBIAN_FRONTEND"] == "noninteractive"


DPKG = ("python3 installed\nnftables:amd64 installed\nqemu-utils config-files\n"
        "libvirt-daemon-system not-installed\n")


def test_missing_packages_are_those_dpkg_does_not_call_installed(monkeypatch):
    seen = []
    monkeypatch.setattr(host, "sh", lambda argv, env=None: seen.append(argv) or done(argv, 1, DPKG))
    wanted = ["python3", "nftables", "qemu-utils", "libvirt-daemon-system", "hs-unknown"]
    assert host._missing(wanted) == ["qemu-utils", "libvirt-daemon-system", "hs-unknown"]
    assert len(seen) == 1 and seen[0][-len(wanted):] == wanted  # one query for all
    assert host._missing([]) == [] and len(seen) == 1


@pytest.mark.parametrize("text, want", [
    (render.agent_config(SPEC, "http://c", "u", 'tok"en\\1'), 'tok"en\\1'),
    ('host_token = 42\n', None),  # not a string
    ('host_token = [\n', None),  # not JSON
    ('host_token="x"\n', None),  # not a line the deployer writes
    ('# host_token = "x"\nhost_uuid = "u"\n', None),
])
def test_the_token_is_read_only_from_lines_the_deployer_writes(tmp_path, text, want):
    (tmp_path / "a.toml").write_text(text)
    assert host.config_value(str(tmp_path / "a.toml"), "host_token") == want


def test_a_missing_config_has_no_token(tmp_path):
    assert host.config_value(str(tmp_path / "absent.toml"), "host_token") is None


def probe_args(tmp_path: Path) -> dict[str, object]:
    return {**tasks.probe_args(SPEC, ["python3", "nftables"]), "stamp": str(tmp_path / "stamp.json"),
            "config": str(tmp_path / "kvmagent.toml"), "pidfile": str(tmp_path / "none.pid"),
            "supervisor": str(tmp_path / "supervise.sh"), "token_file": str(tmp_path / "state" / identity.TOKEN_FILE),
            "base": str(tmp_path / "base")}


def test_probe_of_a_fresh_host(tmp_path, monkeypatch):
    monkeypatch.setattr(host, "sh", lambda argv, env=None: done(argv, 3, "python3 installed\n"))
    out = host.probe(probe_args(tmp_path))
    assert out == {"stamp": {}, "missing": ["nftables"], "systemd": os.path.isdir("/run/systemd/system"),
                   "running": False, "token": None, "config_token": None, "current": None, "current_version": None}


def test_probe_of_a_deployed_host_reads_stamp_token_and_the_live_supervisor(tmp_path, monkeypatch):
    a = probe_args(tmp_path)
    monkeypatch.setattr(host, "sh", lambda argv, env=None: done(argv, 0, "python3 installed\nnftables installed\n"))
    monkeypatch.setattr(host.os.path, "isdir", lambda path: False)  # a host without systemd
    host.stamp(a["stamp"], "wheels", "w1")
    host.stamp(a["stamp"], "config", "c1")
    Path(a["config"]).write_text(render.agent_config(SPEC, "http://c", "u", "t1"))
    monkeypatch.setattr(host, "_supervisor_pid", lambda pidfile, script: os.getpid())
    assert host.probe(a) == {"stamp": {"wheels": "w1", "config": "c1"}, "missing": [], "systemd": False,
                               "running": True, "token": "t1", "config_token": "t1", "current": None,
                               "current_version": None}


def test_probe_reads_the_token_the_agent_renewed_while_it_replaces_the_configs(tmp_path, monkeypatch):
    """The agent presents the token it renewed (kept beside its state, agentkit.identity): the deploy asks the
    coordinator about that one; a config a later deploy wrote with another token wins over it."""
    a = probe_args(tmp_path)
    monkeypatch.setattr(host, "sh", lambda argv, env=None: done(argv, 0, "python3 installed\nnftables installed\n"))
    Path(a["config"]).write_text(render.agent_config(SPEC, "http://c", "u", "t1"))
    identity.keep_token(tmp_path / "state", "t1", "renewed")
    assert (host.probe(a)["token"], host.probe(a)["config_token"]) == ("renewed", "t1")
    Path(a["config"]).write_text(render.agent_config(SPEC, "http://c", "u", "t2"))
    assert (host.probe(a)["token"], host.probe(a)["config_token"]) == ("t2", "t2")


def test_a_host_whose_python3_is_not_the_wheels_fails_its_probe_naming_both(tmp_path, monkeypatch):
    """The dependency wheels are built on the controller for its interpreter (compiled ones for its ABI): on
    another one pip failed after the upload with `... is not a supported wheel on this platform`, and a host
    whose python3 was upgraded under a deployed agent probed as unchanged while its venv no longer started."""
    monkeypatch.setattr(host, "sh", lambda argv, env=None: done(argv, 0, "python3 installed\nnftables installed\n"))
    a = probe_args(tmp_path)
    assert a["python"] == f"{host.sys.version_info[0]}.{host.sys.version_info[1]}"
    assert host.probe(a)["missing"] == []
    with pytest.raises(host.Fail, match=r"^python3 on the host is \d+\.\d+; the agent's wheels are built for "
                                          r"Python 2\.7 \(the deployer's\)$"):
        host.probe({**a, "python": "2.7"})


def test_a_probe_logged_in_as_another_user_than_root_fails_before_anything_is_asked(tmp_path, monkeypatch):
    """`--user admin`: the probe could not read the agent's config, so the deploy asked the coordinator for a new
    host token, which voided the running agent's at once, then failed to install anything."""
    monkeypatch.setattr(host, "sh", lambda argv, env=None: pytest.fail(f"ran {argv}"))
    monkeypatch.setattr(host.os, "geteuid", lambda: 1000)
    with pytest.raises(host.Fail, match=r"^the SSH user is not root \(uid 1000\): a deploy installs packages and "
                                          r"services, and reads the agent's token$"):
        host.probe(probe_args(tmp_path))


def test_a_pid_that_is_not_our_supervisor_is_not_running(tmp_path):
    pidfile = tmp_path / "a.pid"
    pidfile.write_text(f"{os.getpid()}\n")  # this test process: alive, but not running the script
    assert host._supervisor_pid(str(pidfile), "/opt/hoststack/x/supervise.sh") is None
    pidfile.write_text("garbage")
    assert host._supervisor_pid(str(pidfile), "/opt/hoststack/x/supervise.sh") is None


def test_starting_a_service_nothing_installed_here_says_so(tmp_path, monkeypatch):
    """Without systemd, hs-ctl start on a machine install never reached: sh started, failed at once, and the
    start waited for an answer until its timeout."""
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **kw: pytest.fail("started"))
    a = {"supervisor": str(tmp_path / "supervise.sh"), "pidfile": str(tmp_path / "x.pid"),
         "log": str(tmp_path / "x.log")}
    with pytest.raises(host.Fail, match=f"^{tmp_path}/supervise.sh is not there: the service is not installed here$"):
        host.start(a, systemd=False)
    assert not (tmp_path / "x.pid").exists()


def test_status_under_systemd_is_the_units_state_and_the_last_lines_of_its_journal(monkeypatch):
    journal = "".join(f"line {i}\n" for i in range(30)) + "OSError: [Errno 98] address already in use\n"
    shown = "ExecMainStatus=1\nActiveState=activating\nSubState=auto-restart\n"
    calls = []

    def m_sh(argv, env=None):
        calls.append(argv)
        return done(argv, 0, shown if argv[0] == "systemctl" else journal[-2000:])

    monkeypatch.setattr(host, "sh", m_sh)
    got = host.status(tasks.status_args(SPEC, systemd=True))
    assert got == {"state": "activating auto-restart (exit 1)",
                   "lines": [*(f"line {i}" for i in range(21, 30)), "OSError: [Errno 98] address already in use"]}
    assert calls == [["systemctl", "show", "-p", "ActiveState,SubState,ExecMainStatus", "hoststack-kvmagent.service"],
                     ["journalctl", "-u", "hoststack-kvmagent.service", "-n", "10", "--no-pager", "-o", "cat"]]
    monkeypatch.setattr(host, "sh", lambda argv, env=None: done(argv, 0, "ActiveState=failed\nSubState=failed\n"
                                                                   "ExecMainStatus=0\n" if "show" in argv else ""))
    assert host.status(tasks.status_args(SPEC, systemd=True)) == {"state": "failed", "lines": []}


def test_status_without_systemd_is_the_supervisors_and_the_end_of_its_log(tmp_path):
    log = tmp_path / "kvmagent.log"
    log.write_bytes(b"x" * 100_000 + b"\nstarting\n" + b"y" * 900 + b"\nbad \xff byte\n")
    a = {"unit": "u", "pidfile": str(tmp_path / "pid"), "supervisor": "/s.sh", "log": str(log), "systemd": False,
         "lines": 3}
    assert host.status(a) == {"state": "supervisor not running", "lines": ["starting", "y" * 500, "bad \ufffd byte"]}
    assert host.status({**a, "log": str(tmp_path / "none")}) == {"state": "supervisor not running", "lines": []}


def test_write_replaces_the_file_whole_with_its_mode(tmp_path):
    path = tmp_path / "etc" / "a.toml"
    host.write(path, "one\n", 0o600)
    host.write(path, "two\n", 0o600)
    assert path.read_text() == "two\n" and path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.toml"]  # no temporary file left


def test_a_full_disk_while_writing_names_the_directory(tmp_path, monkeypatch):
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(host.os, "fsync", full)
    with pytest.raises(host.Fail, match=f"^disk full: {tmp_path / 'etc'}$"):
        host.write(tmp_path / "etc" / "a.toml", "x", 0o600)


def run_main(monkeypatch, capsys, function: str, args: object) -> tuple[int, str, str]:
    monkeypatch.setattr(host.sys, "argv", ["-c", function])
    monkeypatch.setattr(host.sys, "stdin", io.StringIO(json.dumps(args)))
    code = 0
    try:
        host.main()
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_main_answers_one_json_line(tmp_path, monkeypatch, capsys):
    args = {"path": str(tmp_path / "a.toml"), "content": "x = 1\n", "digest": "d1", "stamp": str(tmp_path / "s.json")}
    assert run_main(monkeypatch, capsys, "config", args) == (0, "{}\n", "")
    assert json.loads((tmp_path / "s.json").read_text()) == {"config": "d1"}


def test_main_fails_with_exit_2_and_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(host, "sh", lambda argv, env=None: done(argv, 100, stderr="E: Unable to locate package z\n"))
    assert run_main(monkeypatch, capsys, "packages", {"packages": ["z"], "refresh": False}) == (
        2, "", "apt: package z not found\n")
    blocked = tmp_path / "file"
    blocked.write_text("")
    code, out, err = run_main(monkeypatch, capsys, "config", {"path": str(blocked / "a.toml"), "content": "",
                                                               "digest": "d", "stamp": str(tmp_path / "s.json")})
    assert (code, out, err) == (2, "", f"config: [Errno 17] File exists: {str(blocked)!r}\n")


@contextlib.contextmanager
def step_left_running(what: str) -> Iterator[int]:
    """A step an interrupted deploy left running on the host: it holds the step lock (`what` in it)."""
    host.STEP_LOCK.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(host.STEP_LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, what.encode())
    try:
        yield fd
    finally:
        os.close(fd)


def test_a_step_waits_for_one_an_interrupted_deploy_left_running(tmp_path, monkeypatch, capsys):
    """Before, the next deploy's steps ran beside it (two installs into one venv, two supervisors)."""
    args = {"path": str(tmp_path / "a.toml"), "content": "x = 1\n", "digest": "d1", "stamp": str(tmp_path / "s.json")}
    with step_left_running("install, pid 7\n") as fd:
        threading.Timer(0.5, fcntl.flock, (fd, fcntl.LOCK_UN)).start()  # that step ends
        t0 = time.monotonic()
        assert run_main(monkeypatch, capsys, "config", args) == (0, "{}\n", "")
        assert time.monotonic() - t0 >= 0.5
    assert host.STEP_LOCK.read_text().startswith("config, pid ")


def test_a_control_nodes_steps_take_no_step_lock_their_lease_refuses_a_second_install_at_once(monkeypatch, capsys):
    monkeypatch.setattr(host.sys, "argv", ["-c", "f"])
    monkeypatch.setattr(host.sys, "stdin", io.StringIO("{}"))
    with step_left_running("install, pid 7\n"):
        host.dispatch({"f": lambda a: {"ran": True}})  # as deployer.remote.node.main does
    assert capsys.readouterr().out == '{"ran": true}\n'


def test_a_step_left_running_for_too_long_fails_the_next_naming_it():
    with step_left_running("install, pid 7\n"), pytest.raises(host.Fail, match=re.escape(
            "another deploy's step still runs here (install, pid 7) after 0.3s; try again once it ended")):
        with host.one_step_at_a_time("probe", wait=0.3):
            pytest.fail("ran beside it")


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
    monkeypatch.setattr(host, "sh", lambda argv, env=None: pytest.fail(f"ran {argv} before the check"))
    tar, digest = _wheelhouse(tmp_path, {"a-1-py3-none-any.whl": b"A", "pip-1-py3-none-any.whl": b"P"})
    args = {"base": str(tmp_path / "base"), "tar": str(tar), "stamp": str(tmp_path / "stamp")}
    with pytest.raises(host.Fail, match=r"its digest [0-9a-f]{16} is not the 0{16} the deployer built"):
        host.install({**args, "digest": "0" * 64})
    data = bytearray(tar.read_bytes())  # one byte of a wheel changed on the way
    data[data.index(b"A", 512)] = ord("B")
    tar.write_bytes(bytes(data))
    with pytest.raises(host.Fail, match="is not the"):
        host.install({**args, "digest": digest})
    assert not (tmp_path / "base").exists() or not any((tmp_path / "base").glob("wheels-*/*"))


def test_install_gives_pip_the_very_bytes_it_checked(tmp_path, monkeypatch):
    """The uploaded tar lies in /var/tmp, where a local user who made the file first owns it (ansible's copy keeps
    a destination's owner): rewritten in place right after its digest was checked, it is not what gets installed."""
    good, bad = b"A" * 3_000_000, b"B" * 3_000_000  # past any read buffer: the rewrite is seen on disk
    tar, digest = _wheelhouse(tmp_path, {"a-1-py3-none-any.whl": good, "pip-1-py3-none-any.whl": b"P"})
    check = host.wheels_digest

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

    monkeypatch.setattr(host, "wheels_digest", then_rewritten)
    monkeypatch.setattr(host, "sh", m_sh)
    host.install({"base": str(tmp_path / "base"), "tar": str(tar), "stamp": str(tmp_path / "stamp"),
                    "digest": digest, "system_site_packages": False})
    assert installed["a-1-py3-none-any.whl"] == good


def test_the_host_computes_the_digest_the_controller_named_the_wheelhouse_by(tmp_path):
    import tarfile

    tar, digest = _wheelhouse(tmp_path, {"b-1-py3-none-any.whl": b"B" * 3_000_000, "a-1-py3-none-any.whl": b"A"})
    with tarfile.open(tar) as t:
        host.unpack_verified(t, str(tar), digest, tmp_path / "wheels", t.getmembers(), lambda name: True)
    assert sorted(p.name for p in (tmp_path / "wheels").iterdir()) == ["a-1-py3-none-any.whl", "b-1-py3-none-any.whl"]
    assert (tmp_path / "wheels" / "b-1-py3-none-any.whl").read_bytes() == b"B" * 3_000_000
    assert tar.name == f"wheelhouse-{digest[:20]}.tar"


def installed(base: Path, *digests: str, current: str | None = None) -> None:
    """Finished venvs under `base` with the HostStack wheel's metadata, `current` naming one."""
    for d in digests:
        (base / f"venv-{d}/lib/python3.11/site-packages/hoststack-0.9.dist-info").mkdir(parents=True)
        (base / f"venv-{d}/.complete").touch()
    if current:
        (base / "current").symlink_to(f"venv-{current}")


def test_probe_names_the_install_a_failed_upgrade_goes_back_to(tmp_path, monkeypatch):
    a = probe_args(tmp_path)
    monkeypatch.setattr(host, "sh", lambda argv, env=None: done(argv, 0, "python3 installed\nnftables installed\n"))
    installed(Path(a["base"]), "w0", current="w0")
    assert (host.probe(a)["current"], host.probe(a)["current_version"]) == ("venv-w0", "0.9")


def test_a_config_write_keeps_the_one_it_replaces_beside_it_readable_by_root_alone(tmp_path):
    args = {"path": str(tmp_path / "a.toml"), "content": "x = 1\n", "digest": "d1", "stamp": str(tmp_path / "s.json")}
    (tmp_path / "a.toml.previous").write_text("stale = 1\n")
    host.config(args)
    assert not (tmp_path / "a.toml.previous").exists()  # a first config replaced none
    host.config({**args, "content": "x = 2\n"})
    assert (tmp_path / "a.toml.previous").read_text() == "x = 1\n"
    assert (tmp_path / "a.toml.previous").stat().st_mode & 0o777 == 0o600


def test_a_restart_keeps_the_venv_it_replaced_until_the_agent_is_connected(tmp_path, monkeypatch):
    monkeypatch.setattr(host, "sh", lambda argv, env=None: done(argv))
    installed(tmp_path, "w0", "w1", "w2", current="w2")
    (tmp_path / "a.toml.previous").write_text("x = 1\n")
    host.service({"systemd": True, "unit_path": str(tmp_path / "a.service"), "content": "", "unit": "a.service",
                  "base": str(tmp_path), "stamp": str(tmp_path / "s.json"), "digest": "s1", "previous": "venv-w1"})
    assert sorted(p.name for p in tmp_path.glob("venv-*")) == ["venv-w1", "venv-w2"]
    assert host.clean_up({"base": str(tmp_path), "config": str(tmp_path / "a.toml")}) == {}
    assert [p.name for p in tmp_path.glob("venv-*")] == ["venv-w2"] and not (tmp_path / "a.toml.previous").exists()


def test_a_rollback_puts_back_the_venv_config_and_stamp_the_probe_found_and_restarts(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(host, "sh", lambda argv, env=None: calls.append(argv) or done(argv))
    installed(tmp_path, "w0", "w1", current="w1")
    (tmp_path / "a.toml").write_text("x = 2\n")
    (tmp_path / "a.toml.previous").write_text("x = 1\n")
    host.stamp(str(tmp_path / "s.json"), "wheels", "w1")
    a = {"systemd": True, "unit": "a.service", "base": str(tmp_path), "previous": "venv-w0",
         "config": str(tmp_path / "a.toml"), "stamp": str(tmp_path / "s.json"), "recorded": {"wheels": "w0"}}
    assert host.rollback(a) == {"pid": None}
    assert os.readlink(tmp_path / "current") == "venv-w0" and (tmp_path / "a.toml").read_text() == "x = 1\n"
    assert json.loads((tmp_path / "s.json").read_text()) == {"wheels": "w0"} and calls == [
        ["systemctl", "restart", "a.service"]]
    with pytest.raises(host.Fail, match="venv-w9 is not there any more"):
        host.rollback({**a, "previous": "venv-w9"})
