"""deployer.render: the supervisor script parses as sh (the pure checks are in tests/unit/deployer/test_render.py)."""

from __future__ import annotations

import subprocess

from deployer import render
from deployer.kvmagent import SPEC as KVM


def test_supervisor_script_is_valid_sh():
    script = render.supervisor_script(KVM)
    assert subprocess.run(["sh", "-n"], input=script, text=True, check=False).returncode == 0
    assert "/opt/hoststack/kvmagent/current/bin/kvmagent >>/var/log/hoststack/kvmagent.log 2>&1 &" in script
