"""Ctrl-C of a deploy while ansible runs a step on a real sshd target: one line, exit status 130, the deploy lock
released, no ansible worker or ssh of it left, and the next deploy completes."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentkit.proc import run as run_process
from deployer.deploy import current_version
from deployer.engine import DEPLOY_INTERRUPTED, INTERRUPTED
from testbed.deploylab import deployer_toml

pytestmark = pytest.mark.real
DELAY = 6
# python3, except that a venv takes DELAY s to make: the install step is under way that long
SLOW_PYTHON = f'#!/bin/sh\n[ "$1 $2" = "-m venv" ] && sleep {DELAY}\nexec /usr/bin/python3.11 "$@"\n'


def started_by(config: Path, control_path_dir: Path) -> list[str]:
    """The processes of deploys with `config` (ansible's workers are their deployer's copies) and their ssh clients
    (those with a control socket in `control_path_dir`), but the ControlPersist master, which outlives a deploy by
    design."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            environ, cmdline = (proc / "environ").read_bytes(), (proc / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        deployer = f"HS_DEPLOYER_CONFIG={config}".encode() in environ.split(b"\0")
        if deployer or (str(control_path_dir).encode() in cmdline and b"[mux]" not in cmdline):
            found.append(f"{proc.name}: {cmdline.decode(errors='replace')[:200]}")
    return found


def test_ctrl_c_while_a_step_runs_ends_the_deploy_cleanly_and_the_next_one_completes(fleet, run):
    t = fleet.add("slow")
    host = fleet.hosts["slow"]
    host.replace_python(SLOW_PYTHON)
    config = deployer_toml(run.path("deployer.toml"), fleet.lab, fleet.settings.source_dir,
                           fleet.settings.control_path_dir)
    request = json.dumps({"agent": "kvmagent", "coordinator_url": fleet.coordinator.agent_url,
                          "admin_token": fleet.admin_token, "api_url": fleet.coordinator.api_url,
                          "targets": [dataclasses.asdict(t)]})
    env = {**os.environ, "HS_DEPLOYER_CONFIG": str(config)}
    p = subprocess.Popen([sys.executable, "-m", "deployer"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env, text=True, start_new_session=True)
    assert p.stdin is not None
    p.stdin.write(request)
    p.stdin.close()
    deadline = time.monotonic() + 180
    while not [e for e in fleet.coordinator.entries if e["uuid"] == t.host_uuid and e["task"] == "install"]:
        assert p.poll() is None and time.monotonic() < deadline, p.stderr.read() if p.stderr else None
        time.sleep(0.1)
    time.sleep(1.5)  # the host makes the venv now
    assert fleet.coordinator.locks
    os.killpg(p.pid, signal.SIGINT)  # Ctrl-C in a terminal: the foreground process group
    p.wait(60)
    stdout, stderr = p.stdout.read(), p.stderr.read()  # type: ignore[union-attr]
    left = started_by(config, fleet.settings.control_path_dir)  # while the host still runs the step
    assert (p.returncode, stdout, stderr.splitlines()[-1:]) == (130, "", [f"deployer: {DEPLOY_INTERRUPTED}"]), stderr
    assert "Traceback" not in stderr
    assert fleet.coordinator.locks == {}
    assert left == []
    after = [e for e in fleet.coordinator.entries if e["uuid"] == t.host_uuid and e["phase"] == "after"]
    assert [(e["task"], e["ok"], e["message"]) for e in after][-1] == ("install", False, INTERRUPTED)

    # the host finishes the step on its own; the next deploy waits for it, then goes on from there
    next_deploy = run_process([sys.executable, "-m", "deployer"], input=request, rcs=(0, 1), timeout=300,
                              env=env)
    result = json.loads(next_deploy.stdout)["slow"]
    assert result["ok"], result
    assert result["tasks"][:1] == ["probe"] and "wait connected" in result["tasks"], result
    hello = fleet.coordinator.hellos[t.host_uuid]
    assert hello["version"] == current_version(fleet.settings) and time.time() - hello["at"] < 3
    assert host.sh("test", "-e", "/opt/hoststack/kvmagent/current/.complete", rcs=(0,)).returncode == 0
