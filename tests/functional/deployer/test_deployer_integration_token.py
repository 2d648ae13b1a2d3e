"""The probe reads the host token from the config a deploy wrote, so a redeploy can keep it (no SSH here)."""

from __future__ import annotations

import json

import pytest

from agentkit.proc import run
from deployer import cephagent, kvmagent, render, tasks
from deployer.deploy import Target, _Progress, _resolve


@pytest.mark.parametrize("spec", [kvmagent.SPEC, cephagent.SPEC])
def test_probe_returns_the_token_of_the_current_config(tmp_path, spec):
    config = tmp_path / "agent.toml"
    args = {**tasks.probe_args(spec, []), "stamp": str(tmp_path / "stamp.json"), "config": str(config),
            "pidfile": str(tmp_path / "none.pid"), "supervisor": str(tmp_path / "s.sh")}

    def probe() -> dict:
        p = run(["/usr/bin/python3", "-c", tasks.program(), "probe"], input=json.dumps(args), timeout=30)
        return json.loads(p.stdout)

    assert probe()["token"] is None  # a fresh host
    config.write_text(render.agent_config(spec, "http://c:8740", "u1", 'tok"en\\1'))
    assert probe()["token"] == 'tok"en\\1'
    config.write_text("# garbled\nhost_token = 42\ntoken = [\n")
    assert probe()["token"] is None


def test_a_target_without_token_gets_the_coordinators_answer_or_fails_naming_it():
    t = Target(name="kvm1", address="198.18.0.2", host_uuid="u1", host_token=None)
    progress = _Progress([t], None, "/var/tmp/x")
    asked = []

    def tokens(target: Target, found: str | None) -> str:
        asked.append(found)
        if found == "down":
            raise OSError("coordinator: connection refused")
        return found or "new"

    assert _resolve(t, {"token": "kept"}, tokens, progress).host_token == "kept"
    assert _resolve(t, {}, tokens, progress).host_token == "new"
    given = Target(name="kvm1", address="198.18.0.2", host_uuid="u1", host_token="given")
    assert _resolve(given, {"token": "other"}, tokens, progress) is given and asked == ["kept", None]
    assert _resolve(t, {"token": "down"}, tokens, progress) is None
    r = progress.results["kvm1"]
    assert (r.ok, r.task, r.message) == (False, "host token", "kvm1: host token: coordinator: connection refused")
