"""deployer.render: the supervisor script parses as sh (the pure checks are in tests/unit/deployer/test_render.py)."""

from __future__ import annotations

import subprocess

from deployer import render
from deployer.kvmagent import SPEC as KVM


def test_the_supervisor_script_raises_the_descriptor_limit_as_the_unit_does():
    line = next(x for x in render.supervisor_script(KVM.service).splitlines() if x.startswith("ulimit -n"))
    out = subprocess.run(["sh", "-c", f"{line}\nulimit -n; ulimit -Hn"], text=True, capture_output=True, check=False)
    soft, hard = out.stdout.split()
    assert soft == "65536" or soft == hard


def test_supervisor_script_is_valid_sh():
    script = render.supervisor_script(KVM.service)
    assert subprocess.run(["sh", "-n"], input=script, text=True, check=False).returncode == 0
    assert "/opt/hoststack/kvmagent/current/bin/kvmagent >>/var/log/hoststack/kvmagent.log 2>&1 &" in script
