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

import pytest

from agentkit.proc import run as run_process
from deployer.deploy import current_version
from deployer.engine import DEPLOY_INTERRUPTED, INTERRUPTED
from testbed.deploylab import SLOW_VENV, deploy_processes, deployer_toml

pytestmark = pytest.mark.real


def test_ctrl_c_while_a_step_runs_ends_the_deploy_cleanly_and_the_next_one_completes(fleet, run):
    t = fleet.add("slow")
    host = fleet.hosts["slow"]
    host.replace_python(SLOW_VENV.format(delay=6))
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
    left = deploy_processes(config, fleet.settings.control_path_dir)  # while the host still runs the step
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
