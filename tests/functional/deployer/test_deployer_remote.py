"""deployer.remote, the code hosts run: real dpkg, real processes, real ENOSPC (apt and systemd: tests/unit)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from types import ModuleType

from agentkit.proc import run
from deployer import wheelhouse
from deployer.remote import host, node
from testbed import hostprogram


def call(tmp_path: Path, function: str, args: dict, wrap: list[str] | None = None,
         modules: tuple[ModuleType, ...] = (host,)) -> subprocess.CompletedProcess:
    """Run the program as the engine does: source as -c, function as argv, JSON on stdin; its step lock in the
    test's `tmp_path`."""
    program = hostprogram.program(*modules, step_lock=tmp_path / "step.lock")
    argv = [*(wrap or []), "/usr/bin/python3", "-c", program, function]
    return run(argv, input=json.dumps(args), rcs=(0, 2), timeout=30)


def test_probe_reports_stamp_missing_packages_and_no_agent(tmp_path):
    stamp = tmp_path / "stamp.json"
    stamp.write_text('{"wheels": "w1"}')
    p = call(tmp_path, "probe", {
        "stamp": str(stamp), "packages": ["python3", "hs-no-such-package"], "unit": "x.service",
        "pidfile": str(tmp_path / "none.pid"), "supervisor": str(tmp_path / "s.sh"), "python": wheelhouse.PYTHON,
        "base": str(tmp_path / "opt")})
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {"stamp": {"wheels": "w1"}, "missing": ["hs-no-such-package"],
                                    "systemd": os.path.isdir("/run/systemd/system"), "running": False,
                                    "current": None, "current_version": None}  # nothing installed to go back to


def test_config_is_private_and_stamped(tmp_path):
    path, stamp = tmp_path / "etc" / "a.toml", tmp_path / "stamp.json"
    stamp.write_text('{"wheels": "w1"}')
    p = call(tmp_path, "config", {"path": str(path), "content": 'x = "1"\n', "digest": "d1", "stamp": str(stamp)})
    assert p.returncode == 0, p.stderr
    assert path.read_text() == 'x = "1"\n' and path.stat().st_mode & 0o777 == 0o600
    assert json.loads(stamp.read_text()) == {"wheels": "w1", "config": "d1"}


def test_a_control_nodes_program_runs_its_steps_on_the_hosts_kit(tmp_path):
    path, stamp = tmp_path / "etc" / "c.toml", tmp_path / "stamp.json"
    p = call(tmp_path, "files", {"dirs": [{"path": str(path.parent), "mode": 0o750}],
                       "files": [{"path": str(path), "content": "x = 1\n", "mode": 0o640}], "stamp": str(stamp),
                       "digest": "f1"}, modules=(host, node))
    assert (p.returncode, p.stdout, p.stderr) == (0, "{}\n", "")
    assert path.read_text() == "x = 1\n" and path.stat().st_mode & 0o777 == 0o640
    assert json.loads(stamp.read_text()) == {"files": "f1"}


def test_a_full_disk_is_one_line_naming_the_directory(tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    mount = f"mount -t tmpfs -o size=16k tmpfs {small} && exec \"$@\""
    p = call(tmp_path, "config", {"path": str(small / "a.toml"), "content": "x" * 100_000, "digest": "d",
                        "stamp": str(tmp_path / "stamp.json")}, wrap=["unshare", "--mount", "sh", "-c", mount, "-"])
    assert (p.returncode, p.stderr, p.stdout) == (2, f"disk full: {small}\n", "")


def supervisor_args(tmp_path: Path, body: str = "sleep 60") -> dict:
    return {"systemd": False, "content": f"#!/bin/sh\n{body}\n", "digest": "s1", "stamp": str(tmp_path / "stamp"),
            "base": str(tmp_path), "unit": "u", "unit_path": "/nonexistent", "supervisor": str(tmp_path / "sup.sh"),
            "pidfile": str(tmp_path / "run" / "a.pid"), "log": str(tmp_path / "log" / "a.log")}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_service_restarts_the_supervised_agent_and_prunes_old_venvs(tmp_path):
    (tmp_path / "venv-old").mkdir()
    (tmp_path / "venv-new").mkdir()
    (tmp_path / "current").symlink_to("venv-new")
    a = supervisor_args(tmp_path)
    first = host.service(a)["pid"]
    try:
        assert alive(first) and host._supervisor_pid(a["pidfile"], a["supervisor"]) == first
        assert os.getsid(first) == first  # own session: survives the ssh session that started it
        second = host.service(a)["pid"]
        deadline = time.monotonic() + 5
        while alive(first) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(first) and alive(second)
        assert sorted(p.name for p in tmp_path.glob("venv-*")) == ["venv-new"]
        assert json.loads(Path(a["stamp"]).read_text()) == {"service": "s1"}
    finally:
        host._stop_supervised(a["pidfile"], a["supervisor"])


def test_supervisor_of_another_process_is_not_ours(tmp_path):
    p = subprocess.Popen(["sleep", "30"])
    try:
        (tmp_path / "a.pid").write_text(str(p.pid))
        assert host._supervisor_pid(str(tmp_path / "a.pid"), "/opt/hoststack/x/supervise.sh") is None
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
