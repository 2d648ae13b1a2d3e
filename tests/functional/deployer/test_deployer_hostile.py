"""A deploy target is not trusted: a host that answers a step with megabytes fails that step, and the controller
(the coordinator's `python -m deployer`) reads no more of it than a step's answer may be."""

from __future__ import annotations

import dataclasses
import json
import sys

import pytest

from agentkit.proc import run as run_process
from deployer.connection_plugins.hoststack_ssh import ANSWER_LIMIT
from testbed.deploylab import deployer_toml

pytestmark = pytest.mark.real
# python3 as a hostile host has it: whatever a step asks, `size` bytes of answer
HOSTILE_PYTHON = "#!/bin/sh\nyes 'a hostile answer' | head -c {size}\n"
# `python -m deployer` as the coordinator runs it, then the peak RSS (KiB) of it and of every process it waited for
# (ansible's workers, their ssh): the last line
MEASURED = ("import resource, subprocess, sys\n"
            "subprocess.run([sys.executable, '-m', 'deployer'])\n"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")


def hostile(fleet, name: str, size: int) -> None:
    """A host whose python3 answers every step with `size` bytes."""
    fleet.add(name)
    fleet.hosts[name].replace_python(HOSTILE_PYTHON.format(size=size))


def deploy_measured(fleet, run, name: str) -> tuple[dict, int]:
    """The result of deploying to `name` in a child process, and that child's peak RSS with its workers' (KiB)."""
    request = {"agent": "kvmagent", "coordinator_url": fleet.coordinator.agent_url, "admin_token": fleet.admin_token,
               "api_url": fleet.coordinator.api_url, "targets": [dataclasses.asdict(fleet.targets[name])]}
    config = deployer_toml(run.path("deployer.toml"), fleet.lab, fleet.settings.source_dir,
                           fleet.settings.control_path_dir)
    p = run_process(["env", f"HS_DEPLOYER_CONFIG={config}", sys.executable, "-c", MEASURED],
                    input=json.dumps(request), timeout=300)
    out, peak = p.stdout.rstrip("\n").rsplit("\n", 1)
    return json.loads(out)[name], int(peak)


def test_a_host_answering_with_megabytes_fails_its_step_and_the_controller_reads_no_more_than_a_step_may_say(
        fleet, run):
    hostile(fleet, "terse", 1000)  # the same failure with a short answer: what the controller needs anyway
    hostile(fleet, "flood", 48 << 20)
    terse, terse_peak = deploy_measured(fleet, run, "terse")
    assert (terse["ok"], terse["task"]) == (False, "probe"), terse
    flood, flood_peak = deploy_measured(fleet, run, "flood")
    # before, the controller held the 48 MiB some 13 times over (700 MB more: ansible's worker, then the deployer)
    assert flood_peak - terse_peak < 16 << 10, (terse_peak, flood_peak)
    assert (flood["ok"], flood["tasks"], flood["message"]) == (
        False, ["probe"], f"flood: probe: the host's answer is over {ANSWER_LIMIT} bytes; the rest was not read")
    uuid = fleet.targets["flood"].host_uuid
    failed = [e for e in fleet.coordinator.entries if e["uuid"] == uuid and e["ok"] is False]
    assert [e["message"] for e in failed] == [flood["message"].removeprefix("flood: probe: ")]
