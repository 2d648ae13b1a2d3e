"""deployer.tasks.plan: a host gets exactly the steps that make a difference."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployer import render, tasks
from deployer.kvmagent import SPEC
from deployer.wheelhouse import Bundle

BUNDLE = Bundle(tar=Path("/cache/wheelhouse-x.tar"), digest="w" * 64, version="1.0")
CONFIG = render.agent_config(SPEC, "http://c:8740", "u1", "t" * 16)
WANT = tasks.Desired(BUNDLE, CONFIG)
SUPERVISED = render.digest(render.supervisor_script(SPEC.service))


def probe(stamp=None, missing=(), systemd=False, running=True) -> dict:
    return {"stamp": stamp or {}, "missing": list(missing), "systemd": systemd, "running": running}


CURRENT = {"wheels": BUNDLE.digest, "config": render.digest(CONFIG), "service": SUPERVISED}


@pytest.mark.parametrize("host, steps", [
    (probe(running=False), ["upload", "install", "config", "service"]),
    (probe(CURRENT), []),
    (probe(CURRENT, running=False), ["service"]),
    (probe(CURRENT, missing=["nftables"]), ["packages"]),
    (probe({**CURRENT, "config": "old"}), ["config", "service"]),
    (probe({**CURRENT, "wheels": "old"}), ["upload", "install", "service"]),
    (probe(CURRENT, systemd=True), ["service"]),  # the host now runs systemd: a unit replaces the script
])
def test_plan_runs_only_what_differs(host, steps):
    assert list(tasks.plan(SPEC, WANT, host)) == steps


def test_plan_arguments_carry_what_the_host_needs():
    p = tasks.plan(SPEC, WANT, probe(missing=["qemu-utils"], systemd=True, running=False))
    assert p["packages"] == {"packages": ["qemu-utils"], "refresh": True}
    assert p["install"]["tar"] == SPEC.upload_path(BUNDLE.digest) and p["install"]["base"] == "/opt/hoststack/kvmagent"
    assert p["config"]["content"] == CONFIG and p["config"]["path"] == "/etc/hoststack/kvmagent.toml"
    assert p["service"]["systemd"] and p["service"]["content"] == render.systemd_unit(SPEC.service)


def test_steps_keep_their_order_and_upload_the_bundle():
    names = [s.name for s in tasks.steps(SPEC, BUNDLE)]
    assert names == ["packages", "upload", "install", "config", "service"]
    upload = tasks.steps(SPEC, BUNDLE)[1]
    assert (upload.src, upload.dest) == (str(BUNDLE.tar), SPEC.upload_path(BUNDLE.digest))
