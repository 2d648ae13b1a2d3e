"""The probe reads the host token from the config a deploy wrote, so a redeploy can keep it (no SSH here)."""

from __future__ import annotations

import json

import pytest

from agentkit.proc import run
from deployer import cephagent, kvmagent, render, tasks
from deployer.remote import host
from testbed import hostprogram


@pytest.mark.parametrize("spec", [kvmagent.SPEC, cephagent.SPEC])
def test_probe_returns_the_token_of_the_current_config(tmp_path, spec):
    config = tmp_path / "agent.toml"
    args = {**tasks.probe_args(spec, []), "stamp": str(tmp_path / "stamp.json"), "config": str(config),
            "pidfile": str(tmp_path / "none.pid"), "supervisor": str(tmp_path / "s.sh")}

    def probe() -> dict:
        program = hostprogram.program(host, step_lock=tmp_path / "step.lock")
        p = run(["/usr/bin/python3", "-c", program, "probe"], input=json.dumps(args), timeout=30)
        return json.loads(p.stdout)

    assert probe()["token"] is None  # a fresh host
    config.write_text(render.agent_config(spec, "http://c:8740", "u1", 'tok"en\\1'))
    assert probe()["token"] == 'tok"en\\1'
    config.write_text("# garbled\nhost_token = 42\ntoken = [\n")
    assert probe()["token"] is None
