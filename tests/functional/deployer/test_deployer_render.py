"""deployer.render: config the agent's loader reads back, a unit and a supervisor script that parse."""

from __future__ import annotations

import subprocess
import tomllib

from deployer import render
from deployer.cephagent import SPEC as CEPH
from deployer.kvmagent import SPEC as KVM


def test_config_round_trips_awkward_values():
    token = 'a"b\\c\u00e9\n{{ x }}'
    assert tomllib.loads(render.agent_config(KVM, "http://[fd00::1]:8740", "u-1", token)) == {
        "coordinator_url": "http://[fd00::1]:8740", "host_uuid": "u-1", "host_token": token}


def test_each_agent_gets_its_own_setting_names():
    assert tomllib.loads(render.agent_config(CEPH, "http://c", "u", "t" * 16)) == {"token": "t" * 16}


def test_unit_orders_after_libvirt_and_runs_the_current_venv():
    unit = render.systemd_unit(KVM)
    assert "After=network-online.target libvirtd.service\n" in unit
    assert "ExecStart=/opt/hoststack/kvmagent/current/bin/kvmagent\n" in unit and "Restart=always\n" in unit
    assert "LimitNOFILE=65536\n" in unit  # guests' connections take descriptors; systemd leaves 1,024


def test_the_supervisor_script_raises_the_descriptor_limit_as_the_unit_does():
    line = next(x for x in render.supervisor_script(KVM).splitlines() if x.startswith("ulimit -n"))
    out = subprocess.run(["sh", "-c", f"{line}\nulimit -n; ulimit -Hn"], text=True, capture_output=True, check=False)
    soft, hard = out.stdout.split()
    assert soft == "65536" or soft == hard


def test_supervisor_script_is_valid_sh():
    script = render.supervisor_script(KVM)
    assert subprocess.run(["sh", "-n"], input=script, text=True, check=False).returncode == 0
    assert "/opt/hoststack/kvmagent/current/bin/kvmagent >>/var/log/hoststack/kvmagent.log 2>&1 &" in script
